internal import Foundation
public import Logging

/// Named points in a service's work where a test can make the process die as `kill -9` would — between two
/// transactions, say, where no outside signal lands reliably. `ORRERY_CRASH_AT` lists the names (comma-separated);
/// unset, as in production, every point passes.
public enum CrashPoint {
    /// The names in `ORRERY_CRASH_AT`, read once.
    static let armed: Set<String> = Set(
        (ProcessInfo.processInfo.environment["ORRERY_CRASH_AT"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty })

    /// Dies at once with SIGKILL when `name` is armed (after a critical log line naming it).
    public static func reach(_ name: String, logger: Logger) {
        guard armed.contains(name) else { return }
        logger.critical("ORRERY_CRASH_AT: dying at a crash point", metadata: ["point": "\(name)"])
        kill(getpid(), SIGKILL)
    }
}
