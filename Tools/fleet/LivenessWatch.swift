import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf
import Synchronization

/// Follows the registry's change log (as the operator) and judges each status change of a fleet device: a
/// `suspect` or `offline` for a device that was heartbeating is false; for one made to fail, how long the registry
/// took to notice is what counts.
final class LivenessWatch: Sendable {
    let failures = FailureBook()
    private let devices: [String: Int]
    private let tally = Mutex(Tally())
    private let measuring = Atomic(false)
    private let watcher = Mutex<Task<Void, Never>?>(nil)
    /// The last change-log revision seen: a watch started again resumes after it.
    private let revision = Mutex<Int64>(0)
    /// A returned device's grace: until its first heartbeat reaches the registry, a late status change is not false.
    private let grace: Duration

    struct Tally {
        var falseSuspects: [String] = []
        var falseOffline: [String] = []
        var suspectAfterFailure: [Double] = []
        var offlineAfterFailure: [Double] = []
        var statusChanges = 0
        var watchRestarts = 0
    }

    private init(devices: [String: Int], grace: Duration) {
        self.devices = devices
        self.grace = grace
    }

    static func start(
        registry: ServiceAddress, operatorKey: SigningKey, trustRoots: String?, fleet: [VirtualDevice],
        heartbeatInterval: Duration
    ) async throws -> LivenessWatch {
        let watch = LivenessWatch(
            devices: Dictionary(uniqueKeysWithValues: fleet.map { ($0.did, $0.member.index) }),
            grace: heartbeatInterval * 3)
        let audience = try await ServiceProbe.withClient(registry, trustRoots: trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: operatorKey, subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog)
        let task = Task {
            while !Task.isCancelled {
                do {
                    try await withGRPCClient(
                        transport: try .http2NIOPosix(
                            target: registry.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots)),
                        interceptors: [signer]
                    ) { client in
                        let registry = Orrery_Registry_V1_Registry.Client(wrapping: client)
                        let after = watch.revision.withLock { $0 }
                        try await registry.watchDevices(.with { $0.afterRevision = after }) { response in
                            for try await event in response.messages {
                                switch event.event {
                                case .snapshotComplete(let revision): watch.revision.withLock { $0 = revision }
                                case .change(let change):
                                    if change.kind != .snapshot {
                                        watch.revision.withLock { $0 = max($0, change.revision) }
                                        watch.observe(change)
                                    }
                                case nil: break
                                }
                            }
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    watch.tally.withLock { $0.watchRestarts += 1 }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
        watch.watcher.withLock { $0 = task }
        return watch
    }

    /// From now on, status changes count.
    func beginMeasuring() { measuring.store(true, ordering: .relaxed) }

    func stop() { watcher.withLock { $0?.cancel() } }

    private func observe(_ change: Orrery_Registry_V1_DeviceChange) {
        guard change.kind == .status, let index = devices[change.device.did] else { return }
        let status = change.device.status
        guard status == .suspect || status == .offline else { return }
        let now = ContinuousClock.now
        let failure = failures.failure(of: index, at: now, grace: grace)
        tally.withLock { tally in
            tally.statusChanges += 1
            if let failure {
                let seconds = FleetSimulation.seconds(now - failure.at)
                if status == .suspect {
                    tally.suspectAfterFailure.append(seconds)
                } else {
                    tally.offlineAfterFailure.append(seconds)
                }
            } else if measuring.load(ordering: .relaxed) {
                if status == .suspect {
                    tally.falseSuspects.append(change.device.did)
                } else {
                    tally.falseOffline.append(change.device.did)
                }
            }
        }
    }

    var summary: String {
        tally.withLock {
            "false suspect \($0.falseSuspects.count), false offline \($0.falseOffline.count); failed devices seen suspect \($0.suspectAfterFailure.count), offline \($0.offlineAfterFailure.count)"
        }
    }

    func report() -> [String: Any] {
        tally.withLock { tally in
            func spread(_ values: [Double]) -> [String: Double] {
                let sorted = values.sorted()
                guard !sorted.isEmpty else { return [:] }
                return [
                    "p50": sorted[sorted.count / 2], "p99": sorted[min(sorted.count - 1, sorted.count * 99 / 100)],
                    "max": sorted[sorted.count - 1],
                ]
            }
            return [
                "false_suspects": tally.falseSuspects.count, "false_offline": tally.falseOffline.count,
                "false_suspect_devices": Array(tally.falseSuspects.prefix(20)),
                "failed_seen_suspect": tally.suspectAfterFailure.count,
                "failed_seen_offline": tally.offlineAfterFailure.count,
                "seconds_to_suspect": spread(tally.suspectAfterFailure),
                "seconds_to_offline": spread(tally.offlineAfterFailure),
                "watch_restarts": tally.watchRestarts,
            ]
        }
    }
}
