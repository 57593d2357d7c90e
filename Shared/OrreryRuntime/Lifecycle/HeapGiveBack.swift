internal import CMallocControl
internal import Foundation
public import Logging
public import ServiceLifecycle

/// How much of a process's anonymous resident memory the allocator holds without using it.
public struct HeapFigures: Sendable, Equatable {
    /// Anonymous resident memory (heap, stacks, private mappings), in bytes.
    public var anonymousResident: Int
    /// Bytes the program has allocated and not freed, in the allocator's arenas and its own mappings.
    public var inUse: Int

    public init(anonymousResident: Int, inUse: Int) {
        self.anonymousResident = anonymousResident
        self.inUse = inUse
    }

    /// Resident memory that holds no live allocation: freed heap pages the allocator keeps, plus the stacks and
    /// mappings it does not see, which stay about the same.
    public var slack: Int { anonymousResident - inUse }

    /// This process's figures now, or nil where they cannot be read (not glibc, no `/proc`).
    public static func current() -> HeapFigures? {
        #if canImport(Glibc)
            guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
            let pages = statm.split(separator: " ").compactMap { Int($0) }
            guard pages.count >= 3 else { return nil }
            let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            return HeapFigures(
                anonymousResident: (pages[1] - pages[2]) * pageSize, inUse: Int(orrery_heap_bytes_in_use()))
        #else
            return nil
        #endif
    }
}

/// When to hand freed heap pages back, and how often to look: when the slack has grown since the last give-back
/// (or since start) by more than `threshold` or a sixteenth of the heap in use, whichever is more. What a give-back
/// could not return (stacks, partly used pages) becomes the new floor, so a heap that cannot shrink further is not
/// trimmed again and again.
///
/// Both the look (`mallinfo2`) and the give-back (`malloc_trim`) walk every arena, so their cost grows with the heap:
/// on an orchestrator with a 1 GiB heap, looking every 5 s and trimming at every 2 MiB of slack, `perf` found
/// `mallinfo2`'s walk in 2.6 % of its samples and the arenas' consolidation (which a trim starts) in 1.8 %. A large
/// heap is therefore looked at less often (`interval(after:)`) and trimmed only for a slack worth it.
public struct HeapGiveBackPolicy: Sendable, Equatable {
    /// The least growth of slack that makes a give-back worth its cost, in bytes.
    public let threshold: Int
    /// The lowest slack seen since the last give-back.
    public private(set) var floor: Int?

    /// The heap in use up to which the base interval holds; each such amount more adds another base interval.
    public static let heapPerInterval = 256 << 20
    /// The longest interval between two looks, in base intervals.
    public static let maximumIntervals = 12

    public init(threshold: Int) {
        self.threshold = threshold
    }

    /// Whether to give back now; records `figures` as the floor when they are the lowest seen.
    public mutating func shouldGiveBack(_ figures: HeapFigures) -> Bool {
        guard let floor else {
            self.floor = figures.slack
            return false
        }
        if figures.slack < floor { self.floor = figures.slack }
        return figures.slack - floor > max(threshold, figures.inUse / 16)
    }

    /// How long to wait before the next look, after `figures`: the base interval up to 256 MiB in use, one more for
    /// each 256 MiB beyond, at most twelve.
    public static func interval(after figures: HeapFigures, base: Duration) -> Duration {
        let multiple = min(1 + max(figures.inUse, 0) / heapPerInterval, maximumIntervals)
        return base * multiple
    }

    /// Records the figures just after a give-back: what remained is the floor from now on.
    public mutating func gaveBack(_ figures: HeapFigures) {
        floor = figures.slack
    }
}

/// Hands heap pages the allocator keeps after a burst back to the system.
///
/// glibc keeps freed memory inside its arenas for reuse and returns on its own only the free space at the very top
/// of each; after a burst (a flood of forged calls, thousands of connections opened and closed) a service kept
/// 50–60 MiB resident that held no live allocation. Every `interval` this compares anonymous resident memory with
/// what is allocated, and when the difference has grown by more than the policy's threshold, `malloc_trim(0)`
/// releases every whole free page in every arena (`MADV_DONTNEED`; the addresses stay the allocator's, so a later
/// burst reuses them). A no-op where the C library is not glibc.
public struct HeapGiveBack: Service {
    let interval: Duration
    let threshold: Int
    let logger: Logger

    /// - Parameters:
    ///   - interval: how often to compare; a give-back costs about a millisecond per 100 MiB of heap.
    ///   - threshold: the growth of unused resident memory, in bytes, that is worth giving back.
    public init(interval: Duration = .seconds(5), threshold: Int = 2 << 20, logger: Logger) {
        self.interval = interval
        self.threshold = threshold
        self.logger = logger
    }

    public func run() async throws {
        // Stops at the group's graceful shutdown as at cancellation: there is nothing to finish.
        await cancelWhenGracefulShutdown { await watch() }
    }

    private func watch() async {
        var policy = HeapGiveBackPolicy(threshold: threshold)
        var wait = interval
        if let figures = HeapFigures.current() {
            _ = policy.shouldGiveBack(figures)
            wait = HeapGiveBackPolicy.interval(after: figures, base: interval)
        }
        while true {
            do {
                try await Task.sleep(for: wait)
            } catch {
                return
            }
            guard let figures = HeapFigures.current() else { continue }
            wait = HeapGiveBackPolicy.interval(after: figures, base: interval)
            guard policy.shouldGiveBack(figures) else { continue }
            Self.giveBack()
            guard let after = HeapFigures.current() else { continue }
            policy.gaveBack(after)
            logger.debug(
                "gave freed heap pages back",
                metadata: [
                    "anonymous_resident_before": "\(figures.anonymousResident)",
                    "anonymous_resident_after": "\(after.anonymousResident)", "in_use": "\(after.inUse)",
                ])
        }
    }

    /// Releases every whole free page of the allocator's arenas now.
    public static func giveBack() {
        #if canImport(Glibc)
            _ = malloc_trim(0)
        #endif
    }
}
