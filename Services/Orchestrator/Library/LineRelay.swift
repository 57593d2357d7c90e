internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization
internal import OrreryRuntimeCore

/// Messages for a device whose agent line another orchestrator replica holds — actor mail, grants, checkpoint
/// requests. `send` writes to the line when this replica holds it; otherwise the message becomes a row in
/// `line_relay` (device, message, expiry), announced with NOTIFY, and the replica holding that device's line takes its
/// rows (oldest first, `FOR UPDATE SKIP LOCKED`, deleted as they are taken) and writes them on. Replicas look again
/// every second and whenever a line opens, so a missed notification only delays. Rows for a device no replica holds
/// expire: what they carry is either resent by its sender (mail is at-least-once) or sent again when it matters
/// (grants, on every actor's start).
final class LineRelay: Sendable {
    let client: PostgresClient
    let hub: AgentHub
    let logger: Logger
    /// The longest a relayed message waits for its device's line.
    static let longestWait: TimeInterval = 120
    /// Rows taken per query.
    static let batch = 500
    static let channel = "orrery_line_relay"
    private let wakes = AsyncStream<String?>.makeStream(bufferingPolicy: .bufferingNewest(64))
    private let counts = Mutex((relayed: 0, delivered: 0, expired: 0))

    init(client: PostgresClient, hub: AgentHub, logger: Logger) {
        self.client = client
        self.hub = hub
        self.logger = logger
    }

    /// Sends `message` to the device: on its line here, else through the relay, waiting until `until` at most
    /// (and `longestWait`). A message that cannot be relayed is dropped with a warning (its sender's retries or the
    /// next grant cover it).
    func send(_ message: Orrery_Orchestrator_V1_OrchestratorMessage, to device: String, until: Date? = nil) async {
        if hub.holds(device) {
            hub.send(message, to: device)
            return
        }
        let latest = Date().addingTimeInterval(Self.longestWait)
        let expiry = min(until ?? latest, latest)
        guard expiry > Date() else { return }
        do {
            let bytes = try message.serializedData()
            try await client.query(
                """
                WITH relayed AS (
                    INSERT INTO line_relay (device_did, message, expires_at)
                    VALUES (\(device), \(bytes), \(expiry)) RETURNING device_did
                )
                SELECT pg_notify(\(Self.channel), device_did) FROM relayed
                """, logger: logger)
            counts.withLock { $0.relayed += 1 }
        } catch {
            logger.warning(
                "a message for another replica's agent line was not relayed",
                metadata: ["device": "\(device)", "error": "\(error)"])
        }
    }

    /// A line opened here: take what waits for it now.
    func lineOpened(_ device: String) { wakes.continuation.yield(device) }

    /// Relayed, delivered here, and dropped as expired — since this process started.
    var totals: (relayed: Int, delivered: Int, expired: Int) { counts.withLock { $0 } }

    /// Takes and writes on every relayed message for lines held here, until cancelled.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await PostgresListener.listen(client: client, channel: Self.channel, logger: logger) { device in
                    self.wakes.continuation.yield(device)
                }
            }
            group.addTask { [self] in
                await PeriodicWork("waking the relay", every: .seconds(1), pausesFirst: true, logger: logger) {
                    self.wakes.continuation.yield(nil)
                }.run()
            }
            group.addTask { [self] in
                var lastPurge = ContinuousClock.now
                for await device in wakes.stream {
                    do {
                        if let device {
                            if hub.holds(device) { try await take(for: [device]) }
                        } else {
                            try await takeForHeldLines()
                        }
                        if ContinuousClock.now - lastPurge > .seconds(5) {
                            lastPurge = ContinuousClock.now
                            try await purgeExpired()
                        }
                    } catch {
                        logger.warning("taking relayed messages failed", metadata: ["error": "\(error)"])
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Takes what waits for any line held here. The waiting messages' devices are read first (few), so that the
    /// query does not carry the DIDs of the thousands of devices whose lines this replica may hold.
    func takeForHeldLines() async throws {
        let waiting = try await client.query(
            "SELECT DISTINCT device_did FROM line_relay WHERE expires_at > now()", logger: logger)
        var held: [String] = []
        for try await device in waiting.decode(String.self) where hub.holds(device) { held.append(device) }
        try await take(for: held)
    }

    /// Takes the relayed messages for `devices` (held here), oldest first, and writes them on their lines.
    func take(for devices: [String]) async throws {
        guard !devices.isEmpty else { return }
        while true {
            let rows = try await client.query(
                """
                DELETE FROM line_relay WHERE id IN (
                    SELECT id FROM line_relay WHERE device_did = ANY(\(devices)::text[]) AND expires_at > now()
                    ORDER BY id LIMIT \(Self.batch) FOR UPDATE SKIP LOCKED
                ) RETURNING id, device_did, message
                """, logger: logger)
            var taken: [(id: Int64, device: String, message: Data)] = []
            for try await row in rows.decode((Int64, String, Data).self) { taken.append(row) }
            for (_, device, bytes) in taken.sorted(by: { $0.id < $1.id }) {
                guard let message = try? Orrery_Orchestrator_V1_OrchestratorMessage(serializedBytes: bytes) else {
                    logger.error("a relayed message does not decode; dropped", metadata: ["device": "\(device)"])
                    continue
                }
                // The line may have closed since: the message is gone then, like one written to a line that breaks.
                hub.send(message, to: device)
            }
            counts.withLock { $0.delivered += taken.count }
            if taken.count < Self.batch { return }
        }
    }

    /// Drops messages whose device's line no replica took in time.
    func purgeExpired() async throws {
        let rows = try await client.query(
            "DELETE FROM line_relay WHERE expires_at <= now() RETURNING device_did", logger: logger)
        var dropped = 0
        for try await _ in rows.decode(String.self) { dropped += 1 }
        guard dropped > 0 else { return }
        counts.withLock { $0.expired += dropped }
        logger.notice(
            "relayed messages expired before their device's line was taken", metadata: ["count": "\(dropped)"])
    }
}
