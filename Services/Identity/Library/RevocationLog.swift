internal import Foundation
internal import Logging
internal import OrreryAuth
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// The identity service's revocation log: the append-only `revocations` table, followed by a `ChangeFeed` that
/// applies each revocation to this replica's `RevocationBook` and serves watches.
final class RevocationLog: Sendable {
    /// The advisory lock a revocation's insert holds (shared) from its revision's draw to its end (see `ChangeFeed`).
    static let writersLock: Int64 = 0x6F72_7265_7279_0006  // "orrery" 6

    let feed: ChangeFeed<Orrery_Identity_V1_Revocation>

    init(client: PostgresClient, book: RevocationBook, logger: Logger) {
        feed = ChangeFeed(
            client: client, channel: "orrery_revocations", writersLock: Self.writersLock, logger: logger,
            onChange: { revision, revocation in
                if let cid = try? CID(revocation.cid) { book.apply(cid: cid, revision: revision) }
            },
            fetch: { client, after, limit in
                try await Self.list(client: client, logger: logger, after: after, limit: limit)
            })
    }

    private static func list(client: PostgresClient, logger: Logger, after revision: Int64, limit: Int) async throws
        -> [(revision: Int64, change: Orrery_Identity_V1_Revocation)]
    {
        let rows = try await client.query(
            """
            SELECT revision, cid, revoked_by, revoked_at FROM revocations
            WHERE revision > \(revision) ORDER BY revision LIMIT \(limit)
            """,
            logger: logger
        )
        var revocations: [(revision: Int64, change: Orrery_Identity_V1_Revocation)] = []
        for try await (revision, cid, revokedBy, revokedAt) in rows.decode((Int64, String, String, Date).self) {
            var revocation = Orrery_Identity_V1_Revocation()
            revocation.revision = revision
            revocation.cid = cid
            revocation.revokedBy = revokedBy
            revocation.revokedAt = Google_Protobuf_Timestamp(date: revokedAt)
            revocations.append((revision, revocation))
        }
        return revocations
    }

    func list(after revision: Int64, limit: Int) async throws -> [Orrery_Identity_V1_Revocation] {
        try await feed.list(after: revision, limit: limit).map(\.change)
    }

    func catchUp(through revision: Int64) async throws { try await feed.catchUp(through: revision) }

    func follow() async { await feed.follow() }
}
