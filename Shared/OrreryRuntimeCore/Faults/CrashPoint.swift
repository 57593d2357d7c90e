#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import Logging
internal import Synchronization

/// Named points in a service's work where a test can make the process die as `kill -9` would — between two
/// transactions, say, where no outside signal lands reliably. `ORRERY_CRASH_AT` lists the names (comma-separated);
/// unset, as in production, every point passes.
public enum CrashPoint {
    /// The names in `ORRERY_CRASH_AT`, read once.
    static let armed: Set<String> = Set(
        (ProcessInfo.processInfo.environment["ORRERY_CRASH_AT"] ?? "").split(separator: ",").map {
            $0.trimmed()
        }.filter { !$0.isEmpty })

    /// Dies at once with SIGKILL when `name` is armed (after a critical log line naming it).
    public static func reach(_ name: String, logger: Logger) {
        guard armed.contains(name) else { return }
        logger.critical("ORRERY_CRASH_AT: dying at a crash point", metadata: ["point": "\(name)"])
        kill(getpid(), SIGKILL)
    }
}

/// A chunk a test makes arrive damaged: `ORRERY_DAMAGE_CHUNK_AT` names a byte offset; the first chunk a device sends
/// to the content store starting there has one byte changed after its sha256 was taken (once per process). Unset, as in
/// production, nothing is touched.
public enum DamagedChunk {
    static let offset: UInt64? = ProcessInfo.processInfo.environment["ORRERY_DAMAGE_CHUNK_AT"].flatMap { UInt64($0) }
    private static let spent = Mutex(false)

    /// `data` with one byte changed when this is the armed chunk (the first time only).
    public static func apply(_ data: Data, at start: UInt64, logger: Logger) -> Data {
        guard let offset, offset == start, !data.isEmpty,
            spent.withLock({ spent in
                defer { spent = true }
                return !spent
            })
        else { return data }
        logger.critical("ORRERY_DAMAGE_CHUNK_AT: a chunk leaves damaged", metadata: ["offset": "\(start)"])
        var damaged = data
        damaged[damaged.startIndex] ^= 0xff
        return damaged
    }
}

/// Background workers a test makes fail, to see the process end as a worker's real failure would end it.
/// `ORRERY_FAIL_WORKER` lists their names (comma-separated); unset, as in production, none fails.
public enum InjectedWorkerFailure: Error, CustomStringConvertible {
    case armed(String)

    static let names: Set<String> = Set(
        (ProcessInfo.processInfo.environment["ORRERY_FAIL_WORKER"] ?? "").split(separator: ",").map {
            $0.trimmed()
        }.filter { !$0.isEmpty })

    /// Throws when `ORRERY_FAIL_WORKER` names `worker`.
    public static func check(_ worker: String) throws {
        if names.contains(worker) { throw InjectedWorkerFailure.armed(worker) }
    }

    public var description: String {
        switch self {
        case .armed(let worker): "ORRERY_FAIL_WORKER names \(worker)"
        }
    }
}

/// Background workers a test makes stall once cancelled, as one stuck finishing a write would, to see the process
/// ended by its `StopWatchdog`. `ORRERY_STALL_WORKER_STOP` lists their names (comma-separated); unset, as in
/// production, none stalls.
public enum InjectedStopStall {
    static let names: Set<String> = Set(
        (ProcessInfo.processInfo.environment["ORRERY_STALL_WORKER_STOP"] ?? "").split(separator: ",").map {
            $0.trimmed()
        }.filter { !$0.isEmpty })

    /// Waits an hour, whatever cancels it, when `ORRERY_STALL_WORKER_STOP` names `worker`.
    public static func stallIfArmed(_ worker: String) async {
        guard names.contains(worker) else { return }
        await Task.detached { try? await Task.sleep(for: .seconds(3600)) }.value
    }
}
