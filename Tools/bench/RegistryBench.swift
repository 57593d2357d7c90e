import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf

/// Load on a running registry: many devices join, heartbeat, are queried and watched.
struct RegistryBench {
    let address: ServiceAddress
    let operatorKey: SigningKey
    let devices: Int
    let seconds: Double

    struct Device {
        let key: SigningKey
        let signer: InvocationSigner
    }

    struct Results {
        var joinRate: Double = 0
        var heartbeatRate: Double = 0
        var heartbeatStreams = 0
        var queryP50: Duration = .zero
        var queryP99: Duration = .zero
        var watchers = 0
        var watchChanges = 0
        var watchEvents = 0
        var watchDeliveryRate: Double = 0
    }

    func run() async throws -> Results {
        var results = Results()
        let registryDID = try await ServiceProbe.withClient(address) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let owner = SigningKey()
        let expiry = Int64(Date().timeIntervalSince1970) + 86_400
        let ownerGrant = Delegation.issue(
            by: operatorKey, to: owner.did, subject: operatorKey.did, command: try Command("/orrery/registry"),
            expiration: expiry)
        let fleet: [Device] = try (0..<devices).map { _ in
            let key = SigningKey()
            let grant = Delegation.issue(
                by: owner, to: key.did, subject: operatorKey.did, command: try Command("/orrery/registry"),
                expiration: expiry)
            return Device(
                key: key,
                signer: InvocationSigner(
                    key: key, subject: operatorKey.did, audience: registryDID, proofs: [ownerGrant, grant],
                    catalog: catalog))
        }

        // Joins over 8 connections, each signing as the device it is joining.
        let clock = ContinuousClock()
        let joinStart = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<8 {
                let lane = next
                next += 1
                group.addTask { try await join(fleet, lane: lane, lanes: 8) }
            }
            try await group.waitForAll()
        }
        results.joinRate = Double(devices) / seconds(of: clock.now - joinStart)
        Self.progress("joined \(devices) devices at \(Int(results.joinRate))/s")

        // Sustained heartbeats: 256 devices stream as fast as the registry accepts for the measured time.
        results.heartbeatStreams = min(64, devices)
        let barrier = EventCounter()
        let streams = results.heartbeatStreams
        let heartbeatStart = clock.now
        let accepted = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for device in fleet.prefix(streams) {
                group.addTask { try await heartbeats(device, barrier: barrier, streams: streams) }
            }
            return try await group.reduce(0, +)
        }
        // What the registry took in, over the time until every stream's summary came back.
        results.heartbeatRate = Double(accepted) / seconds(of: clock.now - heartbeatStart)
        Self.progress("heartbeats: \(Int(results.heartbeatRate))/s")

        // Filtered queries: one client, sequential, a mix of filters.
        var latencies: [Duration] = []
        try await withClient(fleet[0]) { registry in
            let filters: [Orrery_Registry_V1_QueryDevicesRequest] = [
                .with {
                    $0.minCpuCores = 8; $0.pageSize = 100
                },
                .with {
                    $0.countries = ["DE"]; $0.minGpuCount = 1; $0.pageSize = 100
                },
                .with {
                    $0.labels = ["tier": "datacenter"]; $0.maxPricePerCoreHour = 30; $0.pageSize = 100
                },
                .with {
                    $0.gpuModel = "NVIDIA H100"; $0.minRamBytes = 64 << 30; $0.pageSize = 100
                },
            ]
            let end = clock.now + .milliseconds(Int(seconds * 1000))
            var index = 0
            while clock.now < end {
                let start = clock.now
                _ = try await registry.queryDevices(filters[index % filters.count])
                latencies.append(clock.now - start)
                index += 1
            }
        }
        latencies.sort()
        results.queryP50 = latencies[latencies.count / 2]
        results.queryP99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
        Self.progress("queries: \(latencies.count)")

        // Watch fan-out: 32 watchers follow the change log while 200 devices re-join.
        results.watchers = min(32, devices)
        let changes = min(200, devices)
        results.watchChanges = changes
        let counter = EventCounter()
        let watchers = Array(fleet.suffix(results.watchers))
        let watchTask = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for watcher in watchers {
                    group.addTask {
                        try await withClient(watcher) { registry in
                            try await registry.watchDevices(.with { $0.afterRevision = 0 }) { response in
                                var snapshotDone = false
                                for try await event in response.messages {
                                    if case .snapshotComplete = event.event {
                                        snapshotDone = true; counter.ready(); continue
                                    }
                                    if snapshotDone { counter.add() }
                                }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        while counter.readyCount < results.watchers { try await Task.sleep(for: .milliseconds(20)) }
        let fanStart = clock.now
        try await join(Array(fleet.prefix(changes)), lane: 0, lanes: 1)
        let expected = changes * results.watchers
        while counter.count < expected && clock.now - fanStart < .seconds(60) {
            try await Task.sleep(for: .milliseconds(5))
        }
        results.watchEvents = counter.count
        results.watchDeliveryRate = Double(counter.count) / seconds(of: clock.now - fanStart)
        watchTask.cancel()
        return results
    }

    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("[registry bench] \(line)\n".utf8))
    }

    private func seconds(of duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private func withClient<Result: Sendable>(
        _ device: Device,
        _ body: (Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try .http2NIOPosix(target: address.target, transportSecurity: .plaintext),
            interceptors: [device.signer]
        ) { client in
            try await body(Orrery_Registry_V1_Registry.Client(wrapping: client))
        }
    }

    private func capabilities(_ index: Int) -> Orrery_Registry_V1_DeviceCapabilities {
        .with {
            $0.architecture = index % 5 == 0 ? "aarch64" : "x86_64"
            $0.cpuModel = "bench"
            $0.cpuCores = UInt32(4 << (index % 4))
            $0.ramBytes = UInt64(16 << (index % 3)) << 30
            $0.diskBytes = 500 << 30
            if index % 3 == 0 {
                $0.gpus = [
                    .with {
                        $0.vendor = "NVIDIA"; $0.model = index % 2 == 0 ? "NVIDIA H100" : "NVIDIA L4";
                        $0.vramBytes = 80 << 30
                    }
                ]
            }
            $0.location = .with {
                $0.country = ["DE", "FR", "NL", "US"][index % 4]; $0.region = "r\(index % 10)"
            }
            $0.prices = .with { $0.perCoreHour = UInt64(10 + index % 50) }
            $0.labels = ["tier": index % 2 == 0 ? "datacenter" : "edge"]
        }
    }

    /// Joins every `lanes`-th device from `lane` on, over one connection whose signer follows the device joining.
    private func join(_ fleet: [Device], lane: Int, lanes: Int) async throws {
        let signer = LaneSigner()
        try await withGRPCClient(
            transport: try .http2NIOPosix(target: address.target, transportSecurity: .plaintext), interceptors: [signer]
        ) { client in
            let registry = Orrery_Registry_V1_Registry.Client(wrapping: client)
            var index = lane
            while index < fleet.count {
                let device = fleet[index]
                signer.use(device.signer)
                var challenge = try await registry.beginJoin(.with { $0.deviceDid = device.key.did.string }).challenge
                SignedMessage.countersign(&challenge, with: device.key)
                _ = try await registry.completeJoin(
                    .with {
                        $0.challenge = challenge
                        $0.capabilities = capabilities(index)
                        $0.idempotencyKey = UUID().uuidString
                    })
                index += lanes
            }
        }
    }

    /// One device's stream: opens, waits until every stream is open, then offers 16 heartbeats every 20 ms
    /// (800/s a stream, 51,200/s over 64 streams) — paced, so the driver measures the registry, not its own buffers.
    private func heartbeats(_ device: Device, barrier: EventCounter, streams: Int) async throws -> UInt64 {
        let beat = Orrery_Registry_V1_Heartbeat.with {
            $0.deviceDid = device.key.did.string; $0.freeCpuMillicores = 1000
        }
        let duration = Duration.milliseconds(Int(seconds * 1000))
        return try await withClient(device) { registry in
            try await registry.heartbeats(
                request: StreamingClientRequest { writer in
                    try await writer.write(beat)
                    barrier.ready()
                    while barrier.readyCount < streams { try await Task.sleep(for: .milliseconds(5)) }
                    let end = ContinuousClock.now + duration
                    var next = ContinuousClock.now
                    while ContinuousClock.now < end {
                        for _ in 0..<16 { try await writer.write(beat) }
                        next += .milliseconds(20)
                        try await Task.sleep(until: next)
                    }
                }
            ).accepted
        }
    }
}

/// Counts watch events across tasks.
final class EventCounter: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var events = 0
    private var readyWatchers = 0

    func add() { lock.withLock { events += 1 } }
    func ready() { lock.withLock { readyWatchers += 1 } }
    var count: Int { lock.withLock { events } }
    var readyCount: Int { lock.withLock { readyWatchers } }
}

/// A client interceptor that signs as whichever device a lane is working for (the lane's calls are sequential).
final class LaneSigner: ClientInterceptor, @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var current: InvocationSigner?

    func use(_ signer: InvocationSigner) { lock.withLock { current = signer } }

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>,
        context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        guard let signer = lock.withLock({ current }) else { return try await next(request, context) }
        return try await signer.intercept(request: request, context: context, next: next)
    }
}
