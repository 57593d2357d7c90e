internal import Metrics
internal import Crypto
internal import Foundation
public import GRPCCore
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryRuntime
public import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// `orrery.orchestrator.v1.AgentChannel`: a device agent's line. The capability check authorised the device when
/// the stream opened; its first message says which device it is, then it answers offers.
public struct AgentChannelService: Orrery_Orchestrator_V1_AgentChannel.SimpleServiceProtocol {
    let hub: AgentHub
    let offers: OfferStore
    /// Where a device's answers and reports have their deployments advanced, beside the line.
    let advances: DeploymentAdvances
    let logger: Logger
    /// Where the devices' receipts are recorded; nil without a notary.
    let notary: NotaryLink?
    /// Recorded receipts become release tasks for the settlement gateway (and a completion also a refund).
    var settles = false
    /// Actors' identities and mail.
    let router: ActorRouter
    /// Checkpoints as the agents stream them.
    let checkpoints: CheckpointStore
    /// Outputs over 3 MiB as the agents stream them.
    let contents: ContentStore
    /// Where a device's tunnels meet the port-forwards that asked for them.
    let tunnels: TunnelBroker
    /// Where a device's exec sessions meet the callers that asked for them.
    let execs: ExecBroker
    /// Measures each line's RTT.
    let latency: LineLatency
    /// Sandboxes' connections to their partners.
    let ensemble: EnsembleNetwork
    /// Tunnels for replicas that do not hold a device's line, and the record of the lines held here.
    let relay: ReplicaRelay

    /// A connection into one of the device's sandboxes, asked for on its line: the first frame names the tunnel, then
    /// the sandbox's bytes go to the port-forward waiting for it (and its bytes come back through the writer).
    public func tunnel(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>,
        context: ServerContext
    ) async throws {
        // The consumer's side writes to this call: shared, closed before this call ends.
        try await ConnectionLoops.onCallLoop(of: context) {
            try await SharedCallWriter.serving(response) { try await tunnel(request: request, response: $0) }
        }
    }

    private func tunnel(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws {
        let device = try Authorization.required().invoker.string
        var incoming = request.makeAsyncIterator()
        guard let first = try await incoming.next(), case .start(let start) = first.kind else {
            throw RPCError(code: .invalidArgument, message: "the first frame must be a start naming the tunnel")
        }
        if start.standby {
            try await standby(device: device, incoming: &incoming, response: response)
            return
        }
        guard
            let session = tunnels.deviceOpened(
                tunnel: start.tunnelID, device: device, error: start.error, toDevice: response)
        else {
            if start.error.isEmpty {
                throw RPCError(
                    code: .notFound, message: "no port-forward waits for tunnel \(start.tunnelID.prefix(64))")
            }
            return
        }
        try await carry(session, from: &incoming)
    }

    /// A standby call (`start.standby`): it waits in the pool until a tunnel is handed to it, then carries it.
    private func standby(
        device: String, incoming: inout RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>.AsyncIterator,
        response: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws {
        guard let call = tunnels.standbys.add(device: device, toDevice: response) else {
            throw RPCError(
                code: .resourceExhausted,
                message: "a device keeps at most \(StandbyTunnels.perDeviceLimit) standby tunnel calls open here")
        }
        defer {
            tunnels.standbys.remove(call)
            call.ended()
        }
        guard let next = try await incoming.next() else { return }
        guard case .start(let start) = next.kind else {
            throw RPCError(
                code: .invalidArgument, message: "a standby call's next frame is the start answering its open")
        }
        guard let session = try call.deviceAnswered(start) else { return }
        try await carry(session, from: &incoming)
    }

    /// The device's bytes of an opened tunnel, to its consumer once ready, until the device's side ends.
    private func carry(
        _ session: TunnelBroker.Session,
        from incoming: inout RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>.AsyncIterator
    ) async throws {
        defer { session.deviceEnded() }
        await session.waitUntilConsumerReady()
        while let frame = try await incoming.next() {
            guard case .data(let data) = frame.kind else { continue }
            try await session.deliver(data)
        }
    }

    /// An exec session into one of the device's sandboxes, asked for on its line: the first frame names it, then its
    /// output (and last its record) goes to the caller waiting for it, whose input comes back through the writer.
    public func execSession(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_ExecFrame>,
        context: ServerContext
    ) async throws {
        // The caller's side writes to this call: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) { try await execSession(request: request, response: $0) }
    }

    private func execSession(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecFrame, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_ExecFrame>
    ) async throws {
        let device = try Authorization.required().invoker.string
        var incoming = request.makeAsyncIterator()
        guard let first = try await incoming.next(), case .opened(let opened) = first.kind else {
            throw RPCError(code: .invalidArgument, message: "the first frame must be opened, naming the session")
        }
        guard let side = execs.deviceOpened(opened, device: device, toDevice: response) else {
            if opened.error.isEmpty {
                throw RPCError(code: .notFound, message: "no caller waits for exec session \(opened.execID.prefix(64))")
            }
            return
        }
        defer { side.deviceEnded() }
        while let frame = try await incoming.next() {
            switch frame.kind {
            case .stdout(let data), .stderr(let data):
                guard data.count <= ExecSessions.messageLimit else {
                    throw RPCError(code: .invalidArgument, message: "a frame carries at most 64 KiB")
                }
                try await side.deliver(frame)
            case .exited:
                try await side.deliver(frame)
                return
            default: continue
            }
        }
    }

    /// Another replica's exec session on a device whose line this one holds.
    public func relayExec(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_ExecFrame>,
        context: ServerContext
    ) async throws {
        try await relay.serveExec(request: request, response: response)
    }

    /// An exec session's record the device sends again (no orchestrator confirmed it logged): appended to the notary's
    /// log (a retry of an appended one answers as the first time) and confirmed to the device.
    private func logExecRecord(_ signed: Orrery_Common_V1_Signed, from device: DID) async {
        do {
            try SignedMessage.verify(
                signed, type: Orrery_Notary_V1_ExecSession.protoMessageName, requiring: [device])
            let session = try Orrery_Notary_V1_ExecSession(serializedBytes: signed.payload)
            guard let notary else { return }
            let recorded = try await notary.recordReceipt(ExecSessions.logRequest(signed, session: session.sessionID))
            hub.send(ExecSessions.loggedMessage(session.sessionID, index: recorded.entryIndex), to: device.string)
        } catch {
            logger.warning("an exec record was not logged", metadata: ["device": "\(device)", "error": "\(error)"])
        }
    }

    /// A connection from one of the device's sandboxes to a partner allocation's port (the ensemble network).
    public func peerTunnel(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>,
        context: ServerContext
    ) async throws {
        let device = try Authorization.required().invoker.string
        try await ConnectionLoops.onCallLoop(of: context) {
            try await ensemble.carry(request: request, response: response, device: device)
        }
    }

    /// Another replica's tunnel to a device whose line this one holds.
    public func relayTunnel(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>,
        context: ServerContext
    ) async throws {
        try await ConnectionLoops.onCallLoop(of: context) {
            try await relay.serve(request: request, response: response)
        }
    }

    public func connect(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_AgentMessage, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_OrchestratorMessage>,
        context: ServerContext
    ) async throws {
        let authorization = try Authorization.required()
        let device = authorization.invoker
        var incoming = request.makeAsyncIterator()
        guard let first = try await incoming.next(), case .hello(let hello) = first.kind else {
            throw RPCError(code: .invalidArgument, message: "the first message must be a hello naming the device")
        }
        guard hello.deviceDid == device.string else {
            throw RPCError(
                code: .permissionDenied,
                message: "hello.device_did \(hello.deviceDid) is not the invoker \(device): a device speaks for itself")
        }
        let (id, outgoing) = hub.open(device: device.string)
        logger.info("agent connected", metadata: ["device": "\(device)"])
        await relay.lineOpened(device.string)
        defer {
            hub.close(device: device.string, id: id)
            logger.info("agent disconnected", metadata: ["device": "\(device)"])
            let (relay, closedAt) = (relay, Date())
            Task { await relay.lineClosed(device.string, at: closedAt) }
        }
        try await hub.deliver()
        router.relay.lineOpened(device.string)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outgoing { try await response.write(message) }
            }
            let (hub, latency) = (hub, latency)
            group.addTask { await latency.measure(device: device.string) { hub.send($0, to: device.string) } }
            // The line ends when the agent closes it (a newer line of the same device only stops the sending).
            while let message = try await incoming.next() {
                try await handle(message, from: device)
            }
            group.cancelAll()
        }
    }

    private func handle(_ message: Orrery_Orchestrator_V1_AgentMessage, from device: DID) async throws {
        switch message.kind {
        case .bid(let signed):
            let bid: Orrery_Orchestrator_V1_Bid
            do {
                try SignedMessage.verify(signed, type: Orrery_Orchestrator_V1_Bid.protoMessageName, requiring: [device])
                bid = try Orrery_Orchestrator_V1_Bid(serializedBytes: signed.payload)
            } catch {
                throw RPCError(code: .invalidArgument, message: "bid: \(error)")
            }
            guard bid.deviceDid == device.string, let recorded = try await offers.offer(bid.offerID),
                recorded.device == device.string
            else {
                throw RPCError(
                    code: .permissionDenied, message: "bid for offer \(bid.offerID), which is not this device's")
            }
            guard bid.jobCost == recorded.offer.jobCost, bid.orchestratorDid == recorded.offer.orchestratorDid else {
                throw RPCError(
                    code: .invalidArgument, message: "the bid's price or orchestrator differs from offer \(bid.offerID)"
                )
            }
            await record(bid.offerID, device: device, state: .accepted, bid: signed, reason: "bid")
        case .decline(let decline):
            guard decline.reason.count <= 500 else {
                throw RPCError(code: .invalidArgument, message: "decline.reason: at most 500 characters")
            }
            Counter(label: "orrery_offers_refused_total", dimensions: [("how", "declined")]).increment()
            await record(
                decline.offerID, device: device, state: .declined, bid: nil,
                reason: decline.reason.isEmpty ? "declined" : decline.reason)
        case .report(let report):
            let recorded = report.receipts.isEmpty ? true : await relayReceipts(report, from: device)
            if let deployment = try await offers.record(report, device: device.string, receiptsRecorded: recorded) {
                logger.info(
                    "allocation report",
                    metadata: ["offer": "\(report.offerID)", "state": "\(report.state)", "reason": "\(report.reason)"])
                advances.request(deployment)
            }
        case .log(let chunk):
            guard chunk.data.count <= 1 << 20 else {
                throw RPCError(code: .invalidArgument, message: "log: at most 1 MiB per chunk")
            }
            guard chunk.stream == .stdout || chunk.stream == .stderr else {
                throw RPCError(
                    code: .invalidArgument, message: "log: stream must be LOG_STREAM_STDOUT or LOG_STREAM_STDERR")
            }
            guard chunk.offset < 1 << 62 else {
                throw RPCError(code: .invalidArgument, message: "log: offset \(chunk.offset) is past any log's size")
            }
            _ = try await offers.append(chunk, device: device.string)
        case .outputChunk(let chunk):
            // Each chunk is answered with what the store holds: the device's window, and where it resumes.
            let progress = try await contents.intake(chunk, from: device.string)
            if !progress.refused.isEmpty {
                logger.warning(
                    "output refused by the content store",
                    metadata: [
                        "offer": "\(chunk.offerID)", "path": "\(chunk.path.prefix(200))", "why": "\(progress.refused)",
                    ])
            }
            hub.send(.with { $0.outputProgress = progress }, to: device.string)
        case .output(let output):
            guard try await offers.store(output, device: device.string) else {
                logger.warning(
                    "output refused (not this device's offer, not declared, a wrong sha256, or a repeat)",
                    metadata: ["offer": "\(output.offerID)", "path": "\(output.path)"])
                return
            }
        case .mail(let mail):
            // A routing failure (the database briefly unreachable) loses nothing the sender will not resend; it
            // must not end the device's line.
            do {
                try await router.route(mail)
            } catch {
                logger.warning("mail not routed", metadata: ["to": "\(mail.to)", "error": "\(error)"])
            }
        case .actor(let identity):
            do {
                try await router.register(identity, from: device)
            } catch {
                logger.warning("actor identity refused", metadata: ["device": "\(device)", "error": "\(error)"])
            }
        case .checkpoint(let chunk):
            do {
                try await checkpoints.intake(chunk, from: device)
            } catch {
                logger.warning(
                    "checkpoint refused", metadata: ["offer": "\(chunk.offerID)", "error": "\(error)"])
            }
        case .checkpointFetch(let fetch):
            do {
                try await checkpoints.serve(fetch, to: device)
            } catch {
                logger.warning(
                    "checkpoint fetch refused", metadata: ["offer": "\(fetch.offerID)", "error": "\(error)"])
            }
        case .linePong(let pong):
            await latency.pong(pong.nonce, from: device.string)
        case .execRecord(let signed):
            await logExecRecord(signed, from: device)
        case .inventory(let inventory):
            guard inventory.runningOfferIds.count <= 10_000, inventory.promisedOfferIds.count <= 10_000,
                (inventory.runningOfferIds + inventory.promisedOfferIds).allSatisfy({ $0.utf8.count <= 64 })
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "inventory: at most 10,000 running and 10,000 promised offer ids, each at most 64 bytes")
            }
            try await stopUnassigned(
                running: inventory.runningOfferIds, promised: inventory.promisedOfferIds, on: device)
        case .hello:
            throw RPCError(code: .invalidArgument, message: "hello is sent once, first")
        case nil:
            throw RPCError(code: .invalidArgument, message: "an empty message")
        }
    }

    /// Hands a device's receipts to the notary in order, then tells the device how far they were recorded, with the
    /// notary's signed tree head and a consistency proof from the last head the device verified. A receipt the
    /// notary refuses for good (its contract is no longer active, or the same sequence was recorded already) is
    /// acknowledged too; anything else stops the relay and the device resends with its next report. Returns whether
    /// every receipt of the report was recorded (or acknowledged for good).
    private func relayReceipts(_ report: Orrery_Orchestrator_V1_AllocationReport, from device: DID) async -> Bool {
        guard let notary else { return true }
        do {
            guard let recorded = try await offers.offer(report.offerID), recorded.device == device.string else {
                logger.warning(
                    "receipts for an offer that is not this device's", metadata: ["offer": "\(report.offerID)"])
                return false
            }
        } catch {
            logger.warning("receipts not relayed", metadata: ["offer": "\(report.offerID)", "error": "\(error)"])
            return false
        }
        var through: UInt64 = 0
        var complete = true
        for receipt in report.receipts.prefix(100) {
            let (contractID, sequence) = Self.receiptKey(receipt)
            do {
                let recorded = try await notary.recordReceipt(
                    .with {
                        $0.receipt = receipt
                        $0.idempotencyKey =
                            "receipt/" + Hex.sha256(receipt.payload)
                    })
                if settles {
                    try await SettlementClerk.enqueueRelease(
                        contract: contractID, entry: recorded.entryIndex, client: offers.client, logger: logger)
                    if receipt.type == Orrery_Notary_V1_CompletionReceipt.protoMessageName {
                        try await SettlementClerk.enqueueRefund(
                            contract: contractID, client: offers.client, logger: logger)
                    }
                }
                through = sequence
            } catch let error as RPCError where error.code == .alreadyExists {
                through = sequence
            } catch let error as RPCError where error.code == .failedPrecondition {
                // A gap waits for the missing receipt; a contract no longer active never takes this one.
                guard let state = try? await notary.contract(contractID).state, state != .active else {
                    complete = false
                    break
                }
                logger.notice(
                    "receipt for a contract that is no longer active",
                    metadata: ["contract": "\(contractID)", "sequence": "\(sequence)", "state": "\(state)"])
                through = sequence
            } catch {
                logger.warning(
                    "recording a receipt failed; the device resends it",
                    metadata: ["contract": "\(contractID)", "error": "\(error)"])
                complete = false
                break
            }
        }
        if report.receipts.count > 100 { complete = false }
        guard through > 0 else { return complete }
        var message = Orrery_Orchestrator_V1_ReceiptsRecorded.with {
            $0.offerID = report.offerID
            $0.throughSequence = through
        }
        if let head = try? await notary.treeHead() {
            message.treeHead = head
            if report.knownTreeSize > 0, report.knownTreeSize <= head.head.treeSize,
                let proof = try? await notary.consistencyProof(
                    .with {
                        $0.oldSize = report.knownTreeSize
                        $0.newSize = head.head.treeSize
                    })
            {
                message.consistency = proof
            }
        }
        hub.send(.with { $0.receiptsRecorded = message }, to: device.string)
        return complete
    }

    /// A receipt's contract and sequence number.
    static func receiptKey(_ receipt: Orrery_Common_V1_Signed) -> (contract: String, sequence: UInt64) {
        if receipt.type == Orrery_Notary_V1_CompletionReceipt.protoMessageName,
            let completion = try? Orrery_Notary_V1_CompletionReceipt(serializedBytes: receipt.payload)
        {
            return (completion.contractID, completion.sequence)
        }
        let usage = try? Orrery_Notary_V1_UsageReceipt(serializedBytes: receipt.payload)
        return (usage?.contractID ?? "", usage?.sequence ?? 0)
    }

    /// Tells the device to stop, or to free what it promised to, each of the offers it holds (`running`, `promised`)
    /// that this orchestrator no longer assigns to it.
    private func stopUnassigned(running: [String], promised: [String], on device: DID) async throws {
        for (offerID, reason) in try await offers.unassigned(
            running: running, promised: promised, device: device.string)
        {
            logger.notice(
                "a device holds what is no longer assigned to it: stop",
                metadata: ["device": "\(device)", "offer": "\(offerID)", "reason": "\(reason)"])
            hub.send(
                .with {
                    $0.stop = .with {
                        $0.offerID = offerID
                        $0.reason = reason
                    }
                }, to: device.string)
        }
    }

    /// Records an answer and advances the deployment at once. A late answer (the offer expired or was withdrawn) is
    /// logged, and a late bid's device is told at once to free the capacity it promised (rather than at its next
    /// inventory: meanwhile it would decline other offers for want of it).
    private func record(
        _ offerID: String, device: DID, state: OfferStore.State, bid: Orrery_Common_V1_Signed?, reason: String
    ) async {
        do {
            guard
                let deployment = try await offers.answer(
                    offerID, device: device.string, state: state, bid: bid, reason: reason)
            else {
                logger.notice(
                    "answer to an offer no longer open", metadata: ["offer": "\(offerID)", "device": "\(device)"])
                if state == .accepted { try await stopUnassigned(running: [], promised: [offerID], on: device) }
                return
            }
            logger.info(
                "offer answered",
                metadata: ["offer": "\(offerID)", "device": "\(device)", "answer": "\(state)", "reason": "\(reason)"])
            advances.request(deployment)
        } catch {
            logger.warning("recording an answer failed", metadata: ["offer": "\(offerID)", "error": "\(error)"])
        }
    }
}
