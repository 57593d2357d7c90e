internal import Synchronization

/// What was read from the database lately, used for a moment (`freshness`) instead of reading again: a burst of
/// connections costs one read, not one each. Holds at most `capacity` entries (past it, the stale ones go, then all).
/// A value may be nil (nothing was found), which is remembered too.
final class RecentReads<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entry {
        let value: Value?
        let read: ContinuousClock.Instant
    }

    /// What a look-up found: the value read less than `freshness` ago (nil: it was not there then).
    struct Recalled {
        let value: Value?
    }

    let freshness: Duration
    let capacity: Int
    private let entries = Mutex<[Key: Entry]>([:])

    init(freshness: Duration = .seconds(1), capacity: Int = 10_000) {
        self.freshness = freshness
        self.capacity = capacity
    }

    /// What was read for `key` less than `freshness` ago, if anything.
    func recall(_ key: Key) -> Recalled? {
        let now = ContinuousClock.now
        guard let entry = entries.withLock({ $0[key] }), now - entry.read < freshness else { return nil }
        return Recalled(value: entry.value)
    }

    func remember(_ value: Value?, for key: Key) {
        let now = ContinuousClock.now
        let freshness = freshness
        entries.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { now - $0.value.read < freshness }
                if entries.count >= capacity { entries.removeAll() }
            }
            entries[key] = Entry(value: value, read: now)
        }
    }

    /// The value for `key`: recalled when read lately, else read with `read` — and remembered when `keep` says so
    /// (say, only what lets a caller through: one refused reads again next time).
    func value(
        for key: Key, read: () async throws -> Value?, keep: (Value?) -> Bool = { _ in true }
    ) async throws -> Value? {
        if let recalled = recall(key) { return recalled.value }
        let value = try await read()
        if keep(value) { remember(value, for: key) }
        return value
    }
}
