import Foundation
import Logging
import OrreryDatabase
import OrreryTestSupport
import PostgresNIO
import Synchronization
import Testing

@Suite(
    "A change feed keeps following",
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct ChangeFeedTests {
    struct DatabaseDown: Error {}
    /// What the writers of these tests' tables hold while they draw and commit.
    static let writersLock: Int64 = 0x7465_7374_6665_6564  // "testfeed"

    @Test("reads that fail at start (the database not answering yet) do not stop it: live changes arrive afterwards")
    func survivesFailedFirstReads() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let logger = Logger(label: "test.change-feed")
                try await client.query("CREATE TABLE feed_changes (revision bigserial PRIMARY KEY, note text NOT NULL)")
                // The first three reads fail, as they do while the database does not answer.
                let failuresLeft = Mutex(3)
                let feed = ChangeFeed<String>(
                    client: client, channel: "feed_changes", writersLock: Self.writersLock, logger: logger
                ) {
                    client, after, limit in
                    let fail = failuresLeft.withLock { left in
                        defer { left = max(left - 1, 0) }
                        return left > 0
                    }
                    if fail { throw DatabaseDown() }
                    let rows = try await client.query(
                        "SELECT revision, note FROM feed_changes WHERE revision > \(after) ORDER BY revision LIMIT \(limit)",
                        logger: logger)
                    return try await rows.decode((Int64, String).self).collected().map { ($0.0, $0.1) }
                }
                let changes = feed.subscribe()
                let following = Task { await feed.follow() }
                defer { following.cancel() }
                try await client.query(
                    "INSERT INTO feed_changes (note) VALUES ('after the outage')", logger: logger)
                try await client.query("NOTIFY feed_changes", logger: logger)
                // Positive evidence: the change arrives (the feed reads again every second), or the test fails.
                let first = await Self.notes(changes, count: 1, within: .seconds(60))
                #expect(first == ["after the outage"])
                #expect(failuresLeft.withLock { $0 } == 0)
            }
        }
    }

    @Test(
        "a watcher of one key gets that key's changes, in order, and nothing of the others; a watcher of all gets all")
    func keyedWatchers() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let logger = Logger(label: "test.change-feed")
                try await client.query(
                    "CREATE TABLE keyed_changes (revision bigserial PRIMARY KEY, key text NOT NULL, note text NOT NULL)"
                )
                let feed = ChangeFeed<(key: String, note: String)>(
                    client: client, channel: "keyed_changes", writersLock: Self.writersLock, logger: logger,
                    key: { $0.key }
                ) { client, after, limit in
                    let rows = try await client.query(
                        "SELECT revision, key, note FROM keyed_changes WHERE revision > \(after) ORDER BY revision LIMIT \(limit)",
                        logger: logger)
                    return try await rows.decode((Int64, String, String).self).collected().map { ($0.0, ($0.1, $0.2)) }
                }
                let ofA = feed.subscribe(key: "a")
                let ofB = feed.subscribe(key: "b")
                let all = feed.subscribe()
                for (key, note) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2"), ("b", "end"), ("a", "end")] {
                    try await client.query(
                        "INSERT INTO keyed_changes (key, note) VALUES (\(key), \(note))", logger: logger)
                }
                try await feed.catchUp()
                func notes(
                    _ stream: AsyncStream<(revision: Int64, change: (key: String, note: String))>, until last: Int
                )
                    async -> [String]
                {
                    var seen: [String] = []
                    for await (_, change) in stream {
                        seen.append(change.note)
                        if seen.count == last { break }
                    }
                    return seen
                }
                #expect(await notes(ofA, until: 3) == ["a1", "a2", "end"])
                #expect(await notes(ofB, until: 2) == ["b1", "end"])
                #expect(await notes(all, until: 6) == ["a1", "b1", "c1", "a2", "end", "end"])
            }
        }
    }

    /// A feed over `ordered_changes`, whose writers hold the writers' lock from before they draw (the feed's rule).
    static func orderedFeed(_ client: PostgresClient, logger: Logger) async throws -> ChangeFeed<String> {
        try await client.query(
            "CREATE TABLE ordered_changes (revision bigserial PRIMARY KEY, note text NOT NULL)", logger: logger)
        return ChangeFeed<String>(
            client: client, channel: "ordered_changes", writersLock: Self.writersLock, logger: logger
        ) { client, after, limit in
            let rows = try await client.query(
                "SELECT revision, note FROM ordered_changes WHERE revision > \(after) ORDER BY revision LIMIT \(limit)",
                logger: logger)
            return try await rows.decode((Int64, String).self).collected().map { ($0.0, $0.1) }
        }
    }

    static func append(_ note: String, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            """
            WITH drawing AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(\(Self.writersLock)))
            INSERT INTO ordered_changes (note) SELECT \(note) FROM drawing
            """, logger: logger)
    }

    struct TimedOut: Error {}

    /// Runs `body`; fails the test if it has not returned within 30 s.
    static func bounded(_ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await body()
                return true
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                return false
            }
            let finished = try await group.next() ?? false
            group.cancelAll()
            if !finished { throw TimedOut() }
        }
    }

    /// The next `count` notes of `stream`, or those that came within `limit` (then the caller's expectation fails).
    static func notes(
        _ stream: AsyncStream<(revision: Int64, change: String)>, count: Int, within limit: Duration = .seconds(30)
    ) async -> [String] {
        await withTaskGroup(of: [String]?.self) { group in
            group.addTask {
                var seen: [String] = []
                for await (_, note) in stream {  // ends early when cancelled
                    seen.append(note)
                    if seen.count == count { break }
                }
                return seen
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if let first { return first }
            return await group.next().flatMap { $0 } ?? []
        }
    }

    /// Draws revision 1 in a transaction left open, draws and commits revision 2 on another connection, catches up
    /// (nothing may be handed out yet: 1 may still commit), then runs `body` with the open transaction's connection.
    static func withFirstOpen<Result: Sendable>(
        _ feed: ChangeFeed<String>, client: PostgresClient, logger: Logger, notes: (first: String, second: String),
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await client.withConnection { first in
            try await first.query("BEGIN", logger: logger)
            try await Self.append(notes.first, on: first, logger: logger)
            try await client.withConnection { second in
                try await Self.append(notes.second, on: second, logger: logger)
            }
            try await feed.catchUp()
            #expect(feed.publishedRevision == 0)
            #expect(try await feed.list(after: 0, limit: 10).isEmpty)
            return try await body(first)
        }
    }

    /// Revision 1 drawn, revision 2 drawn and committed, then 1 committed: what a watch saw.
    static func outOfOrder(_ feed: ChangeFeed<String>, client: PostgresClient, logger: Logger) async throws -> [String]
    {
        try await withFirstOpen(
            feed, client: client, logger: logger, notes: ("drawn first", "drawn second, committed first")
        ) { first in
            // A watch's backlog stops at the gap too, and it follows the live feed from there.
            let watching = Task { () -> [String] in
                var seen: [String] = []
                try? await feed.watch(after: 0) { _, note in
                    seen.append(note)
                    if note.hasPrefix("drawn second") { throw CancellationError() }
                }
                return seen
            }
            defer { watching.cancel() }
            try await first.query("COMMIT", logger: logger)
            try await Self.bounded { try await feed.catchUp(through: 2) }
            // It ends by itself once it saw the second change; past 30 s it is stopped with what it saw.
            let deadline = Task {
                try await Task.sleep(for: .seconds(30))
                watching.cancel()
            }
            defer { deadline.cancel() }
            return await watching.value
        }
    }

    @Test(
        "a revision committed after a higher one is still handed out, and first: the feed, a listing and a watch's backlog stop at the gap until its writer ends, and no other transaction is waited for"
    )
    func outOfOrderCommits() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let logger = Logger(label: "test.change-feed")
                let feed = try await Self.orderedFeed(client, logger: logger)
                let all = feed.subscribe()
                // A transaction that writes elsewhere, open all along: the feed does not wait for it.
                try await client.query("CREATE TABLE elsewhere (note text NOT NULL)", logger: logger)
                let watched: [String] = try await client.withConnection { bystander in
                    try await bystander.query("BEGIN", logger: logger)
                    try await bystander.query("INSERT INTO elsewhere VALUES ('open all along')", logger: logger)
                    let watched = try await Self.outOfOrder(feed, client: client, logger: logger)
                    try await bystander.query("COMMIT", logger: logger)
                    return watched
                }
                #expect(feed.publishedRevision == 2)
                #expect(await Self.notes(all, count: 2) == ["drawn first", "drawn second, committed first"])
                #expect(watched == ["drawn first", "drawn second, committed first"])
                #expect(
                    try await feed.list(after: 0, limit: 10).map(\.change) == [
                        "drawn first", "drawn second, committed first",
                    ])
            }
        }
    }

    @Test("a revision rolled back does not hold the feed: once its transaction ended, what follows is handed out")
    func rolledBackRevision() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let logger = Logger(label: "test.change-feed")
                let feed = try await Self.orderedFeed(client, logger: logger)
                let all = feed.subscribe()
                try await Self.withFirstOpen(feed, client: client, logger: logger, notes: ("rolled back", "kept")) {
                    _ = try await $0.query("ROLLBACK", logger: logger)
                }
                try await Self.bounded { try await feed.catchUp(through: 2) }
                #expect(await Self.notes(all, count: 1) == ["kept"])
                #expect(try await feed.list(after: 0, limit: 10).map(\.revision) == [2])
                // A later change follows at once.
                try await client.withConnection { try await Self.append("later", on: $0, logger: logger) }
                try await Self.bounded { try await feed.catchUp(through: 3) }
                #expect(await Self.notes(all, count: 1) == ["later"])
            }
        }
    }
}
