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

    @Test("reads that fail at start (the database not answering yet) do not stop it: live changes arrive afterwards")
    func survivesFailedFirstReads() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let logger = Logger(label: "test.change-feed")
                try await client.query("CREATE TABLE feed_changes (revision bigserial PRIMARY KEY, note text NOT NULL)")
                // The first three reads fail, as they do while the database does not answer.
                let failuresLeft = Mutex(3)
                let feed = ChangeFeed<String>(client: client, channel: "feed_changes", logger: logger) {
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
                let first = try await withThrowingTaskGroup(of: String?.self) { group in
                    group.addTask {
                        for await (_, note) in changes { return note }
                        return nil
                    }
                    group.addTask {
                        try await Task.sleep(for: .seconds(60))
                        return nil
                    }
                    let first = try await group.next() ?? nil
                    group.cancelAll()
                    return first
                }
                #expect(first == "after the outage")
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
                    client: client, channel: "keyed_changes", logger: logger, key: { $0.key }
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
}
