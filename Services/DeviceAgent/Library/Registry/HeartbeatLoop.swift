#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import GRPCCore
internal import Logging
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// Keeps the device joined and live: joins (re-join updates the same device), then streams a heartbeat every
/// interval with the host's free resources, and reports round-trip times to the registry now and then. When the
/// stream breaks (the registry restarts, the network drops) it reconnects with exponential backoff and jitter,
/// capped at one interval.
struct HeartbeatLoop {
    let connection: RegistryConnection
    let capabilities: Orrery_Registry_V1_DeviceCapabilities
    let interval: Duration
    let workDirectory: String
    /// Registry and orchestrator replicas to measure round trips to, besides the registry itself.
    let landmarks: [String]
    let logger: Logger

    func run() async {
        var backoff: Duration = .milliseconds(100)
        var joined = false
        while !Task.isCancelled {
            do {
                if !joined {
                    let device = try await connection.join(capabilities: capabilities)
                    joined = true
                    logger.info(
                        "joined",
                        metadata: [
                            "device": "\(device.did)", "owner": "\(device.ownerDid)",
                            "registry": "\(connection.address)",
                        ])
                }
                try await stream()
                backoff = .milliseconds(100)
            } catch is CancellationError {
                return
            } catch let error as RPCError where error.code == .notFound || error.code == .failedPrecondition {
                logger.warning(
                    "the registry does not know this device as joined; joining again",
                    metadata: ["error": "\(error.message)"])
                joined = false
            } catch {
                logger.warning(
                    "registry connection lost; reconnecting", metadata: ["error": "\(error)", "backoff": "\(backoff)"])
            }
            // Never wait longer than one interval: the registry marks a device suspect after 2 and offline after 3.
            try? await Task.sleep(for: min(backoff * Double.random(in: 0.5...1.5), interval))
            backoff = min(backoff * 2, .seconds(10))
        }
    }

    private func stream() async throws {
        try await connection.withRegistry { registry in
            _ = try await registry.heartbeats(
                request: StreamingClientRequest { writer in
                    var beats = 0
                    while !Task.isCancelled {
                        try await writer.write(heartbeat())
                        if beats % 12 == 0 { await reportRoundTrip(registry) }
                        beats += 1
                        try await Task.sleep(for: interval)
                    }
                })
        }
    }

    /// The host's free resources now (no workloads run yet, so all of what is offered, bounded by what is free).
    private func heartbeat() -> Orrery_Registry_V1_Heartbeat {
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        var beat = Orrery_Registry_V1_Heartbeat()
        beat.deviceDid = connection.key.did.string
        beat.freeCpuMillicores = capabilities.cpuCores * 1000
        beat.freeRamBytes = min(capabilities.ramBytes, MemInfo.availableBytes(meminfo) ?? capabilities.ramBytes)
        beat.freeDiskBytes = min(capabilities.diskBytes, DiskSpace.of(workDirectory).free)
        beat.freeGpus = UInt32(capabilities.gpus.count)
        return beat
    }

    /// Times an `Info` call to the registry (over the open stream's connection) and a health check to each other
    /// landmark, and reports the round trips as RTT samples for network coordinates.
    private func reportRoundTrip(_ registry: Orrery_Registry_V1_Registry.Client<some ClientTransport>) async {
        func milliseconds(since start: ContinuousClock.Instant) -> Double {
            let elapsed = (ContinuousClock.now - start).components
            return max(Double(elapsed.seconds) * 1000 + Double(elapsed.attoseconds) / 1e15, 0.001)
        }
        var samples: [Orrery_Registry_V1_RttSample] = []
        let start = ContinuousClock.now
        if (try? await registry.info(Orrery_Common_V1_InfoRequest())) != nil {
            let rtt = milliseconds(since: start)
            samples.append(
                .with {
                    $0.landmark = connection.address; $0.rttMs = rtt
                })
        }
        for landmark in landmarks where landmark != connection.address {
            guard let address = ServiceAddress(landmark) else { continue }
            // The first call opens the connection; the second one is the round trip.
            let rtt: Double? = try? await ServiceProbe.withClient(address, trustRoots: connection.trustRoots) {
                client in
                _ = try await ServiceProbe.health(client)
                let start = ContinuousClock.now
                _ = try await ServiceProbe.health(client)
                return milliseconds(since: start)
            }
            if let rtt {
                samples.append(
                    .with {
                        $0.landmark = landmark; $0.rttMs = rtt
                    })
            }
        }
        guard !samples.isEmpty else { return }
        do {
            _ = try await registry.reportRtt(
                .with {
                    $0.deviceDid = connection.key.did.string
                    $0.samples = samples
                    $0.idempotencyKey = UUID().uuidString
                })
        } catch {
            // A missed report is retried with the next one; heartbeats go on.
            logger.warning("RTT report refused", metadata: ["error": "\(error)"])
        }
    }
}
