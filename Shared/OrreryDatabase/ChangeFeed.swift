internal import Foundation
public import Logging
public import PostgresNIO
internal import Synchronization

/// Follows a table of changes with increasing revision numbers — woken by LISTEN/NOTIFY on `channel`, re-reading
/// every second in case a notification was missed — and fans each new change out to this process's watchers.
/// Every replica follows the same table, so any replica serves any watch, resumable from a revision.
public final class ChangeFeed<Change: Sendable>: Sendable {
    /// Reads changes after a revision, oldest first, at most `limit`.
    public typealias Fetch =
        @Sendable (_ client: PostgresClient, _ after: Int64, _ limit: Int) async throws -> [(
            revision: Int64, change: Change
        )]

    private typealias Watcher = AsyncStream<(revision: Int64, change: Change)>.Continuation

    private struct State {
        var revision: Int64 = 0
        /// Watchers of every change.
        var watchers: [UUID: Watcher] = [:]
        /// Watchers of the changes of one key (`key(change)`): a change reaches only its key's, so a thousand
        /// watches of a thousand deployments cost one delivery per change, not a thousand.
        var keyed: [String: [UUID: Watcher]] = [:]
    }

    private let client: PostgresClient
    private let channel: String
    private let logger: Logger
    private let fetch: Fetch
    private let onChange: @Sendable (Int64, Change) -> Void
    private let key: @Sendable (Change) -> String?
    private let state = Mutex(State())

    /// - Parameters:
    ///   - onChange: Called for each new change before watchers see it (e.g. to update a local cache).
    ///   - key: What `subscribe(key:)` watchers follow a change by (e.g. its deployment's id).
    public init(
        client: PostgresClient,
        channel: String,
        logger: Logger,
        onChange: @escaping @Sendable (Int64, Change) -> Void = { _, _ in },
        key: @escaping @Sendable (Change) -> String? = { _ in nil },
        fetch: @escaping Fetch
    ) {
        self.client = client
        self.channel = channel
        self.logger = logger
        self.fetch = fetch
        self.onChange = onChange
        self.key = key
    }

    /// Changes after `revision` straight from the table.
    public func list(after revision: Int64, limit: Int) async throws -> [(revision: Int64, change: Change)] {
        try await fetch(client, revision, limit)
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
            let batch = try await fetch(client, sent, 1000)
            for (revision, change) in batch {
                try await deliver(revision, change)
                sent = revision
            }
            if batch.count < 1000 { break }
        }
        for await (revision, change) in live where revision > sent {
            try await deliver(revision, change)
            sent = revision
        }
    }

    /// Reads what is new since the last revision seen and publishes it.
    public func catchUp() async throws {
        while true {
            let after = state.withLock { $0.revision }
            let batch = try await fetch(client, after, 1000)
            guard !batch.isEmpty else { return }
            for (revision, change) in batch {
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
    }

    /// Follows the table until cancelled. A failed read (the database not answering yet at start, or gone for a
    /// while) is logged and read again a second later: the feed never stops on its own, so live watches resume
    /// once the database answers (health says NOT_SERVING meanwhile).
    public func follow() async {
        do { try await catchUp() } catch {
            logger.warning("\(channel) first read failed; reading again every second", metadata: ["error": "\(error)"])
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await PostgresListener.listen(client: client, channel: channel, logger: logger) { _ in
                    try await self.catchUp()
                }
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    do { try await catchUp() } catch {
                        logger.warning("\(channel) re-read failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}
