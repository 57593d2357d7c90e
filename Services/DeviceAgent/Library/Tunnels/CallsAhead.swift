internal import Synchronization

/// Calls kept open on a line ahead of need, so that a new connection is handed to one that is open and authorised
/// already instead of waiting while one is opened: standby `Tunnel` calls (connections into this device's
/// sandboxes) and warm `PeerTunnel` calls (connections out of them to partners).
enum CallsAhead {
    /// The first pause before a call that ended unused is opened again.
    static let pause = Duration.milliseconds(250)

    /// Keeps `count` calls open until cancelled (the line's end): `open` runs one call until it ends, telling
    /// `used` once a connection was handed to it. A used call is replaced at once; one that ended unused, after a
    /// pause that doubles while they keep ending (up to 30 s: a peer that takes no such calls is not asked again and
    /// again).
    static func keep(count: Int, open: @escaping @Sendable (_ used: @escaping @Sendable () -> Void) async -> Void) async
    {
        let (ends, end) = AsyncStream<Bool>.makeStream()
        await withDiscardingTaskGroup { group in
            let openOne = { @Sendable in
                let used = UsedFlag()
                await open { if used.set() { end.yield(true) } }
                if !used.isSet { end.yield(false) }
            }
            for _ in 0..<count { group.addTask { await openOne() } }
            var wait = pause
            for await used in ends {
                if used {
                    wait = pause
                } else {
                    try? await Task.sleep(for: wait)
                    wait = min(wait * 2, .seconds(30))
                }
                guard !Task.isCancelled else { break }
                group.addTask { await openOne() }
            }
            group.cancelAll()
        }
    }

    /// Whether a call was used.
    private final class UsedFlag: Sendable {
        private let flag = Mutex(false)
        /// Sets it; true the first time.
        func set() -> Bool {
            flag.withLock { flag in
                defer { flag = true }
                return !flag
            }
        }
        var isSet: Bool { flag.withLock { $0 } }
    }
}
