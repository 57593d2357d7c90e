public import Logging

/// Work done again and again until cancelled — a sweeper, a queue's clerk, a chain watcher, a resend: a pass, then
/// a pause. A pass that fails is logged, with its name and how many passes in a row have failed, and tried again
/// after the pause: a database or a peer that does not answer is expected to answer later. Work that must not go on
/// after a failure belongs in a `BackgroundWorker` that throws instead.
public struct PeriodicWork: Sendable {
    /// What the work is, for its log lines.
    public let name: String
    public let interval: Duration
    /// Pause before the first pass too (for a resend that has nothing to do at first).
    public let pausesFirst: Bool
    /// Work done once: the first pass that succeeds ends it (failed passes are tried again after the pause).
    public let once: Bool
    private let logger: Logger
    private let pass: @Sendable () async throws -> Void

    public init(
        _ name: String, every interval: Duration, pausesFirst: Bool = false, logger: Logger,
        pass: @escaping @Sendable () async throws -> Void
    ) {
        self.init(name, interval: interval, pausesFirst: pausesFirst, once: false, logger: logger, pass: pass)
    }

    /// Work that is done once it succeeds: a failed attempt is logged and tried again after `retryAfter`.
    public init(
        _ name: String, untilDoneRetryingAfter retryAfter: Duration, logger: Logger,
        work: @escaping @Sendable () async throws -> Void
    ) {
        self.init(name, interval: retryAfter, pausesFirst: false, once: true, logger: logger, pass: work)
    }

    private init(
        _ name: String, interval: Duration, pausesFirst: Bool, once: Bool, logger: Logger,
        pass: @escaping @Sendable () async throws -> Void
    ) {
        self.name = name
        self.interval = interval
        self.pausesFirst = pausesFirst
        self.once = once
        self.logger = logger
        self.pass = pass
    }

    /// Runs passes until the task is cancelled.
    public func run() async {
        var failures = 0
        if pausesFirst { try? await Task.sleep(for: interval) }
        while !Task.isCancelled {
            do {
                try await pass()
                if once { return }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                logger.warning(
                    "\(name) failed; trying again",
                    metadata: ["error": "\(error)", "failures_in_a_row": "\(failures)", "retry_in": "\(interval)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}

/// A weak reference that can cross into a `@Sendable` closure: periodic work of an actor that must not keep it alive.
public struct WeakReference<Object: AnyObject & Sendable>: Sendable {
    public weak var value: Object?

    public init(_ value: Object?) {
        self.value = value
    }
}
