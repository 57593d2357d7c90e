public import Logging
public import OrreryIdentity
public import PostgresNIO
internal import Foundation
internal import Synchronization

/// Records single-use invocations so that a replay is refused.
public protocol ReplayGuard: Sendable {
    /// Records `cid`; false when it was already recorded (a replay).
    func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool
}

/// The replay guard of a service with a schema: `consumed_invocations` there, so every replica sees every use.
public struct PostgresReplayGuard: ReplayGuard {
    private let client: PostgresClient
    private let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool {
        let rows = try await client.query(
            """
            INSERT INTO consumed_invocations (cid, command, issuer, expires_at)
            VALUES (\(cid.string), \(command), \(issuer.string), to_timestamp(\(Double(expiresAt))))
            ON CONFLICT (cid) DO NOTHING
            RETURNING cid
            """,
            logger: logger
        )
        var inserted = false
        for try await _ in rows { inserted = true }
        if inserted, Int.random(in: 0..<512) == 0 {
            // Expired entries cannot be replayed anyway (the invocation is refused as expired): prune now and then.
            try await client.query(
                "DELETE FROM consumed_invocations WHERE expires_at < now() - interval '10 minutes'", logger: logger)
        }
        return inserted
    }
}

/// The replay guard of a process without a database (the device agent, which runs as one process).
public final class InMemoryReplayGuard: ReplayGuard {
    private let consumed = Mutex<[CID: Int64]>([:])

    public init() {}

    public func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool {
        consumed.withLock { consumed in
            if consumed.count > 100_000 {
                let now = Int64(Date().timeIntervalSince1970)
                consumed = consumed.filter { $0.value > now }
            }
            return consumed.updateValue(expiresAt, forKey: cid) == nil
        }
    }
}
