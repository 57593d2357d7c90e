internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf
internal import Synchronization

/// Where an exec session a caller asked for meets the `ExecSession` call the device opens for it (`OpenExec` on
/// its line): the device's frames go to the caller's `deliver`, the caller's to the device's writer.
final class ExecBroker: Sendable {
    /// The device's side of a session once it answered.
    final class DeviceSide: Sendable {
        let device: String
        let toDevice: SharedCallWriter<Orrery_Orchestrator_V1_ExecFrame>
        let deliver: @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void
        private let ended: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)

        init(
            device: String, toDevice: SharedCallWriter<Orrery_Orchestrator_V1_ExecFrame>,
            deliver: @escaping @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void
        ) {
            self.device = device
            self.toDevice = toDevice
            self.deliver = deliver
            ended = AsyncStream.makeStream()
        }

        /// The device's call ended (its last frame was delivered, or the device went away).
        func deviceEnded() { ended.continuation.finish() }
        func waitUntilDeviceEnded() async { for await _ in ended.stream {} }
    }

    private let waits = DeviceCallWaits<
        @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void, DeviceSide
    >()
    /// Sessions open through this orchestrator replica, by deployment.
    let sessions = DeploymentQuota()

    /// Asks `device` (whose line this replica holds) to run `open`, and waits (at most `limit`) for its answer.
    func open(
        _ open: Orrery_Orchestrator_V1_OpenExec, device: String, hub: AgentHub, within limit: Duration,
        deliver: @escaping @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void
    ) async throws -> DeviceSide {
        try await waits.wait(
            for: open.execID, device: device, pending: deliver, within: limit,
            timeout: RPCError(
                code: .unavailable,
                message: "the device did not start the command within \(limit.components.seconds) s")
        ) {
            hub.send(.with { $0.openExec = open }, to: device)
        }
    }

    /// The device's answer to session `id`: its side, or nil when nobody waits for it from that device (or it could
    /// not start: the waiting caller then fails with the device's reason and status).
    func deviceOpened(
        _ opened: Orrery_Orchestrator_V1_ExecOpened, device: String,
        toDevice: SharedCallWriter<Orrery_Orchestrator_V1_ExecFrame>
    ) -> DeviceSide? {
        guard let (deliver, answer) = waits.take(opened.execID, device: device) else { return nil }
        guard opened.error.isEmpty else {
            let code = Status.Code(rawValue: Int(opened.code)).flatMap { RPCError.Code($0) } ?? .unavailable
            answer.resume(
                throwing: RPCError(code: code, message: "the device did not run it: \(opened.error.prefix(500))"))
            return nil
        }
        let side = DeviceSide(device: device, toDevice: toDevice, deliver: deliver)
        answer.resume(returning: side)
        return side
    }
}

/// `Exec`: a command run inside a running replica's sandbox, authorised by an invocation of `/orrery/exec/run`
/// rooted in the deployment's consumer with the deployment in its args, carried over the device's own line, and
/// logged in the notary's log as the record the device signed when it ended.
struct ExecSessions: Sendable {
    let api: OrchestratorAPI
    let offers: OfferStore
    let hub: AgentHub
    let broker: ExecBroker
    /// Reaches devices whose line another replica holds.
    let relay: ReplicaRelay?
    let notary: NotaryLink?
    let logger: Logger

    /// The most bytes a message carries.
    static let messageLimit = 64 << 10
    /// How long the device has to start the command.
    static let openingLimit = Duration.seconds(15)
    /// How long a device whose caller went away has to send its record.
    static let closingLimit = Duration.seconds(10)
    /// Sessions one deployment may have open through one orchestrator replica.
    static let perDeploymentLimit = 16

    func run(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecRequest, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_ExecResponse>
    ) async throws {
        // The device's session call writes to the caller's: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) { try await run(request: request, response: $0) }
    }

    private func run(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecRequest, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_ExecResponse>
    ) async throws {
        let authorization = try Authorization.required()
        let clientGone = CallerGone()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (starts, started) = AsyncStream<Orrery_Orchestrator_V1_ExecStart>.makeStream()
            let (sides, opened) = AsyncStream<ExecBroker.DeviceSide>.makeStream()
            group.addTask {
                try await Self.readCaller(request, started: started, sides: sides, clientGone: clientGone)
            }
            var first: Orrery_Orchestrator_V1_ExecStart?
            for await start in starts { first = start }
            guard let start = first else {
                opened.finish()
                try await group.next()
                throw RPCError(code: .invalidArgument, message: "no start message")
            }
            let session: (open: Orrery_Orchestrator_V1_OpenExec, side: ExecBroker.DeviceSide, outcome: Outcome)
            do {
                session = try await self.start(
                    start, authorization: authorization, response: response, gone: clientGone)
            } catch {
                opened.finish()
                throw error
            }
            opened.yield(session.side)
            opened.finish()
            await session.side.waitUntilDeviceEnded()
            group.cancelAll()
            defer { broker.sessions.release(start.deploymentID) }
            let exit = await log(
                session.outcome.recorded, open: session.open, device: session.side.device,
                authorization: authorization)
            if let refusal = clientGone.refusal { throw refusal }
            guard let exit else {
                throw RPCError(code: .unavailable, message: "the device's side ended without the session's record")
            }
            guard !clientGone.isSet else { return }
            try await response.write(.with { $0.exit = exit })
        }
    }

    /// The caller's messages: the first (`start`) to `started`; the rest to the device once its side is open, until
    /// it ends. A caller that goes away or sends a bad message closes the session (its record still comes).
    private static func readCaller(
        _ request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecRequest, any Error>,
        started: AsyncStream<Orrery_Orchestrator_V1_ExecStart>.Continuation,
        sides: AsyncStream<ExecBroker.DeviceSide>, clientGone: CallerGone
    ) async throws {
        var incoming = request.makeAsyncIterator()
        do {
            defer { started.finish() }
            guard let first = try await incoming.next(), case .start(let start) = first.kind else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "the first message must be start: {deployment_id, allocation, command}")
            }
            try validate(start)
            started.yield(start)
        }
        var opened: ExecBroker.DeviceSide?
        for await side in sides { opened = side }
        guard let side = opened else { return }
        // A frame the device's side no longer takes is dropped: that side ended (the command exited), and its end
        // reaches the caller as the exit — it does not mean the caller went away.
        let toDevice: @Sendable (Orrery_Orchestrator_V1_ExecFrame) async -> Void = { frame in
            try? await side.toDevice.write(frame)
        }
        var inputEnded = false
        while true {
            let message: Orrery_Orchestrator_V1_ExecRequest?
            do {
                message = try await incoming.next()
            } catch {
                // The session ended (this task cancelled) or the caller's stream broke: a caller gone hears nothing
                // more, and its command is closed.
                if Task.isCancelled { return }
                clientGone.set()
                await toDevice(.with { $0.close = true })
                return
            }
            guard let message else { break }
            let refusal: RPCError?
            switch message.kind {
            case .stdin(let data):
                refusal =
                    data.count <= messageLimit && !inputEnded
                    ? nil
                    : RPCError(
                        code: .invalidArgument,
                        message: "stdin: at most \(messageLimit) bytes a message, none after stdin_end")
                if refusal == nil { await toDevice(.with { $0.stdin = data }) }
            case .stdinEnd:
                refusal = nil
                inputEnded = true
                await toDevice(.with { $0.stdinEnd = true })
            case .resize(let size):
                let fits = (1...1000).contains(size.rows) && (1...1000).contains(size.columns)
                refusal = fits ? nil : RPCError(code: .invalidArgument, message: "resize: rows and columns are 1…1000")
                if fits { await toDevice(.with { $0.resize = size }) }
            case .start, nil:
                refusal = RPCError(code: .invalidArgument, message: "only one start message")
            }
            if let refusal {
                // A bad message closes the session; the call ends with the refusal once the device's side ended.
                clientGone.refuse(refusal)
                await toDevice(.with { $0.close = true })
                return
            }
        }
        // The caller ended its stream: no more input; it still hears the output and the exit.
        if !inputEnded { await toDevice(.with { $0.stdinEnd = true }) }
    }

    /// Authorises `start`, finds its replica and has the device start the command; tells the caller it started.
    private func start(
        _ start: Orrery_Orchestrator_V1_ExecStart, authorization: Authorization,
        response: SharedCallWriter<Orrery_Orchestrator_V1_ExecResponse>, gone: CallerGone
    ) async throws -> (open: Orrery_Orchestrator_V1_OpenExec, side: ExecBroker.DeviceSide, outcome: Outcome) {
        let (deployment, replica, offer, device) = try await target(start, authorization: authorization)
        guard broker.sessions.admit(deployment, limit: Self.perDeploymentLimit) else {
            throw RPCError(
                code: .resourceExhausted,
                message: "\(deployment) has \(Self.perDeploymentLimit) exec sessions open here already")
        }
        let open = Orrery_Orchestrator_V1_OpenExec.with {
            $0.execID = "exe_" + (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            $0.offerID = offer
            $0.command = start.command
            $0.tty = start.tty
            $0.size = start.size
            $0.term = start.term
            $0.invocationCid = authorization.invocation.cid.description
            $0.invokerDid = authorization.invoker.string
        }
        let outcome = Outcome()
        // The caller hears `started` first (the protocol's first message), the output after.
        let startedSent = OnceGate()
        defer { startedSent.open() }
        let side: ExecBroker.DeviceSide
        do {
            let deliver: @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void = { frame in
                await startedSent.wait()
                switch frame.kind {
                case .stdout(let data), .stderr(let data):
                    // A caller that is gone no longer hears the output; the device's record still counts.
                    guard !gone.isSet else { return }
                    let message = Orrery_Orchestrator_V1_ExecResponse.with {
                        if case .stdout = frame.kind { $0.stdout = data } else { $0.stderr = data }
                    }
                    do { try await response.write(message) } catch { gone.set() }
                case .exited(let record): outcome.record(record)
                default: break
                }
            }
            if hub.holds(device) {
                side = try await broker.open(
                    open, device: device, hub: hub, within: Self.openingLimit, deliver: deliver)
            } else if let relay {
                // Another replica holds the device's line: the session goes through it.
                side = try await relay.openExec(open, device: device, within: Self.openingLimit, deliver: deliver)
            } else {
                throw RPCError(
                    code: .unavailable, message: "the device's line is held by another orchestrator replica")
            }
        } catch {
            broker.sessions.release(deployment)
            throw error
        }
        logger.info(
            "exec session open",
            metadata: [
                "deployment": "\(deployment)", "replica": "\(start.allocation)[\(replica)]", "device": "\(device)",
                "session": "\(open.execID)", "invoker": "\(open.invokerDid)",
            ])
        do {
            try await response.write(
                .with {
                    $0.started = .with {
                        $0.replica = replica
                        $0.deviceDid = device
                        $0.sessionID = open.execID
                        $0.invocationCid = open.invocationCid
                    }
                })
        } catch {
            gone.set()
            try? await side.toDevice.write(.with { $0.close = true })
        }
        return (open, side, outcome)
    }

    /// The device's record, checked against what was asked and logged by the notary (when it cannot be now, the
    /// device sends it again later: it keeps it until it hears it was logged).
    private func log(
        _ record: Orrery_Common_V1_Signed?, open: Orrery_Orchestrator_V1_OpenExec, device: String,
        authorization: Authorization
    ) async -> Orrery_Orchestrator_V1_ExecExit? {
        guard let record else { return nil }
        let session: Orrery_Notary_V1_ExecSession
        do {
            try SignedMessage.verify(
                record, type: Orrery_Notary_V1_ExecSession.protoMessageName, requiring: [try DID(device)])
            session = try Orrery_Notary_V1_ExecSession(serializedBytes: record.payload)
        } catch {
            logger.warning(
                "a device's exec record is not valid", metadata: ["device": "\(device)", "error": "\(error)"])
            return nil
        }
        var exit = Orrery_Orchestrator_V1_ExecExit.with {
            $0.exitCode = session.exitCode
            $0.signal = session.signal
            $0.record = record
        }
        let mismatch =
            session.sessionID != open.execID || session.invocationCid != open.invocationCid
            || session.invokerDid != open.invokerDid || session.commandSha256 != CommandDigest.of(open.command)
            || session.tty != open.tty
        guard let notary else {
            exit.logError = "this orchestrator has no notary: the session is not logged"
            return exit
        }
        // A record that does not match the session is still the device's signed claim: logged as it is (evidence
        // against the device), and the caller told.
        if mismatch {
            logger.warning(
                "a device's exec record does not match its session",
                metadata: ["device": "\(device)", "session": "\(open.execID)"])
        }
        do {
            exit.logIndex = try await notary.recordReceipt(Self.logRequest(record, session: session.sessionID))
                .entryIndex
            hub.send(Self.loggedMessage(session.sessionID, index: exit.logIndex), to: device)
            if mismatch {
                exit.logError =
                    "the device's record does not match the session (its id, invocation, command digest or terminal): logged as the device signed it"
            }
        } catch {
            // The device keeps the record and sends it again on its line until an orchestrator logs it.
            exit.logError =
                "the notary could not log the session now (\(error)); the device keeps its record and sends it again until it is logged"
        }
        return exit
    }

    /// The notary call that logs a session's record: retry-safe, keyed by the session.
    static func logRequest(_ record: Orrery_Common_V1_Signed, session: String) -> Orrery_Notary_V1_RecordReceiptRequest
    {
        .with {
            $0.receipt = record
            $0.idempotencyKey = "exec-" + session
        }
    }

    /// Tells the device a record is logged (it forgets it).
    static func loggedMessage(_ session: String, index: UInt64) -> Orrery_Orchestrator_V1_OrchestratorMessage {
        .with {
            $0.execLogged = .with {
                $0.sessionID = session
                $0.logIndex = index
            }
        }
    }

    /// The deployment, the replica, its running offer and its device, for a caller whose chain roots in the
    /// deployment's consumer and whose invocation names it.
    private func target(_ start: Orrery_Orchestrator_V1_ExecStart, authorization: Authorization) async throws -> (
        deployment: String, replica: UInt32, offer: String, device: String
    ) {
        guard case .string(let named)? = authorization.invocation.arguments["deployment"],
            named == start.deploymentID
        else {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "the invocation's args.deployment must name \(start.deploymentID.prefix(64)): an exec capability is for one deployment"
            )
        }
        let subject = authorization.validated.subject.string
        let deployment = try await api.get(start.deploymentID, caller: subject)
        // Its consumer's own: not even the operator, who may read its status, runs commands in its sandboxes.
        guard deployment.consumerDid == subject else {
            throw RPCError(
                code: .permissionDenied,
                message: "the chain roots in \(subject), not in the deployment's consumer: only it may allow exec")
        }
        guard let spec = deployment.spec.allocations.first(where: { $0.name == start.allocation }) else {
            throw RPCError(
                code: .invalidArgument,
                message: "allocation: \(deployment.id) has no allocation '\(start.allocation.prefix(64))'")
        }
        let running = deployment.assignments.filter {
            $0.allocation == start.allocation && $0.run.state == .running
                && (!start.hasReplica || $0.replica == start.replica)
        }
        // A healthy replica first; an unhealthy one is still worth a look (that may be why one execs).
        let ordered =
            running.filter { !spec.hasHealth || $0.run.health.status == .healthy }
            + running.filter { spec.hasHealth && $0.run.health.status != .healthy }
        if let found = try await offers.firstRunning(
            of: ordered, deployment: deployment.id, allocation: start.allocation)
        {
            return (deployment.id, found.replica, found.offer, found.device)
        }
        let which = start.hasReplica ? "\(start.allocation)[\(start.replica)]" : "no replica of \(start.allocation)"
        throw RPCError(
            code: .failedPrecondition,
            message: "\(which) \(start.hasReplica ? "does not run" : "runs") now (deployment \(deployment.state))")
    }

    /// The start message's own rules.
    static func validate(_ start: Orrery_Orchestrator_V1_ExecStart) throws {
        guard !start.deploymentID.isEmpty, !start.allocation.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "deployment_id and allocation are required")
        }
        guard (1...256).contains(start.command.count), let program = start.command.first, !program.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "command: 1…256 words, the first the program")
        }
        guard !program.contains("=") else {
            throw RPCError(code: .invalidArgument, message: "command: the program's name may not contain '='")
        }
        guard start.command.reduce(0, { $0 + $1.utf8.count + 1 }) <= messageLimit,
            start.command.allSatisfy({ !$0.utf8.contains(0) })
        else {
            throw RPCError(code: .invalidArgument, message: "command: at most 64 KiB in all, and no NUL byte")
        }
        if start.hasSize {
            guard (1...1000).contains(start.size.rows), (1...1000).contains(start.size.columns) else {
                throw RPCError(code: .invalidArgument, message: "size: rows and columns are 1…1000")
            }
        }
        let termAllowed = start.term.utf8.allSatisfy {
            (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0)
                || [45, 43, 46, 95].contains($0)
        }
        guard start.term.utf8.count <= 64, termAllowed else {
            throw RPCError(code: .invalidArgument, message: "term: letters, digits, '-', '+', '.', '_', at most 64")
        }
    }

    /// Whether the caller went away (it hears nothing more), or was refused for a bad message (the call ends with
    /// that error instead of the exit).
    final class CallerGone: Sendable {
        private let value = Mutex<(gone: Bool, refusal: RPCError?)>((false, nil))
        var isSet: Bool { value.withLock { $0.gone } }
        var refusal: RPCError? { value.withLock { $0.refusal } }
        func set() { value.withLock { $0.gone = true } }
        func refuse(_ error: RPCError) { value.withLock { $0.refusal = error } }
    }

    /// The record the device sent last.
    private final class Outcome: Sendable {
        private let stored = Mutex<Orrery_Common_V1_Signed?>(nil)
        func record(_ record: Orrery_Common_V1_Signed) { stored.withLock { $0 = record } }
        var recorded: Orrery_Common_V1_Signed? { stored.withLock { $0 } }
    }
}
