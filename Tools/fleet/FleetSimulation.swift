import Foundation
import OrreryIdentity
import Synchronization
import UnixSignals

/// Which devices were made to fail, how and when: what tells a false `suspect` from a true one.
final class FailureBook: Sendable {
    enum Kind: String, Sendable { case silent, partitioned, leaving, churn }

    struct Failure: Sendable {
        let kind: Kind
        let at: ContinuousClock.Instant
        var returnedAt: ContinuousClock.Instant?
    }

    private let failures = Mutex<[Int: Failure]>([:])

    func failed(_ device: Int, _ kind: Kind) {
        let now = ContinuousClock.now
        failures.withLock { $0[device] = Failure(kind: kind, at: now) }
    }

    func returned(_ device: Int) {
        let now = ContinuousClock.now
        failures.withLock { $0[device]?.returnedAt = now }
    }

    /// The failure device `device` is in at `time`, if any (counting a grace of `grace` after it returned, while
    /// the registry has not yet heard its first heartbeat).
    func failure(of device: Int, at time: ContinuousClock.Instant, grace: Duration) -> Failure? {
        failures.withLock { failures in
            guard let failure = failures[device], failure.at <= time else { return nil }
            if let back = failure.returnedAt, back + grace < time { return nil }
            return failure
        }
    }

    var all: [Int: Failure] { failures.withLock { $0 } }
}

/// A fleet's run: joins, goes live (heartbeats staggered over one interval), strikes its failures, churns, says how
/// it goes, and writes its report.
final class FleetSimulation: Sendable {
    let fleet: [VirtualDevice]
    let world: FleetWorld
    let options: FleetCommand
    let liveness: LivenessWatch
    let failures: FailureBook
    private let running = Mutex<[Task<Void, Never>?]>([])
    private let struck = Mutex<StruckFailures?>(nil)

    /// What the failure moment hit: the replicas running on the devices that went away.
    struct StruckFailures: Sendable {
        let at: ContinuousClock.Instant
        let wallClock: Date
        var silent: [Int] = []
        var partitioned: [Int] = []
        var leaving: [Int] = []
        /// "deployment/allocation/replica" → the device it ran on.
        var replicas: [String: Int] = [:]
    }

    init(fleet: [VirtualDevice], world: FleetWorld, options: FleetCommand, liveness: LivenessWatch) {
        self.fleet = fleet
        self.world = world
        self.options = options
        self.liveness = liveness
        failures = liveness.failures
        running.withLock { $0 = Array(repeating: nil, count: fleet.count) }
    }

    func run() async throws {
        // Trapped before anything is said: a signal sent once the ready file exists must not kill the process.
        let failureSignal = await UnixSignalsSequence(trapping: .sigusr1)
        let endSignal = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let clock = ContinuousClock()
        let started = clock.now
        let joinSeconds = try await joinAll()
        Self.say(
            "\(fleet.count) devices joined in \(String(format: "%.1f", joinSeconds)) s (\(world.counters[.joined]) joined now, the rest known)"
        )
        let joinedAt = clock.now
        try await waitUntilReady(since: joinedAt, joinSeconds: joinSeconds)
        liveness.beginMeasuring()
        // What the run measures starts now: every device heartbeating (and on its line).
        let liveAt = clock.now
        let beatsAtReady = world.counters[.heartbeats]
        await withDiscardingTaskGroup { group in
            // Each ends when the run does (cancelled); another failure is said, and the run goes on.
            func aside(_ what: String, _ work: @escaping @Sendable () async throws -> Void) {
                group.addTask {
                    do { try await work() } catch is CancellationError {} catch { Self.say("\(what): \(error)") }
                }
            }
            aside("status") { try await self.status(every: .milliseconds(Int(self.options.statusEvery * 1000))) }
            if options.silent + options.partitioned + options.leaving > 0 || options.silenceFile != nil {
                aside("failures") { try await self.failuresWhenDue(liveAt: liveAt, signal: failureSignal) }
            }
            if options.churnPerMinute > 0 { aside("churn") { try await self.churn() } }
            if options.duration > 0 {
                try? await Task.sleep(for: .milliseconds(Int(options.duration * 1000)))
            } else {
                for await _ in endSignal { break }
            }
            group.cancelAll()
        }
        let ended = clock.now
        for task in running.withLock({ $0 }) { task?.cancel() }
        try writeReport(
            joinSeconds: joinSeconds, liveSeconds: Self.seconds(ended - liveAt),
            heartbeats: world.counters[.heartbeats] - beatsAtReady, total: ended - started)
    }

    // MARK: - Joining and going live

    private func joinAll() async throws -> Double {
        let start = ContinuousClock.now
        let onlyIfMissing = options.join == .missing
        let workers = min(options.joinConcurrency, fleet.count)
        try await withThrowingDiscardingTaskGroup { group in
            for worker in 0..<workers {
                group.addTask {
                    // Worker w joins devices w, w + workers, w + 2 × workers …
                    for index in stride(from: worker, to: self.fleet.count, by: workers) {
                        let joinedNow = try await self.joinWithRetries(self.fleet[index], onlyIfMissing: onlyIfMissing)
                        // A device heartbeats from its join on; one the registry knew already starts within one
                        // interval, as devices that joined at different times would.
                        self.goLive(
                            index, after: joinedNow ? .zero : self.world.heartbeatInterval * Double.random(in: 0..<1))
                    }
                }
            }
        }
        return Self.seconds(ContinuousClock.now - start)
    }

    /// A refused or lost join is tried again (5 times, a second apart): a loaded registry answers UNAVAILABLE.
    /// Whether the device joined now (false: the registry knew it already).
    private func joinWithRetries(_ device: VirtualDevice, onlyIfMissing: Bool) async throws -> Bool {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await device.join(onlyIfMissing: onlyIfMissing)
            } catch {
                guard attempt < 5 else {
                    throw FleetError("device \(device.member.index) (\(device.did)) could not join: \(error)")
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func goLive(_ index: Int, after delay: Duration) {
        let device = fleet[index]
        let task = Task { await device.live(startingAfter: delay) }
        running.withLock { $0[index] = task }
    }

    private func goDark(_ index: Int) {
        let task = running.withLock { running -> Task<Void, Never>? in
            defer { running[index] = nil }
            return running[index]
        }
        task?.cancel()
    }

    /// Waits until every device sent a heartbeat and, with an orchestrator, opened its line; then writes the ready
    /// file.
    private func waitUntilReady(since joinedAt: ContinuousClock.Instant, joinSeconds: Double) async throws {
        let needLines = world.orchestrator != nil
        while world.counters[.devicesHeartbeating] < fleet.count
            || (needLines && world.counters[.devicesOnLine] < fleet.count)
        {
            try await Task.sleep(for: .milliseconds(100))
        }
        let liveSeconds = Self.seconds(ContinuousClock.now - joinedAt)
        Self.say("every device live (\(String(format: "%.1f", liveSeconds)) s after the last joined)")
        guard let path = options.readyFile else { return }
        let ready: [String: Any] = [
            "devices": fleet.count, "join_seconds": joinSeconds, "live_seconds": liveSeconds,
            "owners": Array(Set(fleet.map(\.member.ownerDID.string))).sorted(),
        ]
        try JSONSerialization.data(withJSONObject: ready, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: path), options: .atomic)
    }

    // MARK: - Failures

    private func failuresWhenDue(liveAt: ContinuousClock.Instant, signal: UnixSignalsSequence) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let at = options.failuresAt {
                group.addTask { try await Task.sleep(until: liveAt + .milliseconds(Int(at * 1000))) }
            }
            group.addTask {
                for await _ in signal { return }
            }
            try await group.next()
            group.cancelAll()
        }
        try await strike()
    }

    /// Silences, partitions and makes leave the fractions asked, chosen by the seed.
    private func strike() async throws {
        var random = SplitMix64(seed: options.seed &+ 0xFA11)
        // Devices named in the silence file vanish first; the fractions are drawn from the rest.
        let named = Self.named(in: options.silenceFile, among: fleet)
        let order = named + fleet.indices.shuffled(using: &random).filter { !named.contains($0) }
        let silent = Array(order.prefix(named.count + Int(Double(fleet.count) * options.silent)))
        let partitioned = Array(order.dropFirst(silent.count).prefix(Int(Double(fleet.count) * options.partitioned)))
        let leaving = Array(
            order.dropFirst(silent.count + partitioned.count).prefix(Int(Double(fleet.count) * options.leaving)))
        var struck = StruckFailures(at: .now, wallClock: Date())
        struck.silent = silent
        struck.partitioned = partitioned
        struck.leaving = leaving
        for index in silent + partitioned + leaving {
            for replica in fleet[index].runningReplicas() { struck.replicas[replica] = index }
        }
        self.struck.withLock { $0 = struck }
        for index in silent {
            failures.failed(index, .silent)
            goDark(index)
            fleet[index].vanish()
            world.counters.add(.silenced)
        }
        for index in partitioned {
            failures.failed(index, .partitioned)
            goDark(index)
            world.counters.add(.partitioned)
        }
        for index in leaving {
            failures.failed(index, .leaving)
            try? await fleet[index].leave()
            goDark(index)
            fleet[index].vanish()
        }
        Self.say(
            "failures: \(silent.count) silent, \(partitioned.count) partitioned, \(leaving.count) leaving; \(struck.replicas.count) replicas were running on them"
        )
        guard !partitioned.isEmpty else { return }
        try await Task.sleep(for: .milliseconds(Int(options.partitionSeconds * 1000)))
        for index in partitioned {
            failures.returned(index)
            goLive(index, after: .zero)
            world.counters.add(.returned)
        }
        Self.say("\(partitioned.count) partitioned devices are back")
    }

    /// The fleet's indices of the devices whose DIDs `path` lists, one a line.
    static func named(in path: String?, among fleet: [VirtualDevice]) -> [Int] {
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        let wanted = Set(text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) })
        return fleet.indices.filter { wanted.contains(fleet[$0].did) }
    }

    /// Each minute a fraction of the healthy devices leave; each comes back (joins again) a minute later.
    private func churn() async throws {
        var random = SplitMix64(seed: options.seed &+ 0xC0DE)
        while true {
            try await Task.sleep(for: .seconds(60))
            let now = ContinuousClock.now
            let healthy = fleet.indices.filter {
                failures.failure(of: $0, at: now, grace: world.heartbeatInterval * 3) == nil
            }
            let leaving = Array(
                healthy.shuffled(using: &random).prefix(Int(Double(fleet.count) * options.churnPerMinute)))
            for index in leaving {
                failures.failed(index, .churn)
                try? await fleet[index].leave()
                goDark(index)
                fleet[index].vanish()
            }
            Self.say("churn: \(leaving.count) devices left; they come back in a minute")
            Task {
                try? await Task.sleep(for: .seconds(60))
                for index in leaving {
                    _ = try? await self.fleet[index].join(onlyIfMissing: false)
                    self.failures.returned(index)
                    self.goLive(index, after: .zero)
                }
            }
        }
    }

    // MARK: - Saying how it goes

    private func status(every period: Duration) async throws {
        var last = world.counters[.heartbeats]
        var lastTime = ContinuousClock.now
        while true {
            try await Task.sleep(for: period)
            let now = ContinuousClock.now
            let beats = world.counters[.heartbeats]
            let rate = Double(beats - last) / Self.seconds(now - lastTime)
            (last, lastTime) = (beats, now)
            let c = world.counters
            Self.say(
                "heartbeats \(Int(rate))/s; offers \(c[.offers]), bids \(c[.bids]), declines \(c[.declines]), deploys \(c[.deploys]), completed \(c[.completions]), stopped \(c[.stops]), promises withdrawn \(c[.withdrawnPromises]); receipts \(c[.receiptsSigned]) signed, \(c[.receiptsRecorded]) recorded; stream failures \(c[.heartbeatStreamFailures]) heartbeat, \(c[.lineFailures]) line; \(liveness.summary)"
            )
        }
    }

    private func writeReport(joinSeconds: Double, liveSeconds: Double, heartbeats: Int, total: Duration) throws {
        var report: [String: Any] = [
            "devices": fleet.count,
            "seed": options.seed,
            "heartbeat_interval_seconds": options.heartbeatInterval,
            "join_seconds": joinSeconds,
            "live_seconds": liveSeconds,
            // Over the measured run (from every device live to the end), not the joins before it.
            "heartbeats_per_second": Double(heartbeats) / max(liveSeconds, 0.001),
            "counters": world.counters.snapshot,
            "liveness": liveness.report(),
            "connections": [
                "registry": world.registry.connections, "orchestrator": world.orchestrator?.connections ?? 0,
            ],
            "peak_rss_bytes": Self.peakResidentBytes(),
        ]
        if let struck = struck.withLock({ $0 }) { report["mass_event"] = massEvent(struck) }
        let counters = world.counters
        Self.say(
            "ended: \(fleet.count) devices, \(counters[.heartbeats]) heartbeats, \(counters[.deploys]) deploys, \(counters[.completions]) completed, \(counters[.receiptsRecorded]) receipts recorded; \(liveness.summary)"
        )
        guard let path = options.report else { return }
        try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted]).write(
            to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// For each replica running on a device that went away: how long until it was deployed on another device, and
    /// whether it was deployed yet again after that (a second move — e.g. when its partitioned device came back).
    private func massEvent(_ struck: StruckFailures) -> [String: Any] {
        let journal = world.journal.all
        var delays: [Double] = []
        var notMoved: [String] = []
        var secondMoves: [String] = []
        for (replica, device) in struck.replicas {
            let after = (journal[replica] ?? []).filter { $0.at > struck.at && $0.device != device }
            guard let first = after.first else {
                notMoved.append(replica)
                continue
            }
            delays.append(Self.seconds(first.at - struck.at))
            if after.count > 1 { secondMoves.append(replica) }
        }
        delays.sort()
        func quantile(_ q: Double) -> Double {
            delays.isEmpty ? 0 : delays[min(delays.count - 1, Int(Double(delays.count) * q))]
        }
        return [
            "struck_at": ISO8601DateFormatter().string(from: struck.wallClock),
            "silent": struck.silent.count, "partitioned": struck.partitioned.count, "leaving": struck.leaving.count,
            "replicas_running_on_them": struck.replicas.count,
            "moved": delays.count, "not_moved": notMoved.count, "second_moves": secondMoves.count,
            "move_seconds_p50": quantile(0.5), "move_seconds_p99": quantile(0.99), "move_seconds_max": delays.last ?? 0,
        ]
    }

    static func peakResidentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func say(_ line: String) {
        FileHandle.standardError.write(Data("[fleet] \(line)\n".utf8))
    }
}
