internal import Foundation
internal import Logging
internal import OrreryPlacement
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// Each agent line's RTT, as the replica holding it measures it (a `LinePing` the agent answers at once with a
/// `LinePong`), smoothed and recorded beside the line's holder (`agent_lines.rtt_micros`) so that every replica reads
/// it. The ensemble network's path between two devices is the sum of their lines' RTTs; `GetDeployment` reports it
/// beside placement's device-to-device estimate for each latency edge.
final class LineLatency: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// How often a line is pinged.
    let interval: Duration
    private let sent = Mutex<[String: (nonce: UInt64, at: ContinuousClock.Instant)]>([:])
    /// Smoothed RTTs of the lines held here, in milliseconds.
    private let smoothed = Mutex<[String: Double]>([:])
    /// What was last recorded for each line held here: a line whose RTT holds steady costs no write.
    private let recorded = Mutex<[String: Double]>([:])

    init(client: PostgresClient, logger: Logger, interval: Duration = .seconds(10)) {
        self.client = client
        self.logger = logger
        self.interval = interval
    }

    /// Pings the device's line now and every `interval` until cancelled (the line closed).
    func measure(device: String, send: @Sendable (Orrery_Orchestrator_V1_OrchestratorMessage) -> Void) async {
        defer { forget(device) }
        while !Task.isCancelled {
            let nonce = UInt64.random(in: 1...UInt64.max)
            sent.withLock { $0[device] = (nonce, ContinuousClock.now) }
            send(.with { $0.linePing = .with { $0.nonce = nonce } })
            try? await Task.sleep(for: interval)
        }
    }

    /// The device answered a ping: its line's RTT, smoothed (an answer to an older ping, or to none, counts not).
    func pong(_ nonce: UInt64, from device: String) async {
        guard
            let at = sent.withLock({ table -> ContinuousClock.Instant? in
                guard let entry = table[device], entry.nonce == nonce else { return nil }
                table[device] = nil
                return entry.at
            })
        else { return }
        let elapsed = ContinuousClock.now - at
        let sample = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let rtt = smoothed.withLock { table -> Double in
            let next = table[device].map { 0.75 * $0 + 0.25 * sample } ?? sample
            table[device] = next
            return next
        }
        if let last = recorded.withLock({ $0[device] }), abs(last - rtt) <= max(0.1, 0.1 * last) { return }
        do {
            try await client.query(
                "UPDATE agent_lines SET rtt_micros = \(Int64(rtt * 1000)) WHERE device_did = \(device)",
                logger: logger)
            recorded.withLock { $0[device] = rtt }
        } catch {
            logger.debug("cannot record a line's RTT", metadata: ["device": "\(device)", "error": "\(error)"])
        }
    }

    private func forget(_ device: String) {
        sent.withLock { $0[device] = nil }
        smoothed.withLock { $0[device] = nil }
        recorded.withLock { $0[device] = nil }
    }

    /// The line RTTs of `devices` in milliseconds: as recorded, those of lines held here as measured here.
    func rtts(of devices: [String]) async -> [String: Double] {
        var found: [String: Double] = [:]
        if !devices.isEmpty {
            do {
                let rows = try await client.query(
                    """
                    SELECT device_did, rtt_micros FROM agent_lines
                    WHERE device_did = ANY(\(devices)) AND rtt_micros IS NOT NULL
                    """, logger: logger)
                for try await (device, micros) in rows.decode((String, Int64).self) {
                    found[device] = Double(micros) / 1000
                }
            } catch {
                logger.debug("cannot read line RTTs", metadata: ["error": "\(error)"])
            }
        }
        let local = smoothed.withLock { $0 }
        for device in devices { if let rtt = local[device] { found[device] = rtt } }
        return found
    }

    /// How often a watch looks at a running deployment's latency edges.
    static let watchInterval = Duration.seconds(10)

    /// Whether `edges` differ from `earlier` enough to tell a watcher: a value appeared or went, or moved by over
    /// 10 % and 0.5 ms.
    static func changed(
        _ edges: [Orrery_Orchestrator_V1_EdgeLatency], since earlier: [Orrery_Orchestrator_V1_EdgeLatency]
    ) -> Bool {
        guard edges.count == earlier.count else { return true }
        func moved(_ a: Double?, _ b: Double?) -> Bool {
            guard let a, let b else { return (a == nil) != (b == nil) }
            return abs(a - b) > 0.5 && abs(a - b) > 0.1 * max(a, b)
        }
        return zip(edges, earlier).contains { now, before in
            now.pairs != before.pairs
                || moved(
                    now.hasPathRttMs ? now.pathRttMs : nil, before.hasPathRttMs ? before.pathRttMs : nil)
                || moved(
                    now.hasPlacementRttMs ? now.placementRttMs : nil,
                    before.hasPlacementRttMs ? before.placementRttMs : nil)
        }
    }

    /// The edges in one line: "web → cache: devices 0.4 ms, path 1.3 ms (at most 5 ms)".
    static func summary(_ edges: [Orrery_Orchestrator_V1_EdgeLatency]) -> String {
        edges.map { edge in
            let estimate = edge.hasPlacementRttMs ? "\((edge.placementRttMs * 10).rounded() / 10) ms" : "unknown"
            let path = edge.hasPathRttMs ? "\((edge.pathRttMs * 10).rounded() / 10) ms" : "not measured"
            return "\(edge.from) → \(edge.to): devices \(estimate), path \(path) (at most \(edge.maxRttMs) ms)"
        }.joined(separator: "; ")
    }

    /// Each latency edge of `deployment` as its running replicas stand: placement's estimate and the measured
    /// ensemble path, the worst over the running replica pairs.
    static func edges(
        of deployment: Orrery_Orchestrator_V1_Deployment, fleet: PlacementSnapshot, lineRTTs: [String: Double]
    ) -> [Orrery_Orchestrator_V1_EdgeLatency] {
        let running = deployment.assignments.filter { $0.run.state == .running }
        return deployment.spec.edges.map { edge in
            var latency = Orrery_Orchestrator_V1_EdgeLatency.with {
                $0.from = edge.from
                $0.to = edge.to
                $0.maxRttMs = edge.maxRttMs
            }
            let pairs = running.filter { $0.allocation == edge.from }.flatMap { from in
                running.filter { $0.allocation == edge.to }.map { (from.deviceDid, $0.deviceDid) }
            }
            latency.pairs = UInt32(pairs.count)
            guard !pairs.isEmpty else { return latency }
            var estimates: [Double] = []
            var paths: [Double] = []
            for (from, to) in pairs {
                if let a = fleet.index(of: from), let b = fleet.index(of: to), let rtt = fleet.rtt(between: a, and: b) {
                    estimates.append(rtt)
                }
                // A partner on the same device is reached the same way: out on the line and back on it.
                if let a = lineRTTs[from], let b = lineRTTs[to] { paths.append(a + b) }
            }
            if estimates.count == pairs.count, let worst = estimates.max() { latency.placementRttMs = worst }
            if paths.count == pairs.count, let worst = paths.max() { latency.pathRttMs = worst }
            return latency
        }
    }
}
