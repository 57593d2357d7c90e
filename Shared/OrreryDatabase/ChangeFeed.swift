internal import Foundation
public import Logging
public import PostgresNIO
internal import Synchronization

/// Follows a table of changes with increasing revision numbers — woken by LISTEN/NOTIFY on `channel`, re-reading
/// every second in case a notification was missed — and fans each new change out to this process's watchers.
/// Every replica follows the same table, so any replica serves any watch, resumable from a revision.
///
/// Revisions may commit out of order: writers draw them from a sequence without an exclusive lock, so a transaction
/// that drew revision 10 may commit after the one that drew 11. A watcher resuming after 11 would never see 10, so the
/// feed hands out revisions in order only: at a revision no row holds yet (a gap), it notes which transactions hold
/// the writers' advisory lock (`writersLock`) just after that read, waits until each of them has ended, then reads
/// again — what still lacks a row was rolled back and never will have one. That is sound because every writer takes
/// that lock (shared) before it draws and keeps it to its end — `WITH drawing AS MATERIALIZED (SELECT
/// pg_advisory_xact_lock_shared(KEY)) SELECT nextval(…) FROM drawing`, as the last writes of its transaction — and a
/// revision below a committed one was drawn before that one committed. Only writers in their last statements are
/// waited for, never the database's other transactions. Readers of the table (`list`, `watch`'s backlog) stop at a
/// gap not yet known to be permanent, too.
public final class ChangeFeed<Change: Sendable>: Sendable {
    /// Reads changes after a revision, oldest first, at most `limit`.
    public typealias Fetch =
        @Sendable (_ client: PostgresClient, _ after: Int64, _ limit: Int) async throws -> [(
            revision: Int64, change: Change
        )]

    private typealias Watcher = AsyncStream<(revision: Int64, change: Change)>.Continuation

    private struct State {
        /// The last revision published.
        var revision: Int64 = 0
        /// A revision below this one that no row holds never will: every transaction that could have drawn it ended.
        var settledBelow: Int64 = 0
        /// A gap being waited out: the writers (their virtual transaction ids) holding the writers' lock just after a
        /// read whose highest revision was `horizon` (one of them may hold a revision missing below it), and how often
        /// they were found running.
        var waiting: (horizon: Int64, transactions: [String], checks: Int)?
        /// Watchers of every change.
        var watchers: [UUID: Watcher] = [:]
        /// Watchers of the changes of one key (`key(change)`): a change reaches only its key's, so a thousand
        /// watches of a thousand deployments cost one delivery per change, not a thousand.
        var keyed: [String: [UUID: Watcher]] = [:]
    }

    private let client: PostgresClient
    private let channel: String
    private let writersLock: Int64
    private let logger: Logger
    private let fetch: Fetch
    private let onChange: @Sendable (Int64, Change) -> Void
    private let key: @Sendable (Change) -> String?
    private let state = Mutex(State())
    /// One catch-up at a time (the follower's and a writer's own for read-your-writes).
    private let catchingUp = SerialLock()
    /// Asks the follower to look at a waited-out gap again soon.
    private let rechecks: AsyncStream<Duration>
    private let recheck: AsyncStream<Duration>.Continuation
    /// Rows read at once.
    private static var page: Int { 1000 }

    /// - Parameters:
    ///   - writersLock: The advisory lock (a bigint key, in this database) every writer holds from before it draws
    ///     a revision to its end, shared or exclusive.
    ///   - onChange: Called for each new change before watchers see it (e.g. to update a local cache).
    ///   - key: What `subscribe(key:)` watchers follow a change by (e.g. its deployment's id).
    public init(
        client: PostgresClient,
        channel: String,
        writersLock: Int64,
        logger: Logger,
        onChange: @escaping @Sendable (Int64, Change) -> Void = { _, _ in },
        key: @escaping @Sendable (Change) -> String? = { _ in nil },
        fetch: @escaping Fetch
    ) {
        self.client = client
        self.channel = channel
        self.writersLock = writersLock
        self.logger = logger
        self.fetch = fetch
        self.onChange = onChange
        self.key = key
        (rechecks, recheck) = AsyncStream<Duration>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// The last revision published to watchers.
    public var publishedRevision: Int64 { state.withLock { $0.revision } }

    /// Changes after `revision` straight from the table, up to the first gap not known to be permanent (a revision
    /// whose transaction may still commit): a caller resuming after the last one returned misses nothing.
    public func list(after revision: Int64, limit: Int) async throws -> [(revision: Int64, change: Change)] {
        let batch = try await fetch(client, revision, limit)
        // Read after the rows: a gap the follower settled before the read is known here.
        let settledBelow = state.withLock { $0.settledBelow }
        return Array(Self.inOrder(batch, after: revision, settledBelow: settledBelow).rows)
    }

    /// The leading rows of `batch` (read after `after`, ascending) that can be handed out: up to the first revision
    /// missing at or above `settledBelow`.
    static func inOrder(
        _ batch: [(revision: Int64, change: Change)], after: Int64, settledBelow: Int64
    ) -> (rows: ArraySlice<(revision: Int64, change: Change)>, stoppedAtGap: Bool) {
        var expected = after + 1
        for (index, row) in batch.enumerated() {
            // Missing: expected ..< row.revision, settled when all of them are below `settledBelow`.
            if row.revision > expected && row.revision > settledBelow {
                return (batch[..<index], true)
            }
            expected = row.revision + 1
        }
        return (batch[...], false)
    }

    /// New changes as this process learns them, until the consumer stops.
    public func subscribe() -> AsyncStream<(revision: Int64, change: Change)> {
        let (stream, continuation) = AsyncStream<(revision: Int64, change: Change)>.makeStream(
            bufferingPolicy: .bufferingNewest(100_000))
        let id = UUID()
        state.withLock { $0.watchers[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// New changes whose key is `key`, as this process learns them, until the consumer stops.
    public func subscribe(key: String) -> AsyncStream<(revision: Int64, change: Change)> {
        let (stream, continuation) = AsyncStream<(revision: Int64, change: Change)>.makeStream(
            bufferingPolicy: .bufferingNewest(100_000))
        let id = UUID()
        state.withLock { $0.keyed[key, default: [:]][id] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.keyed[key]?.removeValue(forKey: id)
                if state.keyed[key]?.isEmpty == true { state.keyed[key] = nil }
            }
        }
        return stream
    }

    /// Everything after `after`, then every new change: the backlog from the table, then the live feed (subscribed
    /// first, so nothing recorded in between is lost; duplicates are skipped).
    public func watch(after: Int64, _ deliver: (Int64, Change) async throws -> Void) async throws {
        let live = subscribe()
        var sent = after
        while true {
            let batch = try await fetch(client, sent, Self.page)
            // At a gap not known to be permanent the backlog ends: the follower had not published past it when this
            // watch subscribed (it would have needed the gap's row, which this read would see, or the gap settled,
            // which `settledBelow` read now would say), so the live feed brings everything after it.
            let settledBelow = state.withLock { $0.settledBelow }
            let (rows, stoppedAtGap) = Self.inOrder(batch, after: sent, settledBelow: settledBelow)
            for (revision, change) in rows {
                try await deliver(revision, change)
                sent = revision
            }
            if stoppedAtGap || batch.count < Self.page { break }
        }
        for await (revision, change) in live where revision > sent {
            try await deliver(revision, change)
            sent = revision
        }
    }

    /// Reads what is new since the last revision published and publishes it, in revision order, up to a gap that is
    /// still being waited out (see the type's documentation).
    public func catchUp() async throws {
        try await catchingUp.withLock {
            while true {
                let (after, settledBelow) = state.withLock { ($0.revision, $0.settledBelow) }
                let batch = try await fetch(client, after, Self.page)
                let (rows, stoppedAtGap) = Self.inOrder(batch, after: after, settledBelow: settledBelow)
                publish(rows)
                if stoppedAtGap, let horizon = batch.last?.revision {
                    // Settled: read again (a gap's row may have committed meanwhile); otherwise look again soon.
                    guard try await settleGaps(below: horizon) else { return }
                } else if batch.count < Self.page {
                    return
                }
            }
        }
    }

    /// Catches up until `revision` (a committed row's: a writer's own change, for read-your-writes) is published,
    /// looking again after short, growing pauses while a gap below it is waited out.
    public func catchUp(through revision: Int64) async throws {
        var pause = Duration.milliseconds(2)
        try await catchUp()
        while publishedRevision < revision {
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(200))
            try await catchUp()
        }
    }

    private func publish(_ rows: ArraySlice<(revision: Int64, change: Change)>) {
        for (revision, change) in rows {
            let changeKey = key(change)
            let watchers = state.withLock { state -> [Watcher]? in
                guard revision > state.revision else { return nil }  // already published
                state.revision = revision
                let ofKey = changeKey.flatMap { state.keyed[$0] }.map { Array($0.values) } ?? []
                return Array(state.watchers.values) + ofKey
            }
            guard let watchers else { continue }
            onChange(revision, change)
            for watcher in watchers { watcher.yield((revision, change)) }
        }
    }

    /// Whether the revisions missing below `horizon` (the highest revision of a read just made) are settled now:
    /// every writer that held the writers' lock just after an earlier such read (or, the first time, just after this
    /// one) has ended. Not yet: they are kept, and the follower asked to look again after a short, growing pause.
    private func settleGaps(below horizon: Int64) async throws -> Bool {
        let waiting = state.withLock { $0.waiting }
        // The first time, taken after the read: a writer holding a missing revision took the lock before that row
        // was drawn, so it holds it still or has ended.
        let running = try await writers(among: waiting?.transactions)
        let checks = (waiting?.checks ?? 0) + 1
        state.withLock { state in
            if running.isEmpty {
                state.settledBelow = max(state.settledBelow, waiting?.horizon ?? horizon)
                state.waiting = nil
            } else {
                state.waiting = (waiting?.horizon ?? horizon, running, checks)
            }
        }
        guard running.isEmpty else {
            recheck.yield(.milliseconds(min(2 << min(checks, 9), 1000)))
            return false
        }
        return true
    }

    /// The virtual transaction ids of the writers holding the writers' lock now (of `among` only, when given).
    private func writers(among: [String]?) async throws -> [String] {
        // A bigint advisory key is shown as two oids: its high half as `classid`, its low half as `objid`.
        let high = Int64(UInt32(truncatingIfNeeded: writersLock >> 32))
        let low = Int64(UInt32(truncatingIfNeeded: writersLock))
        let rows = try await client.query(
            """
            SELECT virtualtransaction FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 1
              AND classid = \(high)::oid AND objid = \(low)::oid
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND (\(among == nil) OR virtualtransaction = ANY(\(among ?? [])::text[]))
            """, logger: logger)
        return try await rows.decode(String.self).collected()
    }

    /// Follows the table until cancelled. A failed read (the database not answering yet at start, or gone for a
    /// while) is logged and read again a second later: the feed never stops on its own, so live watches resume
    /// once the database answers (health says NOT_SERVING meanwhile). Wake-ups (a notification, the second's
    /// re-read, a gap's re-check) that come while a catch-up runs are folded into one more catch-up after it, so a
    /// burst of changes costs a few reads, not one each.
    public func follow() async {
        do { try await catchUp() } catch {
            logger.warning("\(channel) first read failed; reading again every second", metadata: ["error": "\(error)"])
        }
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await PostgresListener.listen(client: client, channel: channel, logger: logger) { _ in wake.yield() }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    wake.yield()
                }
                wake.finish()
            }
            group.addTask { [rechecks] in
                // A gap being waited out is looked at again soon, not only at the next change or second.
                for await pause in rechecks {
                    try? await Task.sleep(for: pause)
                    wake.yield()
                }
            }
            group.addTask { [self] in
                for await _ in wakes {
                    do { try await catchUp() } catch {
                        logger.warning("\(channel) re-read failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}
