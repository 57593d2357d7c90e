#if canImport(Glibc)
    internal import Glibc
#elseif canImport(Musl)
    internal import Musl
#elseif canImport(Darwin)
    internal import Darwin
#endif
public import Logging
internal import UnixSignals

/// Ends a service process that has not stopped a while after its first SIGTERM or SIGINT — its shutdown grace, then
/// `cancellationAllowance` for the parts it cancelled to finish — with a log line and exit status 1, so a service
/// manager never waits on it. (ServiceGroup's own bound ends the process with a fatal error instead, whose crash
/// report of a large binary took minutes on a loaded machine.)
public enum StopWatchdog {
    public static let cancellationAllowance: Duration = .seconds(5)

    /// Watches for the signals from now on; the process ends `grace` plus the allowance after the first one unless it
    /// ended before.
    public static func start(grace: Duration, logger: Logger) async {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let bound = grace + cancellationAllowance
        Task.detached {
            for await _ in signals { break }
            // Cancelled by nothing: the process ends before this does, or this ends the process.
            try? await Task.sleep(for: bound)
            logger.critical(
                "did not stop within \(bound) of being asked to (its shutdown grace and \(cancellationAllowance) more); exiting"
            )
            exit(1)
        }
    }
}
