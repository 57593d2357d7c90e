#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryPlacement
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// The agent's outbound line to one orchestrator: it says which device it is, then answers every offer by its
/// owner's policy and its capacity — a signed bid or a decline with the reason. Reconnects with exponential
/// backoff and jitter.
struct AgentChannelLoop {
    let address: String
    let connection: RegistryConnection
    let judge: OfferJudge
    let ledger: CommitmentLedger
    let executions: ExecutionManager
    let logger: Logger

    func run() async {
        await Reconnecting.run(onFailure: { error in
            logger.warning(
                "agent channel interrupted; reconnecting",
                metadata: ["orchestrator": "\(address)", "error": "\(error)"])
        }) {
            try await connect()
        }
    }

    private func connect() async throws {
        guard let target = ServiceAddress(address) else {
            throw RegistryConnectionError(message: "orchestrator '\(address)' is not host:port")
        }
        let trustRoots = connection.trustRoots
        let orchestratorDID = try await ServiceProbe.withClient(target, trustRoots: trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: connection.key, subject: connection.chain.first?.subject ?? connection.key.did,
            audience: orchestratorDID, proofs: connection.chain, catalog: catalog)
        try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: target.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots),
                config: ServiceProbe.prompt, eventLoopGroup: LineLoop.group),
            interceptors: [signer]
        ) { client in
            let channel = Orrery_Orchestrator_V1_AgentChannel.Client(wrapping: client)
            let (answers, answer) = AsyncStream<Orrery_Orchestrator_V1_AgentMessage>.makeStream()
            answer.yield(.with { $0.hello = .with { $0.deviceDid = connection.key.did.string } })
            let orchestrator = orchestratorDID.string
            let line = executions.lines.open(orchestrator: orchestrator, outbox: answer)
            executions.ensemble.attach(channel, orchestrator: orchestrator)
            defer { executions.ensemble.detach(orchestrator: orchestrator) }
            await executions.attach(line, orchestrator: orchestrator)
            if let actors = executions.actors {
                await actors.setOrchestrator(orchestratorDID)
                await actors.attach()
            }
            defer { Task { await executions.detach(line) } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The inventory again from time to time: often while a bid waits for its Deploy (a withdrawn offer
                // frees its capacity soon), rarely otherwise.
                group.addTask {
                    var sent = ContinuousClock.now
                    while true {
                        try await Task.sleep(for: inventoryInterval.waiting)
                        guard
                            await executions.awaitsDeploys(from: orchestrator)
                                || ContinuousClock.now - sent >= inventoryInterval.idle
                        else { continue }
                        await executions.sendInventory(on: line, orchestrator: orchestrator)
                        sent = ContinuousClock.now
                    }
                }
                // Tunnel calls kept open ahead of need on the line's connection: a new connection into a sandbox
                // is handed to one at once.
                let tunnels = executions.tunnels
                group.addTask {
                    await withTaskExecutorPreference(LineLoop.executor) { await tunnels.keepStandby(over: channel) }
                }
                try await channel.connect(
                    requestProducer: { writer in
                        for await message in answers { try await writer.write(message) }
                    },
                    onResponse: { response in
                        logger.info("agent channel open", metadata: ["orchestrator": "\(address)"])
                        for try await message in response.messages {
                            if case .openTunnel(let open) = message.kind {
                                let tunnels = executions.tunnels
                                Task(executorPreference: LineLoop.executor) { await tunnels.open(open, over: channel) }
                                continue
                            }
                            if case .linePing(let ping) = message.kind {
                                // At once, before anything else queued: the orchestrator times the line with it.
                                answer.yield(.with { $0.linePong = .with { $0.nonce = ping.nonce } })
                                continue
                            }
                            if case .openExec(let open) = message.kind {
                                let execs = executions.execs
                                Task { await execs.run(open, over: channel) }
                                continue
                            }
                            try await handle(message, from: orchestrator, answer: answer)
                        }
                        answer.finish()
                    })
                group.cancelAll()
            }
        }
    }

    /// How often the inventory is sent again while a bid waits for its Deploy, and otherwise.
    var inventoryInterval: (waiting: Duration, idle: Duration) = (.seconds(10), .seconds(60))

    private func handle(
        _ message: Orrery_Orchestrator_V1_OrchestratorMessage, from orchestrator: String,
        answer: AgentLines.Outbox
    ) async throws {
        switch message.kind {
        case .offer(let offer): answer.yield(try await respond(to: offer))
        case .deploy(let deploy):
            // Taken in line order (a Stop right behind it is not overtaken), started aside.
            if await executions.receive(deploy) { Task { await executions.start(deploy, from: orchestrator) } }
        case .stop(let stop): await executions.stop(stop)
        case .receiptsRecorded(let recorded): await executions.receiptsRecorded(recorded)
        case .execLogged(let logged): executions.execs.logged(logged.sessionID)
        case .actorGrant(let grant): await executions.actors?.grant(grant)
        case .mail(let mail): await executions.actors?.mail(mail)
        case .checkpointRequest(let request):
            if let actors = executions.actors { Task { await actors.checkpoint(request) } }
        case .checkpointChunk(let chunk): await executions.actors?.chunk(chunk)
        case .openTunnel, .openExec, .linePing: break  // taken in `connect`, which holds the line's client
        case .outputProgress(let progress):
            if progress.checkpointSequence > 0 {
                await executions.actors?.archiveProgress(progress)
            } else {
                await executions.outputProgress(progress)
            }
        case .checkpointStored(let stored):
            logger.info(
                "checkpoint stored",
                metadata: [
                    "offer": "\(stored.offerID)", "sequence": "\(stored.sequence)", "log_index": "\(stored.logIndex)",
                ])
        case nil: break
        }
    }

    /// A signed bid, or a decline with the reason.
    func respond(to offer: Orrery_Orchestrator_V1_Offer) async throws -> Orrery_Orchestrator_V1_AgentMessage {
        let now = Date()
        let verdict: OfferJudge.Verdict
        if await ledger.contains(offer.offerID) {
            verdict = .accept  // answered before a reconnect: the same answer again
        } else {
            verdict = judge.judge(offer, committed: await ledger.committed(at: now), now: now)
        }
        switch verdict {
        case .decline(let reason):
            logger.info("offer declined", metadata: ["offer": "\(offer.offerID)", "reason": "\(reason)"])
            return .with {
                $0.decline = .with {
                    $0.offerID = offer.offerID
                    $0.reason = reason
                }
            }
        case .accept:
            var acceptance: Orrery_Common_V1_Signed?
            do {
                // An orchestrator with a notary proposes a contract with each offer; bidding accepts it.
                if offer.hasContract { acceptance = try accept(offer.contract, of: offer, now: now) }
            } catch {
                let reason = "the offer's contract is not acceptable: \(error)"
                logger.warning("offer declined", metadata: ["offer": "\(offer.offerID)", "reason": "\(reason)"])
                return .with {
                    $0.decline = .with {
                        $0.offerID = offer.offerID
                        $0.reason = reason
                    }
                }
            }
            let resources = offer.spec.resources
            let seconds = offer.spec.maxDurationSeconds == 0 ? 3600 : Double(offer.spec.maxDurationSeconds)
            do {
                try await ledger.promise(
                    offer.offerID,
                    Commitment(
                        cores: Int(resources.cpuCores), ramMiB: Int(resources.ramMib),
                        diskMiB: Int(resources.diskMib), gpus: Int(resources.gpu.count)),
                    until: now.addingTimeInterval(seconds), orchestrator: offer.orchestratorDid)
            } catch {
                // A device that cannot journal a promise cannot keep it across a restart: it declines (and says why)
                // rather than leave the offer unanswered.
                let reason =
                    "this device cannot record its commitment (is its state directory full or read-only?): \(error)"
                logger.error("offer declined", metadata: ["offer": "\(offer.offerID)", "reason": "\(reason)"])
                return .with {
                    $0.decline = .with {
                        $0.offerID = offer.offerID
                        $0.reason = String(reason.prefix(500))
                    }
                }
            }
            let signed = try DeviceSignatures.bid(on: offer, acceptance: acceptance, key: connection.key, now: now)
            logger.info("offer accepted", metadata: ["offer": "\(offer.offerID)", "price": "\(offer.jobCost)"])
            return .with { $0.bid = signed }
        }
    }

    /// The device's signed acceptance of the contract an offer carries (`DeviceSignatures.acceptance`).
    func accept(_ proposal: Orrery_Common_V1_Signed, of offer: Orrery_Orchestrator_V1_Offer, now: Date) throws
        -> Orrery_Common_V1_Signed
    {
        try DeviceSignatures.acceptance(
            of: proposal, in: offer, key: connection.key, chain: connection.chain,
            minimumPerJob: judge.capabilities.prices.minimumPerJob, now: now)
    }
}
