internal import Metrics
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import Synchronization

/// Liveness: heartbeats are gathered from every stream and written in one statement per flush; a sweeper moves
/// silent devices to `suspect` after 2 missed intervals and `offline` after 3, and a heartbeat brings one back
/// `online`. Every transition is a change-log entry.
///
/// Devices are judged only on silence this replica was able to observe: after its start, after a stall of its own
/// (the process paused, the host frozen: a watch that wakes every 100 ms woke up late) and after its database came
/// back, every device gets a full grace period again, plus `reconnectAllowance` — the time a device whose stream
/// broke meanwhile needs to reconnect, prove its delegation and have a heartbeat written. Heartbeats that could not be
/// written are kept and written with the next flush.
final class Liveness: Sendable {
    private let client: PostgresClient
    private let logger: Logger
    private let interval: Duration
    /// When this replica last began observing (its sweeper started, or it recovered from a stall or a database
    /// outage), plus `reconnectAllowance`: no device is judged on silence older than this.
    private let observingSince = Mutex(Date())
    /// When the process was last seen running (`ranWithoutStall`).
    private let lastTick = Mutex(ContinuousClock.now)
    private let pending = Mutex<[String: Orrery_Registry_V1_Heartbeat]>([:])
    /// The flush or sweep under way and since when (nil between passes), for the stall watch to report one that
    /// waits on the database far longer than it should.
    private let passUnderWay = Mutex<(phase: String, since: ContinuousClock.Instant, reported: Bool)?>(nil)

    init(client: PostgresClient, logger: Logger, interval: Duration) {
        self.client = client
        self.logger = logger
        self.interval = interval
    }

    /// How much longer than the usual limits a device has after observation (re)begins: its agent reconnects within
    /// one interval (its backoff's cap), then opens a connection, proves its delegation (a capability check and a
    /// replay-guard write) and its heartbeat waits for the next flush — seconds on a loaded host, whatever the interval.
    static let reconnectAllowance: Duration = .seconds(5)

    /// Begins observation now: no device is judged on silence before now plus `reconnectAllowance`.
    private func beginObserving() {
        let allowance = Self.reconnectAllowance.components
        let seconds = Double(allowance.seconds) + Double(allowance.attoseconds) / 1e18
        observingSince.withLock { $0 = Date(timeIntervalSinceNow: seconds) }
    }

    /// Heartbeats received (`/metrics`).
    static let heartbeats = Counter(label: "orrery_heartbeats_total")

    /// Queues a heartbeat for the next flush (the latest one of a device wins).
    func record(_ heartbeat: Orrery_Registry_V1_Heartbeat) {
        Self.heartbeats.increment()
        pending.withLock { $0[heartbeat.deviceDid] = heartbeat }
    }

    /// Flushes queued heartbeats every 100 ms and sweeps every quarter interval (a dead device is offline at most a
    /// quarter interval after its third missed heartbeat), until cancelled. Observation begins once the registry
    /// serves (`serving`): a device cannot reach a registry that does not listen yet. Beside it, a watch that does
    /// nothing but wake every 100 ms notices a stall of the process however long a flush or sweep was waiting.
    func run(from serving: ServingSignal = ServingSignal(serving: true)) async {
        await serving.wait()
        beginObserving()
        lastTick.withLock { $0 = ContinuousClock.now }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchForStalls() }
            await self.flushAndSweep()
            group.cancelAll()
        }
        try? await flush()
    }

    private func flushAndSweep() async {
        var lastSweep = ContinuousClock.now
        var failing = false
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            do {
                let asked = ContinuousClock.now
                try await underWay("flush") { try await self.flush() }
                // A flush the database kept waiting (down: the pool waits for a connection rather than failing) for
                // longer than the sweep's own limit: the heartbeats that arrived meanwhile were not written, so that
                // time is not silence this replica observed.
                if ContinuousClock.now - asked > databaseWaitLimit {
                    beginObserving()
                    logger.warning(
                        "the database kept the liveness flush waiting; every device gets a full grace period again",
                        metadata: ["waited": "\(ContinuousClock.now - asked)"])
                }
                if ContinuousClock.now - lastSweep >= interval / 4 {
                    // After a failure, the first sweep the database answers judges nobody and begins observation
                    // again: what happened while it did not answer is not silence this replica observed.
                    let resuming = failing
                    try await underWay("sweep") { try await self.sweep(resumingAfterFailure: resuming) }
                    failing = false
                    lastSweep = ContinuousClock.now
                }
            } catch {
                if Task.isCancelled { break }
                failing = true
                logger.warning("liveness pass failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func watchForStalls() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            _ = ranWithoutStall()
            reportLongPass()
        }
    }

    /// Runs one phase of a pass, noted for `reportLongPass`, and gives it up after `passLimit` as a failed pass: the
    /// next one the database answers then judges nobody and begins observation again, instead of the loop waiting on
    /// it indefinitely. A pass given up is cancelled but not waited for (a query already sent to a database that
    /// hangs cannot be called back); should it reach the database later, its judgement is refused there
    /// (`sweep`'s deadline).
    private func underWay(_ phase: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        passUnderWay.withLock { $0 = (phase, ContinuousClock.now, false) }
        defer { passUnderWay.withLock { $0 = nil } }
        let limit = passLimit
        let (outcomes, outcome) = AsyncStream<Result<Void, any Error>?>.makeStream(bufferingPolicy: .bufferingOldest(1))
        let work = Task {
            do {
                try await body()
                outcome.yield(.success(()))
            } catch {
                outcome.yield(.failure(error))
            }
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            outcome.yield(nil)
        }
        var first: Result<Void, any Error>?
        for await answer in outcomes {
            first = answer
            break
        }
        timer.cancel()
        guard let first else {
            work.cancel()
            // No answer because the registry stops (the wait was cancelled), not because the limit passed.
            if Task.isCancelled { throw CancellationError() }
            throw PassGivenUp(phase: phase, limit: limit)
        }
        try first.get()
    }

    /// How long one flush or sweep may wait on the database before it is given up.
    private var passLimit: Duration { max(interval * 2, .seconds(10)) }

    private var passLimitSeconds: TimeInterval {
        let parts = passLimit.components
        return TimeInterval(parts.seconds) + TimeInterval(parts.attoseconds) / 1e18
    }

    /// A flush or sweep waited on the database longer than `passLimit`.
    struct PassGivenUp: Error, CustomStringConvertible {
        let phase: String
        let limit: Duration
        var description: String { "the \(phase) waited on the database for \(limit): given up" }
    }

    /// Logs, once per pass, a flush or sweep that has waited longer than an interval (at least 5 s): nobody is
    /// judged while it waits, which an operator should see rather than guess.
    private func reportLongPass() {
        let limit = max(interval, .seconds(5))
        let long = passUnderWay.withLock { pass -> (String, Duration)? in
            guard let current = pass, !current.reported, ContinuousClock.now - current.since > limit else { return nil }
            pass?.reported = true
            return (current.phase, ContinuousClock.now - current.since)
        }
        guard let (phase, waited) = long else { return }
        logger.warning(
            "the liveness \(phase) has been waiting on the database; nobody is judged meanwhile",
            metadata: ["waited": "\(waited)"])
    }

    /// Notes that the process runs now. False when it had not run for longer than the stall limit (paused, the host
    /// frozen): then observation begins again, and every device gets a full grace period.
    private func ranWithoutStall() -> Bool {
        let now = ContinuousClock.now
        let limit = Self.stallLimit(interval: interval)
        let gap = lastTick.withLock { last -> Duration in
            defer { last = now }
            return now - last
        }
        guard gap > limit else { return true }
        beginObserving()
        logger.warning(
            "liveness stalled; every device gets a full grace period again", metadata: ["stalled": "\(gap)"])
        return false
    }

    /// How late the 100 ms watch may wake before the registry counts itself stalled: half an interval, at least 1 s.
    /// How long a flush or sweep may wait on the database before that wait counts as an outage (observation begins
    /// again once it ends); a shorter wait, as on a loaded machine, is within a judgement's own margin.
    private var databaseWaitLimit: Duration { max(interval, .seconds(2)) }

    static func stallLimit(interval: Duration) -> Duration {
        max(interval / 2, .seconds(1))
    }

    /// Writes every queued heartbeat in one statement; devices that come back are marked online in the change log.
    func flush() async throws {
        let batch = pending.withLock { pending -> [Orrery_Registry_V1_Heartbeat] in
            defer { pending.removeAll(keepingCapacity: true) }
            return Array(pending.values)
        }
        guard !batch.isEmpty else { return }
        do {
            try await write(batch)
        } catch {
            // Kept for the next flush, unless a newer heartbeat of the same device arrived meanwhile.
            pending.withLock { pending in
                for heartbeat in batch where pending[heartbeat.deviceDid] == nil {
                    pending[heartbeat.deviceDid] = heartbeat
                }
            }
            throw error
        }
    }

    private func write(_ batch: [Orrery_Registry_V1_Heartbeat]) async throws {
        let dids = batch.map(\.deviceDid)
        let cpu = batch.map { Int64($0.freeCpuMillicores) }
        let ram = batch.map { Int64(clamping: $0.freeRamBytes) }
        let disk = batch.map { Int64(clamping: $0.freeDiskBytes) }
        let gpus = batch.map { Int64($0.freeGpus) }
        let revived = try await client.transaction(logger: logger) { connection -> [String] in
            let rows = try await connection.query(
                """
                WITH beat AS (
                    SELECT * FROM unnest(\(dids)::text[], \(cpu)::bigint[], \(ram)::bigint[], \(disk)::bigint[], \(gpus)::bigint[])
                        AS b(did, cpu, ram, disk, gpus)
                ), previous AS (
                    SELECT d.did, d.status FROM devices d JOIN beat USING (did) WHERE d.status <> 'left' FOR UPDATE OF d
                )
                UPDATE devices d SET
                    last_heartbeat_at = now(), status = 'online', free_cpu_millicores = beat.cpu,
                    free_ram_bytes = beat.ram, free_disk_bytes = beat.disk, free_gpus = beat.gpus
                FROM beat, previous
                WHERE d.did = beat.did AND previous.did = d.did
                RETURNING d.did, previous.status
                """,
                logger: logger)
            var revived: [String] = []
            for try await (did, previous) in rows.decode((String, String).self) where previous != "online" {
                revived.append(did)
            }
            if !revived.isEmpty {
                try await connection.query("SELECT pg_advisory_xact_lock(\(DeviceStore.changeLogLock))", logger: logger)
                for did in revived {
                    _ = try await DeviceStore.recordChange(
                        did: did, kind: .status, connection: connection, logger: logger)
                }
            }
            return revived
        }
        for did in revived { logger.info("device online again", metadata: ["device": "\(did)"]) }
        if !revived.isEmpty {
            Counter(label: "orrery_device_status_changes_total", dimensions: [("status", "online")]).increment(
                by: revived.count)
        }
    }

    /// Moves silent devices along online → suspect → offline. One replica sweeps at a time. `resumingAfterFailure`:
    /// the last pass failed, so this one only begins observation again, at the moment the database answers.
    func sweep(resumingAfterFailure: Bool = false) async throws {
        let milliseconds = interval.components.seconds * 1000 + interval.components.attoseconds / 1_000_000_000_000_000
        let asked = ContinuousClock.now
        // When the pass is given up: a judgement that reaches the database later (it hung on the way) judges nobody.
        let deadline = Date().addingTimeInterval(passLimitSeconds)
        let waitLimit = databaseWaitLimit
        try await client.transaction(logger: logger) { connection in
            // A sweep the database kept waiting (down, or hanging) for more than an interval judges nobody on that
            // wait: heartbeats that arrived meanwhile are still queued, and its judgement would be of the moment it
            // finally began. (A shorter wait, as on a loaded machine, is within the judgement's own margin.)
            if ContinuousClock.now - asked > waitLimit {
                beginObserving()
                logger.warning(
                    "the database kept the liveness sweep waiting; every device gets a full grace period again",
                    metadata: ["waited": "\(ContinuousClock.now - asked)"])
                return
            }
            if resumingAfterFailure {
                beginObserving()
                logger.info("the database answers again; every device gets a full grace period")
                return
            }
            // Judged as of this transaction's start (`now()`), from when observation last began — unless the process
            // was stalled just now and the watch has not noticed yet (both woke together): then nobody is judged.
            guard ranWithoutStall() else { return }
            let startedAt = observingSince.withLock { $0 }
            let locked = try await connection.query(
                "SELECT pg_try_advisory_xact_lock(\(DeviceStore.changeLogLock + 1))", logger: logger)
            var mine = false
            for try await value in locked.decode(Bool.self) { mine = value }
            guard mine else { return }
            let rows = try await connection.query(
                """
                WITH silent AS (
                    SELECT did,
                        CASE WHEN now() - greatest(last_heartbeat_at, \(startedAt)) > \(3 * milliseconds) * interval '1 millisecond'
                             THEN 'offline' ELSE 'suspect' END AS next
                    FROM devices
                    WHERE status IN ('online', 'suspect')
                      AND now() - greatest(last_heartbeat_at, \(startedAt)) > \(2 * milliseconds) * interval '1 millisecond'
                      AND clock_timestamp() < \(deadline)
                    FOR UPDATE
                )
                UPDATE devices d SET status = silent.next FROM silent
                WHERE d.did = silent.did AND d.status <> silent.next
                RETURNING d.did, d.status
                """,
                logger: logger)
            var changed: [(String, String)] = []
            for try await row in rows.decode((String, String).self) { changed.append(row) }
            guard !changed.isEmpty else { return }
            try await connection.query("SELECT pg_advisory_xact_lock(\(DeviceStore.changeLogLock))", logger: logger)
            for (did, status) in changed {
                _ = try await DeviceStore.recordChange(did: did, kind: .status, connection: connection, logger: logger)
                logger.info("device \(status)", metadata: ["device": "\(did)"])
                Counter(label: "orrery_device_status_changes_total", dimensions: [("status", status)]).increment()
            }
        }
    }
}
