internal import Foundation
internal import NIOCore
internal import NIOPosix

/// Runs Swift concurrency's tasks on SwiftNIO's event loops instead of a separate thread pool, so that a request read
/// on an event loop is handled there without a hop between threads (and the hop back to write the answer).
public enum EventLoopExecutor {
    /// Installs the event loops as the global executor; call once, first thing in a process. False when it could
    /// not be installed (the default pool stays).
    @discardableResult
    public static func install() -> Bool {
        if ProcessInfo.processInfo.environment["ORRERY_TASKS_ON_EVENT_LOOPS"] == "0" { return false }
        return NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
