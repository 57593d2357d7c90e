internal import Metrics
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryActors
internal import OrreryBasics
internal import OrreryData
internal import Logging
internal import OrreryLedger
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// The allocations this device runs for the orchestrator: starts them on Deploy, stops them on Stop, follows each
/// to its end and reports up the agent channel — "running", its output as it grows, its declared outputs and how
/// it ended. The allocation directories are the journal: after a restart or a reconnect, `resync` picks up every
/// allocation still running and repeats every final report, so nothing is lost or started twice.
actor ExecutionManager {
    let runner: AllocationRunner
    let ledger: CommitmentLedger
    let logger: Logger
    /// The signed usage and completion receipts of allocations under contract; nil signs none.
    let receipts: ReceiptBook?
    /// The last notary tree head this device verified.
    let witness: TreeHeadWitness?
    /// How often a running allocation's usage is receipted.
    let receiptInterval: Duration
    /// The allocations as actors: keys, mailboxes, checkpoints; nil runs them without (tests of the runner alone).
    let actors: ActorDesk?
    /// The open lines to orchestrators; every message leaves through them.
    let lines: AgentLines
    private var following: Set<String> = []
    /// Allocations whose start is under way (a Deploy received twice at once starts one).
    private var starting: Set<String> = []
    /// Outputs on their way to the orchestrator's content store, by offer and path.
    private var storeUploads: [String: StoreUpload] = [:]
    /// Stops that arrived while their allocation was starting, carried out once it started.
    private var stopsWhileStarting: [String: Orrery_Orchestrator_V1_Stop] = [:]
    /// The orchestrator (DID) that placed each allocation, as journalled in its directory.
    private var placedBy: [String: String] = [:]
    /// Resends the final reports of ended allocations whose receipts the notary has not recorded yet.
    private var receiptRetries: Task<Void, Never>?
    /// The health of each running allocation whose spec has a check.
    private var health: [String: HealthTracker] = [:]
    /// Runs health checks inside sandboxes.
    let probe: SandboxProbe
    /// Connections into sandboxes asked for over the lines (port-forwards).
    let tunnels: SandboxTunnels
    /// Sandboxes' connections to their ensemble partners.
    let ensemble: EnsembleListeners
    /// Commands run inside sandboxes asked for over the lines (`orrery exec`).
    let execs: SandboxExec

    init(
        runner: AllocationRunner, ledger: CommitmentLedger, logger: Logger, receipts: ReceiptBook? = nil,
        witness: TreeHeadWitness? = nil, receiptInterval: Duration = .seconds(60), actors: ActorDesk? = nil,
        lines: AgentLines = AgentLines(), probe: SandboxProbe = SandboxProbe(), allowExec: Bool = true,
        connectionLimit: Int = 2048
    ) {
        self.probe = probe
        self.execs = SandboxExec(
            runner: runner, logger: logger, key: receipts?.key, contract: { receipts?.contract($0) ?? "" },
            allowed: allowExec)
        self.tunnels = SandboxTunnels(runner: runner, logger: logger, limit: connectionLimit)
        self.ensemble = EnsembleListeners(runner: runner, connector: tunnels.connector, logger: logger)
        self.actors = actors
        self.runner = runner
        self.ledger = ledger
        self.logger = logger
        self.receipts = receipts
        self.witness = witness
        self.receiptInterval = receiptInterval
        self.lines = lines
    }

    /// A line to an orchestrator opened: reports go to it, starting with everything it may have missed, and it
    /// hears what this device holds for it.
    func attach(_ line: UUID, orchestrator: String) async {
        resync()
        await sendInventory(on: line, orchestrator: orchestrator)
        resendUnloggedExecRecords()
        if receiptRetries == nil, receipts != nil {
            let interval = receiptInterval / 2
            receiptRetries = Task { [weak self, logger] in
                let manager = WeakReference(self)
                await PeriodicWork("resending unrecorded receipts", every: interval, pausesFirst: true, logger: logger)
                {
                    guard let self = manager.value else { throw CancellationError() }
                    await self.resendUnrecordedReceipts()
                }.run()
            }
        }
    }

    /// Ended allocations whose receipts the notary has not recorded (it was unreachable, or refused them for now):
    /// their final report goes again, with the receipts, every half receipt interval — not only when a line
    /// reconnects — so no escrow waits on a reconnect to be released. (A running allocation's receipts go with its
    /// next usage report.)
    func resendUnrecordedReceipts() {
        resendUnloggedExecRecords()
        guard let receipts else { return }
        for id in held() where !starting.contains(id) && !following.contains(id) {
            guard let report = savedReport(for: id), !receipts.pending(id).isEmpty else { continue }
            sendReport(report)
        }
    }

    /// Exec sessions' records no orchestrator confirmed logged: again to each one's allocation's orchestrator.
    func resendUnloggedExecRecords() {
        for (offer, record) in execs.pendingRecords() { send(.with { $0.execRecord = record }, about: offer) }
    }

    /// A line dropped: the other lines stay open and get again what the dropped one may have lost.
    func detach(_ line: UUID) {
        if lines.close(line) { resync() }
    }

    /// Tells the orchestrator on `line` which of its allocations run here and which of its offers hold promised
    /// capacity; it stops what it no longer assigns to this device.
    func sendInventory(on line: UUID, orchestrator: String) async {
        let running = runner.known().filter {
            savedReport(for: $0) == nil && self.orchestrator(of: $0) == orchestrator
        }
        let promised = await ledger.promised(to: orchestrator).filter { !runner.isKnown($0) && !starting.contains($0) }
        lines.send(
            .with {
                $0.inventory = .with {
                    $0.runningOfferIds = Array(running.prefix(10_000))
                    $0.promisedOfferIds = Array(promised.prefix(10_000))
                }
            }, on: line)
    }

    /// Whether any offer this device bid on waits for its Deploy (the inventory is then sent more often).
    func awaitsDeploys(from orchestrator: String) async -> Bool {
        !(await ledger.promised(to: orchestrator).filter { !runner.isKnown($0) }.isEmpty)
    }

    /// The orchestrator that placed `id` (nil for an allocation started before this was journalled).
    private func orchestrator(of id: String) -> String? {
        if let known = placedBy[id] { return known }
        guard
            let text = try? String(contentsOfFile: runner.directory(id) + "/orchestrator", encoding: .utf8),
            !text.isEmpty
        else { return nil }
        placedBy[id] = text
        return text
    }

    private func send(_ message: Orrery_Orchestrator_V1_AgentMessage, about id: String) {
        lines.send(message, to: orchestrator(of: id))
    }

    /// A report on `id` with the receipts the notary has not recorded yet.
    private func sendReport(_ report: Orrery_Orchestrator_V1_AllocationReport) {
        var report = report
        report.receipts = receipts?.pending(report.offerID) ?? []
        report.knownTreeSize = witness?.knownSize ?? 0
        send(.with { $0.report = report }, about: report.offerID)
    }

    /// The notary recorded receipts: forget them, and check its tree head against the last one seen.
    func receiptsRecorded(_ recorded: Orrery_Orchestrator_V1_ReceiptsRecorded) {
        guard runner.isKnown(recorded.offerID) else { return }
        do {
            try receipts?.acknowledge(recorded.offerID, through: recorded.throughSequence)
        } catch {
            logger.error(
                "cannot journal acknowledged receipts", metadata: ["offer": "\(recorded.offerID)", "error": "\(error)"])
        }
        guard let witness, recorded.hasTreeHead else { return }
        do {
            let head = try witness.observe(
                recorded.treeHead, consistency: recorded.hasConsistency ? recorded.consistency : nil)
            logger.info("notary tree head verified", metadata: ["size": "\(head.treeSize)"])
        } catch let error as TreeHeadError where !error.isEvidence {
            // A head that crossed a newer one in flight: nothing to judge; the next report asks from the size known.
            logger.info("a notary tree head was not checked", metadata: ["why": "\(error)"])
        } catch {
            // The log this device's receipts are in is not the one it saw before: report it loudly, keep the old head.
            logger.critical(
                "the notary's log is not consistent with what this device saw before",
                metadata: ["error": "\(error)", "offer": "\(recorded.offerID)"])
        }
    }

    /// Takes a Deploy from the orchestrator `orchestrator` (its DID) in the order its line delivered it, before the
    /// start (which takes a while) goes on in `start`; returns whether it must. Idempotent by offer: a repeated
    /// Deploy — resent after a reconnect, or sent by two orchestrator replicas at once — starts nothing again and
    /// repeats what is known of it.
    func receive(_ deploy: Orrery_Orchestrator_V1_Deploy) -> Bool {
        let id = deploy.offerID
        if starting.contains(id) {
            logger.info(
                "a repeated deploy of an allocation still starting: nothing more to do", metadata: ["offer": "\(id)"])
            return false
        }
        if runner.isKnown(id) || savedReport(for: id) != nil {
            logger.info(
                "a repeated deploy of a known allocation: reporting what is known", metadata: ["offer": "\(id)"])
            resync()
            return false
        }
        guard AllocationRunner.isSafeID(id) else {
            logger.warning("a deploy with an unusable offer id refused", metadata: ["offer": "\(id.prefix(80))"])
            return false
        }
        starting.insert(id)
        CrashPoint.reach("agent.deploy-received", logger: logger)
        return true
    }

    /// A private image's pull token, opened with the device's key (it was sealed to it); nil for a public image.
    /// Kept in memory for the pull only: never journalled, never logged.
    private func pullToken(of deploy: Orrery_Orchestrator_V1_Deploy) throws -> String? {
        guard !deploy.imagePullToken.isEmpty else { return nil }
        return try opened(deploy.imagePullToken, what: "the image's pull token")
    }

    /// The consumer and its s3:// inputs' presigned URLs, opened with the device's key; like pull tokens, kept in
    /// memory for the fetch only.
    private func dataAccess(of deploy: Orrery_Orchestrator_V1_Deploy) throws -> AllocationRunner.DataAccess {
        var access = AllocationRunner.DataAccess(consumer: deploy.consumerDid)
        for (name, box) in deploy.inputUrls {
            access.inputURLs[name] = try opened(box, what: "the presigned URL of input \(name.prefix(63))")
        }
        for (name, box) in deploy.inputTokens {
            access.inputTokens[name] = try opened(box, what: "the pull token of input \(name.prefix(63))")
        }
        return access
    }

    /// A sealed box to this device opened with its key.
    private func opened(_ box: Data, what: String) throws -> String {
        guard let key = receipts?.key else {
            throw RunnerError(message: "\(what) cannot be opened: this agent holds no device key")
        }
        do {
            return String(decoding: try SealedBox.open(Array(box), with: key), as: UTF8.self)
        } catch {
            throw RunnerError(message: "\(what) does not open with this device's key: \(error)")
        }
    }

    /// `receive`, then `start` when it must.
    func deploy(_ deploy: Orrery_Orchestrator_V1_Deploy, from orchestrator: String) async {
        if receive(deploy) { await start(deploy, from: orchestrator) }
    }

    /// Starts a received Deploy's allocation and reports it running, or failed to start.
    func start(_ deploy: Orrery_Orchestrator_V1_Deploy, from orchestrator: String) async {
        let id = deploy.offerID
        let received = ContinuousClock.now
        defer { starting.remove(id) }
        // A start the agent did not finish before it died left a directory without a workload: begin afresh.
        try? FileManager.default.removeItem(atPath: runner.directory(id))
        placedBy[id] = orchestrator
        do {
            try FileManager.default.createDirectory(atPath: runner.directory(id), withIntermediateDirectories: true)
            try orchestrator.write(toFile: runner.directory(id) + "/orchestrator", atomically: true, encoding: .utf8)
            try EnsembleListeners.prepare(deploy.peers, in: runner.directory(id))
            if !deploy.spec.outputsTo.isEmpty {
                try runner.saveOutputDestinations(id, try Self.outputDestinations(of: deploy))
            }
            if let receipts, !deploy.contractID.isEmpty {
                try receipts.setContract(id, contract: deploy.contractID)
            }
            let actor = try await actors?.prepare(deploy)
            // The mailbox listens before the workload starts.
            await actors?.open(id, spec: deploy.spec)
            do {
                try await runner.start(
                    id, spec: deploy.spec, actor: actor, pullToken: try pullToken(of: deploy),
                    data: try dataAccess(of: deploy))
            } catch {
                await actors?.close(id)
                throw error
            }
            Metrics.Timer(label: "orrery_sandbox_start_seconds").record(duration: received.duration(to: .now))
            logger.info("allocation started", metadata: ["offer": "\(id)", "allocation": "\(deploy.allocation)"])
            CrashPoint.reach("agent.started", logger: logger)
            follow(id)
            sendReport(runningReport(id))
            starting.remove(id)
            if let stop = stopsWhileStarting.removeValue(forKey: id) { await self.stop(stop) }
        } catch {
            logger.warning("allocation failed to start", metadata: ["offer": "\(id)", "error": "\(error)"])
            let report = Orrery_Orchestrator_V1_AllocationReport.with {
                $0.offerID = id
                $0.state = .failedToStart
                $0.reason = "\(error)"
            }
            save(report, for: id)
            await releasePromise(id)
            sendReport(report)
            stopsWhileStarting[id] = nil
        }
    }

    /// Stops an allocation; for an offer that was accepted but never deployed, frees the capacity promised to it.
    func stop(_ stop: Orrery_Orchestrator_V1_Stop) async {
        if starting.contains(stop.offerID) {
            stopsWhileStarting[stop.offerID] = stop
            return
        }
        guard runner.isKnown(stop.offerID) else {
            guard await ledger.contains(stop.offerID) else { return }
            logger.info(
                "promise withdrawn", metadata: ["offer": "\(stop.offerID)", "reason": "\(stop.reason)"])
            await releasePromise(stop.offerID)
            return
        }
        guard savedReport(for: stop.offerID) == nil else { return }  // it ended already
        logger.info("allocation stopped", metadata: ["offer": "\(stop.offerID)", "reason": "\(stop.reason)"])
        receipts?.markStopped(stop.offerID)
        runner.stop(
            stop.offerID, reason: stop.reason.isEmpty ? "stopped by the orchestrator" : "stopped: \(stop.reason)")
    }

    /// Repeats final reports (with outputs and the last MiB of output), follows what still runs and repeats its
    /// last MiB of output.
    func resync() {
        for id in held() where !starting.contains(id) {
            if let report = savedReport(for: id) {
                resendLogs(id)
                if report.state == .exited { sendOutputs(id) }
                sendReport(report)
            } else if !following.contains(id) {
                if let actors, let spec = try? runner.spec(id) { Task { await actors.open(id, spec: spec) } }
                follow(id)
            } else {
                // What the follower sent while the line was down is lost: the tail again (the orchestrator keeps
                // only the bytes it does not have).
                resendLogs(id)
                sendReport(runningReport(id))
            }
        }
    }

    /// Every allocation this device started, or failed to start, by offer id.
    private func held() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: runner.root)) ?? []).filter {
            runner.isKnown($0) || FileManager.default.fileExists(atPath: runner.directory($0) + "/report.pb")
        }.sorted()
    }

    private func follow(_ id: String) {
        following.insert(id)
        if let spec = try? runner.spec(id), spec.hasHealth { superviseHealth(id, check: spec.health) }
        Gauge(label: "orrery_agent_allocations_running").record(following.count)
        if receipts != nil { Task { await self.receiptUsage(of: id) } }
        ensemble.serve(id, orchestrator: orchestrator(of: id) ?? "")
        let gauges = AllocationGauges(id: id, allocation: (try? runner.spec(id))?.name ?? "")
        Task { [weak self, logger] in
            let manager = WeakReference(self)
            await PeriodicWork("metering an allocation for /metrics", every: .seconds(5), logger: logger) {
                guard let self = manager.value, await self.isFollowing(id) else {
                    gauges.remove()
                    throw CancellationError()
                }
                gauges.record(self.runner)
            }.run()
        }
        let runner = runner
        let key = receipts?.key
        Task {
            let spec = try? runner.spec(id)
            let seconds = Int(spec?.maxDurationSeconds ?? 0)
            var monitor = AllocationMonitor(runner: runner)
            if let key {
                monitor.openSealed = { String(decoding: try SealedBox.open(Array($0), with: key), as: UTF8.self) }
            }
            do {
                let outcome = try await monitor.follow(
                    id, startedAt: runner.startedAt(id), maxDuration: seconds == 0 ? nil : .seconds(seconds)
                ) { stream, offset, data in
                    await self.send(Self.logMessage(id, stream: stream, offset: offset, data: data), about: id)
                }
                await self.finish(id, outcome)
            } catch {
                await self.finish(
                    id,
                    AllocationOutcome(
                        exitCode: 1, reason: "the agent lost track of it: \(error)", usage: MeteredUsage(),
                        wallSeconds: 0, outputs: [], missingOutputs: []))
            }
        }
    }

    private func isFollowing(_ id: String) -> Bool { following.contains(id) }

    /// A running report: with the replica's health when its spec has a check (starting: not yet running for the
    /// orchestrator).
    private func runningReport(_ id: String) -> Orrery_Orchestrator_V1_AllocationReport {
        .with {
            $0.offerID = id
            $0.state = .running
            if let tracker = health[id] { $0.health = tracker.health }
        }
    }

    /// Checks `id`'s health on its schedule while it runs (`HealthTracker` decides): reports every change, restarts
    /// it in place when it turns unhealthy, and stops it once its restarts are used up so that it runs elsewhere.
    /// What it observed is journalled (`health.pb`), so a restarted agent goes on counting its restarts.
    private func superviseHealth(_ id: String, check: Orrery_Orchestrator_V1_HealthCheck) {
        guard health[id] == nil else { return }
        let policy = HealthTracker.Policy(check)
        let earlier = savedHealth(id)
        health[id] = HealthTracker(
            policy: policy, startedAt: earlier == nil ? runner.startedAt(id) : Date(), restoring: earlier)
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: policy.interval)
                guard let self, await self.isFollowing(id) else { return }
                await self.checkHealth(id, check: check, policy: policy)
            }
        }
    }

    /// One check of `id` and what follows from it.
    private func checkHealth(
        _ id: String, check: Orrery_Orchestrator_V1_HealthCheck, policy: HealthTracker.Policy
    ) async {
        let result: HealthProbeClient.Result
        if case .exec(let exec) = check.probe {
            result = await execs.probe(id, command: exec.command, timeout: policy.timeout)
        } else if let member = SandboxProbe.networkMember(among: runner.processes(id)) {
            result = await probe.run(check, timeout: policy.timeout, member: member)
        } else {
            result = .init(passed: false, detail: "no process of its sandbox runs")
        }
        guard following.contains(id), runner.stopReason(id) == nil, var tracker = health[id] else { return }
        let action = result.passed ? tracker.passed(at: Date()) : tracker.failed(at: Date(), reason: result.detail)
        health[id] = tracker
        saveHealth(tracker.health, for: id)
        switch action {
        case .none:
            return
        case .report:
            logger.info(
                "allocation health changed",
                metadata: ["offer": "\(id)", "health": "\(tracker.health.status)", "check": "\(result.detail)"])
        case .restart:
            logger.warning(
                "restarting an unhealthy allocation in place",
                metadata: [
                    "offer": "\(id)", "restart": "\(tracker.health.restarts)", "of": "\(policy.maxRestarts)",
                    "check": "\(result.detail)",
                ])
            // Its sandbox's network goes with it: the connector serving it goes too.
            tunnels.connector.forget(id)
            do {
                try await runner.restart(id)
            } catch {
                // Not restarted: it cannot be healthy here, so it goes as one whose restarts are used up would.
                logger.error("cannot restart an allocation", metadata: ["offer": "\(id)", "error": "\(error)"])
                guard var failed = health[id] else { return }
                failed.couldNotRestart()
                health[id] = failed
                saveHealth(failed.health, for: id)
                runner.stop(
                    id, reason: "unhealthy: \(result.detail), and it could not be restarted in place: \(error)")
                return
            }
            guard following.contains(id), var restarted = health[id] else { return }
            restarted.started(at: Date())
            health[id] = restarted
            saveHealth(restarted.health, for: id)
        case .giveUp:
            logger.warning(
                "stopping an allocation that stays unhealthy: it is to run on another device",
                metadata: ["offer": "\(id)", "restarts": "\(tracker.health.restarts)", "check": "\(result.detail)"])
            runner.stop(
                id,
                reason:
                    "unhealthy: \(result.detail) (\(policy.unhealthyThreshold) checks in a row, after "
                    + "\(tracker.health.restarts) restart(s) in place)")
            return
        }
        sendReport(runningReport(id))
    }

    private func saveHealth(_ health: Orrery_Orchestrator_V1_ReplicaHealth, for id: String) {
        do {
            try Data(try health.serializedBytes() as [UInt8]).write(
                to: URL(fileURLWithPath: runner.directory(id) + "/health.pb"), options: .atomic)
        } catch {
            logger.warning("cannot journal an allocation's health", metadata: ["offer": "\(id)", "error": "\(error)"])
        }
    }

    private func savedHealth(_ id: String) -> Orrery_Orchestrator_V1_ReplicaHealth? {
        guard let data = FileManager.default.contents(atPath: runner.directory(id) + "/health.pb") else { return nil }
        return try? Orrery_Orchestrator_V1_ReplicaHealth(serializedBytes: data)
    }

    /// While `id` runs, a signed usage receipt every `receiptInterval`, sent with a running report.
    private func receiptUsage(of id: String) async {
        while true {
            try? await Task.sleep(for: receiptInterval)
            guard following.contains(id), let receipts else { return }
            let spec = try? runner.spec(id)
            let usage = DeviceSignatures.usage(
                cpuSeconds: runner.usage(id).cpuSeconds, wallSeconds: Date().timeIntervalSince(runner.startedAt(id)),
                spec: spec)
            do {
                guard try receipts.issueUsage(id, usage: usage) != nil else { return }
            } catch {
                logger.error("cannot sign a usage receipt", metadata: ["offer": "\(id)", "error": "\(error)"])
                continue
            }
            sendReport(runningReport(id))
        }
    }

    private func finish(_ id: String, _ outcome: AllocationOutcome) async {
        following.remove(id)
        let lastHealth = health.removeValue(forKey: id)?.health
        ensemble.close(id)
        tunnels.connector.forget(id)
        Gauge(label: "orrery_agent_allocations_running").record(following.count)
        await actors?.close(id)
        await releasePromise(id)
        var reason = outcome.reason
        if !outcome.missingOutputs.isEmpty {
            reason += "; outputs missing: " + outcome.missingOutputs.joined(separator: ", ")
        }
        let report = Orrery_Orchestrator_V1_AllocationReport.with {
            $0.offerID = id
            $0.state = .exited
            $0.exitCode = outcome.exitCode
            $0.reason = reason
            $0.usage = .with {
                $0.cpuSeconds = outcome.usage.cpuSeconds
                $0.peakMemoryBytes = outcome.usage.peakMemoryBytes
                $0.wallSeconds = outcome.wallSeconds
                $0.gpuSeconds = Self.gpuSeconds(outcome, gpus: (try? runner.spec(id))?.resources.gpu.count ?? 0)
                $0.oomKilled = outcome.usage.oomKilled
            }
            if let lastHealth { $0.health = lastHealth }
        }
        if let receipts {
            let spec = try? runner.spec(id)
            let usage = DeviceSignatures.usage(
                cpuSeconds: outcome.usage.cpuSeconds, wallSeconds: outcome.wallSeconds, spec: spec)
            do {
                if receipts.wasStopped(id) {
                    // The orchestrator ended it: the contract is terminated, the usage so far is still receipted.
                    _ = try receipts.issueUsage(id, usage: usage)
                } else {
                    _ = try receipts.issueCompletion(
                        id, usage: usage, exitCode: outcome.exitCode,
                        artifactSHA256: DeviceSignatures.artifactDigest(spec),
                        outputs: outcome.outputs)
                }
            } catch {
                logger.error("cannot sign the completion receipt", metadata: ["offer": "\(id)", "error": "\(error)"])
            }
        }
        save(report, for: id)
        do {
            try runner.saveUploadedOutputs(id, outcome.outputs.filter { $0.location != nil })
        } catch {
            // Reported once now; after a restart these outputs would not be reported or streamed again.
            logger.error("cannot journal an allocation's outputs", metadata: ["offer": "\(id)", "error": "\(error)"])
        }
        CrashPoint.reach("agent.ended", logger: logger)
        logger.info(
            "allocation ended", metadata: ["offer": "\(id)", "exit": "\(outcome.exitCode)", "reason": "\(reason)"])
        sendOutputs(id)
        sendReport(report)
    }

    /// Sends an output to the content store from what it holds (all of it for a new upload).
    private func startStoreUpload(_ id: String, _ output: AllocationOutcome.Output) {
        let key = id + "\u{0}" + output.path
        var upload: StoreUpload
        if let existing = storeUploads[key] {
            upload = existing
        } else {
            guard let file = try? runner.outputFile(id, path: output.path) else { return }
            upload = StoreUpload(
                offerID: id, path: output.path, file: file, size: Int64(output.size), sha256: output.sha256)
        }
        let sends = upload.restart()
        storeUploads[key] = upload
        sendChunks(sends, of: upload, key: key)
    }

    /// The content store's answer to a chunk: more chunks, or the end (stored, or refused for good).
    func outputProgress(_ progress: Orrery_Orchestrator_V1_OutputProgress) {
        let key = progress.offerID + "\u{0}" + progress.path
        guard var upload = storeUploads[key] else { return }
        if !progress.refused.isEmpty || progress.complete {
            storeUploads[key] = nil
            do {
                try runner.markStoreUploadEnded(progress.offerID, path: progress.path)
            } catch {
                // Its directory is then kept to the longest keep, and a reconnect asks the store again.
                logger.warning(
                    "cannot journal an output's end", metadata: ["offer": "\(progress.offerID)", "error": "\(error)"])
            }
            if progress.complete {
                logger.info(
                    "output stored by the orchestrator",
                    metadata: ["offer": "\(progress.offerID)", "path": "\(progress.path)", "bytes": "\(upload.size)"])
            } else {
                logger.warning(
                    "the orchestrator refused an output",
                    metadata: [
                        "offer": "\(progress.offerID)", "path": "\(progress.path)", "why": "\(progress.refused)",
                    ])
            }
            return
        }
        let before = upload.stored
        let sends = upload.answered(stored: Int64(clamping: progress.stored))
        if before < upload.size / 2, upload.stored >= upload.size / 2 {
            CrashPoint.reach("agent.output-half-stored", logger: logger)
        }
        storeUploads[key] = upload
        sendChunks(sends, of: upload, key: key)
    }

    private func sendChunks(_ sends: [StoreUpload.Send], of upload: StoreUpload, key: String) {
        for send in sends {
            do {
                var message = try upload.chunk(send)
                message.outputChunk.data = DamagedChunk.apply(
                    message.outputChunk.data, at: UInt64(send.offset), logger: logger)
                self.send(message, about: upload.offerID)
            } catch {
                storeUploads[key] = nil
                logger.warning(
                    "an output cannot be read for the content store",
                    metadata: ["offer": "\(upload.offerID)", "path": "\(upload.path)", "error": "\(error)"])
                return
            }
        }
    }

    /// Each declared output's place in the consumer's bucket with its presigned URL, still sealed to this device.
    static func outputDestinations(
        of deploy: Orrery_Orchestrator_V1_Deploy
    ) throws -> [String: AllocationRunner.OutputDestination] {
        var destinations: [String: AllocationRunner.OutputDestination] = [:]
        for path in deploy.spec.outputs {
            guard let sealed = deploy.outputUrls[path] else { continue }
            let location = try S3Location.output(
                under: deploy.spec.outputsTo, allocation: deploy.allocation, replica: deploy.replica, path: path)
            destinations[path] = .init(location: location.description, sealedURL: sealed)
        }
        return destinations
    }

    /// GPU time as billed: the GPUs the allocation held (whole devices, passed through) for its wall time.
    static func gpuSeconds(_ outcome: AllocationOutcome, gpus: UInt32) -> Double {
        outcome.wallSeconds * Double(gpus)
    }

    private func sendOutputs(_ id: String) {
        guard let spec = try? runner.spec(id) else { return }
        // Outputs uploaded to the consumer's bucket: where they are, their sha256 and size, not their bytes; outputs
        // for the content store: streamed (again from what the store holds, after a reconnect).
        let uploaded = runner.uploadedOutputs(id)
        let ended = runner.endedStoreUploads(id)
        for output in uploaded where output.location == AllocationOutcome.Output.store && !ended.contains(output.path) {
            startStoreUpload(id, output)
        }
        for output in uploaded where output.location != AllocationOutcome.Output.store {
            send(
                .with {
                    $0.output = .with {
                        $0.offerID = id
                        $0.path = output.path
                        $0.sha256 = output.sha256
                        $0.size = UInt64(output.size)
                        $0.location = output.location ?? ""
                    }
                }, about: id)
        }
        for path in spec.outputs where spec.outputsTo.isEmpty && !uploaded.contains(where: { $0.path == path }) {
            guard let (digest, data) = try? runner.output(id, path: path) else { continue }
            send(
                .with {
                    $0.output = .with {
                        $0.offerID = id
                        $0.path = path
                        $0.sha256 = digest
                        $0.content = data
                    }
                }, about: id)
        }
    }

    /// The last MiB of each stream again (the orchestrator ignores what it has).
    private func resendLogs(_ id: String) {
        for stream in ["stdout", "stderr"] {
            let path = runner.directory(id) + "/\(stream).log"
            let size = FileStatus(path: path)?.size ?? 0
            var offset = size > 1 << 20 ? size - (1 << 20) : 0
            while offset < size {
                let data = runner.log(id, stream: stream, from: offset)
                if data.isEmpty { break }
                send(Self.logMessage(id, stream: stream, offset: offset, data: data), about: id)
                offset += UInt64(data.count)
            }
        }
    }

    static func logMessage(_ id: String, stream: String, offset: UInt64, data: Data)
        -> Orrery_Orchestrator_V1_AgentMessage
    {
        .with {
            $0.log = .with {
                $0.offerID = id
                $0.stream = stream == "stdout" ? .stdout : .stderr
                $0.offset = offset
                $0.data = data
            }
        }
    }

    /// Frees what the allocation's offer promised; a failure is logged (the promise still lapses at its deadline).
    private func releasePromise(_ id: String) async {
        do {
            try await ledger.release(id)
        } catch {
            logger.error(
                "cannot release the capacity promised to an ended allocation",
                metadata: ["offer": "\(id)", "error": "\(error)"])
        }
    }

    /// Journals the final report so a restart or a reconnect repeats it; a failure is logged (the orchestrator
    /// then hears the report only on this line).
    private func save(_ report: Orrery_Orchestrator_V1_AllocationReport, for id: String) {
        do {
            try FileManager.default.createDirectory(atPath: runner.directory(id), withIntermediateDirectories: true)
            try Data(try report.serializedBytes() as [UInt8]).write(
                to: URL(fileURLWithPath: runner.directory(id) + "/report.pb"), options: .atomic)
        } catch {
            logger.error(
                "cannot journal an allocation's final report", metadata: ["offer": "\(id)", "error": "\(error)"])
        }
    }

    /// Ended allocations whose receipts were all recorded (and whose outputs for the content store were stored or
    /// refused) are kept `keep` after their end, then their directories are removed (files, outputs, logs,
    /// journals); one whose receipts were never recorded is removed after 30 days at the latest, with a warning.
    /// Returns the removed offer ids.
    @discardableResult
    func removeEnded(keeping keep: Duration, now: Date = Date()) -> [String] {
        let keepSeconds = Double(keep.components.seconds)
        var removed: [String] = []
        for id in held() where !starting.contains(id) && !following.contains(id) && savedReport(for: id) != nil {
            let path = runner.directory(id) + "/report.pb"
            guard let modified = FileStatus(path: path)?.modifiedSince1970 else { continue }
            let ended = Date(timeIntervalSince1970: modified)
            let age = now.timeIntervalSince(ended)
            let unrecorded = receipts?.pending(id).count ?? 0
            // Without a contract no recorded receipt proves the orchestrator has its end: kept an hour at least.
            let contracted = !(receipts?.contract(id).isEmpty ?? true)
            let keptFor = contracted ? keepSeconds : max(keepSeconds, 3600)
            // Outputs still on their way to the content store keep it too (to the longest keep).
            let settled = unrecorded == 0 && !runner.hasPendingStoreUploads(id)
            guard (settled && age >= keptFor) || age >= Self.longestKeep else { continue }
            if unrecorded > 0 {
                logger.warning(
                    "removing an ended allocation whose receipts were never recorded",
                    metadata: ["offer": "\(id)", "receipts": "\(unrecorded)"])
            }
            do {
                try FileManager.default.removeItem(atPath: runner.directory(id))
                removed.append(id)
            } catch {
                logger.warning("cannot remove an ended allocation", metadata: ["offer": "\(id)", "error": "\(error)"])
            }
        }
        if !removed.isEmpty {
            logger.info("ended allocations removed", metadata: ["count": "\(removed.count)", "offers": "\(removed)"])
        }
        return removed
    }

    /// The longest an ended allocation is kept, its receipts recorded or not (30 days).
    static let longestKeep: Double = 30 * 86_400

    /// `removeEnded` now and then: every quarter of `keep`, at least every 5 s and at most every hour.
    func removeEndedPeriodically(keeping keep: Duration) async {
        let period = min(max(keep / 4, .seconds(5)), .seconds(3600))
        await PeriodicWork("removing ended allocations", every: period, logger: logger) {
            await self.removeEnded(keeping: keep)
        }.run()
    }

    private func savedReport(for id: String) -> Orrery_Orchestrator_V1_AllocationReport? {
        guard let data = FileManager.default.contents(atPath: runner.directory(id) + "/report.pb") else { return nil }
        return try? Orrery_Orchestrator_V1_AllocationReport(serializedBytes: data)
    }
}

/// A running allocation's CPU time and memory as `/metrics` gauges, labelled by offer id and allocation name.
struct AllocationGauges: Sendable {
    /// The allocation's offer id.
    let id: String
    let dimensions: [(String, String)]

    init(id: String, allocation: String) {
        self.id = id
        dimensions = [("offer", id), ("allocation", allocation)]
    }

    func record(_ runner: AllocationRunner) {
        Gauge(label: "orrery_agent_allocation_cpu_seconds", dimensions: dimensions).record(runner.usage(id).cpuSeconds)
        if let memory = runner.memoryInUse(id) {
            Gauge(label: "orrery_agent_allocation_memory_bytes", dimensions: dimensions).record(Double(memory))
        }
    }

    /// Unregisters both series once the allocation ended.
    func remove() {
        Gauge(label: "orrery_agent_allocation_cpu_seconds", dimensions: dimensions).destroy()
        Gauge(label: "orrery_agent_allocation_memory_bytes", dimensions: dimensions).destroy()
    }
}
