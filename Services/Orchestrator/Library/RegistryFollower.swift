internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryPlacement
internal import OrreryProto
internal import OrreryRuntime
internal import SwiftProtobuf

/// Keeps a `FleetView` current from the registry: its resumable device watch, and its RTT samples polled every few
/// seconds and fitted into Vivaldi coordinates. Reconnects with exponential backoff and jitter.
struct RegistryFollower {
    let address: ServiceAddress
    let environment: ServiceEnvironment
    let fleet: FleetView
    let outbox: ReputationOutbox
    /// Called with each device change after the fleet view took it (what ran on a lost device moves at once; a
    /// device coming online may be a better place for what runs elsewhere).
    let changed: @Sendable (Orrery_Registry_V1_DeviceChange) async -> Void
    /// How often RTT samples are read.
    var samplePollInterval: Duration = .seconds(2)

    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await retrying("device watch") { try await followDevices() } }
            group.addTask { await retrying("rtt samples") { try await followSamples() } }
            group.addTask { await retrying("reputation outcomes") { try await sendOutcomes() } }
        }
    }

    private func retrying(_ what: String, _ body: () async throws -> Void) async {
        await Reconnecting.run(onFailure: { error in
            environment.logger.warning(
                "registry \(what) interrupted; retrying", metadata: ["registry": "\(address)", "error": "\(error)"])
        }) {
            try await body()
        }
    }

    private func withRegistry<Result: Sendable>(
        _ body: (Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        let trustRoots = environment.settings.tlsTrustRoots
        let registryDID = try await ServiceProbe.withClient(address, trustRoots: trustRoots) { client in
            try DID(try await ServiceProbe.info(client).did)
        }
        let signer = InvocationSigner(
            key: environment.key, subject: environment.operatorDID, audience: registryDID,
            proofs: environment.proofs, catalog: environment.catalog)
        return try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots)),
            interceptors: [signer]
        ) { client in
            try await body(Orrery_Registry_V1_Registry.Client(wrapping: client))
        }
    }

    private func followDevices() async throws {
        try await withRegistry { registry in
            let request = Orrery_Registry_V1_WatchDevicesRequest.with { $0.afterRevision = fleet.revision }
            environment.logger.info(
                "following devices", metadata: ["registry": "\(address)", "after": "\(request.afterRevision)"])
            try await registry.watchDevices(request) { response in
                for try await event in response.messages {
                    switch event.event {
                    case .change(let change):
                        fleet.apply(change)
                        await changed(change)
                    case .snapshotComplete(let revision):
                        fleet.markSynced(revision: revision)
                        environment.logger.info(
                            "device snapshot complete",
                            metadata: ["devices": "\(fleet.deviceCount)", "revision": "\(revision)"])
                    case nil: break
                    }
                }
            }
        }
    }

    /// Delivers recorded outcomes to the registry's reputation counters.
    private func sendOutcomes() async throws {
        try await withRegistry { registry in
            while !Task.isCancelled {
                for request in try await outbox.unsent() {
                    _ = try await registry.recordOutcome(request)
                    try await outbox.markSent(request.idempotencyKey)
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// A sample's pair (device, landmark) as one key.
    private static func pairKey(_ device: String, _ landmark: String) -> String { "\(device)\u{0}\(landmark)" }

    private func followSamples() async throws {
        try await withRegistry { registry in
            // Every sample known, in a stable order (sorted again only when a pair is new), and each pair's place.
            var all: [RTTSample] = []
            var places: [String: Int] = [:]
            var reorder = false
            var fitter = CoordinateFitter()
            var since: Date?
            while !Task.isCancelled {
                var pageToken = ""
                var newest = since
                var changed = false
                repeat {
                    let page = try await registry.listRttSamples(
                        .with {
                            if let since { $0.measuredAfter = Google_Protobuf_Timestamp(date: since) }
                            $0.pageToken = pageToken
                        })
                    for sample in page.samples {
                        let key = Self.pairKey(sample.deviceDid, sample.landmark)
                        if let place = places[key] {
                            if all[place].rttMilliseconds != sample.rttMs {
                                all[place].rttMilliseconds = sample.rttMs
                                changed = true
                            }
                        } else {
                            places[key] = all.count
                            all.append(
                                RTTSample(from: sample.deviceDid, to: sample.landmark, rttMilliseconds: sample.rttMs))
                            changed = true
                            reorder = true
                        }
                        // A timestamp out of protobuf's range (a misbehaving registry) is skipped, never trusted.
                        if let measured = sample.measuredAt.validDate { newest = max(newest ?? measured, measured) }
                    }
                    pageToken = page.nextPageToken
                } while !pageToken.isEmpty
                since = newest
                if changed {
                    if reorder {
                        all.sort { ($0.from, $0.to) < ($1.from, $1.to) }
                        places = Dictionary(
                            uniqueKeysWithValues: all.enumerated().map { (Self.pairKey($1.from, $1.to), $0) })
                        reorder = false
                    }
                    // In full now and then (at most ~2 million updates), a few warm rounds otherwise.
                    let full = fitter.update(all, now: .now)
                    fleet.setCoordinates(fitter.coordinates)
                    if full {
                        environment.logger.info("network coordinates fitted", metadata: ["samples": "\(all.count)"])
                    }
                }
                try await Task.sleep(for: samplePollInterval)
            }
        }
    }
}
