#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf

/// One allocation as an actor on this device: its key, the authority and directory the orchestrator granted it,
/// the gate its incoming envelopes pass, its mailbox queue, and the envelopes it sent that are not yet delivered
/// (resent until the receiver takes them or they expire: at-least-once, de-duplicated by the receiver).
actor ActorHost {
    let address: ActorAddress
    let offerID: String
    let key: SigningKey
    private let emit: @Sendable (Orrery_Orchestrator_V1_AgentMessage) -> Void
    private let logger: Logger

    private var grant: Orrery_Actors_V1_ActorGrant?
    private var delegation: Delegation?
    private var gate: EnvelopeGate?
    /// Envelopes delivered to the workload before, with their expiries (restored from a checkpoint).
    private var received: [CID: Int64]
    private var queue: [MailboxLine] = []
    private var waiters: [CheckedContinuation<MailboxLine, Never>] = []
    /// Whether messages wait (a checkpoint for a move was taken: what comes after goes to the resumed actor).
    private var paused = false
    /// Checkpoint requests waiting for the workload's answer, and those it answered.
    private var requested: Set<String> = []
    private var checkpointed: Set<String> = []
    /// Where a reply to each message received goes, until its envelope's lifetime is over.
    private var replyTargets: [String: (address: ActorAddress, until: Int64)] = [:]
    /// The keys of actors that sent to this one, by address, as their admitted envelopes proved them: a reply can go
    /// back before the orchestrator's directory of this actor names the sender (a sender that just started).
    private var senderKeys: [String: (did: DID, until: Int64)] = [:]

    private struct Outbound {
        let sendID: String
        let mail: Orrery_Actors_V1_Mail
        let expiresAt: Int64
        var lastSent: ContinuousClock.Instant
    }
    private var outbound: [String: Outbound] = [:]
    /// The workload's ids of sends on their way or delivered, with the envelope each became: a send repeated with
    /// the same id (after the workload reconnected) is answered, not sent again.
    private var sendIDs: [String: (id: String, until: Int64)] = [:]
    /// What survives a restart of the agent's process (nil: nothing is kept).
    private var journal: ActorJournal?

    /// How long a sealed envelope stays valid, and how often an undelivered one is resent.
    static let lifetime: Int64 = 300
    static let retryAfter: Duration = .seconds(2)
    /// The most envelopes an actor may have on their way at once.
    static let undeliveredLimit = 1000

    /// - Parameters:
    ///   - received: Envelopes handed to the workload before (from a checkpoint); the journal's are added.
    ///   - journal: What an earlier process of this agent left: undelivered sends are resent soon.
    init(
        address: ActorAddress, offerID: String, key: SigningKey, received: [CID: Int64], journal: ActorJournal? = nil,
        logger: Logger, emit: @escaping @Sendable (Orrery_Orchestrator_V1_AgentMessage) -> Void
    ) {
        self.address = address
        self.offerID = offerID
        self.key = key
        var received = received
        if let state = journal?.state {
            for (text, expiry) in state.received {
                guard let cid = try? CID(text) else { continue }
                received[cid] = expiry
                if let target = state.replyTargets[text].flatMap(ActorAddress.init) {
                    replyTargets[text] = (target, expiry)
                }
            }
            for (sendID, entry) in state.delivered { sendIDs[sendID] = entry }
            let long = ContinuousClock.now - Self.retryAfter
            for sent in state.outbound.values {
                guard let mail = try? Orrery_Actors_V1_Mail(serializedBytes: sent.mail) else { continue }
                outbound[sent.id] = Outbound(sendID: sent.sendID, mail: mail, expiresAt: sent.expiresAt, lastSent: long)
                if !sent.sendID.isEmpty { sendIDs[sent.sendID] = (sent.id, sent.expiresAt) }
            }
        }
        self.received = received
        self.journal = journal
        self.logger = logger
        self.emit = emit
    }

    /// The orchestrator's grant: authority to send, whom to trust, the directory of the ensemble.
    func apply(_ grant: Orrery_Actors_V1_ActorGrant) throws {
        let delegation = try Delegation(bytes: Array(grant.delegation))
        guard delegation.audience == key.did else {
            throw RunnerError(message: "the grant's delegation is for \(delegation.audience), not this actor")
        }
        let roots = Set(try grant.trustedRoots.map { try DID($0) })
        if gate == nil || gate?.trustedRoots != roots {
            gate = EnvelopeGate(receiver: address, receiverDID: key.did, trustedRoots: roots, delivered: received)
        }
        // Grants are sent whenever an actor of the ensemble registers, concurrently: an older one can arrive after a
        // newer one. An address's key never changes, and access granted is not taken back by a grant (revocation
        // does that), so what an older grant lacks is kept rather than forgotten.
        var merged = grant
        if let previous = self.grant {
            merged.directory = previous.directory.merging(grant.directory) { _, new in new }
            merged.foreign = previous.foreign.merging(grant.foreign) { _, new in new }
        }
        self.grant = merged
        self.delegation = delegation
    }

    /// The grant in force: every grant received, merged.
    var currentGrant: Orrery_Actors_V1_ActorGrant? { grant }

    var isGranted: Bool { grant != nil }

    // MARK: The workload's requests

    func handle(_ request: MailboxLine) async -> MailboxLine {
        switch request.op {
        case "send":
            guard let to = request.to.flatMap(ActorAddress.init), let behavior = request.behavior else {
                return refusal(request.id, "send: needs to and behavior")
            }
            return send(
                request.payloadBytes ?? [], behavior: behavior, to: to,
                replyTo: request.replyTo.flatMap(ActorAddress.init), sendID: request.id ?? "")
        case "reply":
            guard let message = request.toMessage, let target = replyTargets[message]?.address else {
                return refusal(request.id, "reply: no message \(request.toMessage ?? "") was received to reply to")
            }
            return send(
                request.payloadBytes ?? [], behavior: "reply", to: target, replyTo: nil, sendID: request.id ?? "")
        case "checkpointed":
            guard let id = request.id, requested.remove(id) != nil else {
                return refusal(request.id, "checkpointed: no checkpoint '\(request.id ?? "")' was requested")
            }
            checkpointed.insert(id)
            return MailboxLine(op: "ok", id: id)
        default:  // receive
            if let next = nextLine() { return next }
            return await withCheckedContinuation { waiters.append($0) }
        }
    }

    /// The line was written to the workload: a message counts as delivered (the sender is told, a retry is refused
    /// as a replay and answered "delivered").
    func handedOver(_ line: MailboxLine) {
        guard line.op == "message", let text = line.id, let id = try? CID(text) else { return }
        let until = Int64(Date().timeIntervalSince1970) + Self.lifetime
        received[id] = until
        journal?.took(text, expiresAt: until, replyTo: line.replyTo ?? line.from)
        if let from = line.from {
            emit(Self.report(to: from, id: text, delivered: true))
        }
    }

    /// The line could not be written (the workload hung up): it is offered again first.
    func requeue(_ line: MailboxLine) {
        queue.insert(line, at: 0)
        wake()
    }

    private func nextLine() -> MailboxLine? {
        guard let index = queue.firstIndex(where: { !paused || $0.op == "checkpoint" }) else { return nil }
        return queue.remove(at: index)
    }

    private func enqueue(_ line: MailboxLine, first: Bool = false) {
        if first { queue.insert(line, at: 0) } else { queue.append(line) }
        wake()
    }

    private func wake() {
        while !waiters.isEmpty, let line = nextLine() {
            waiters.removeFirst().resume(returning: line)
        }
    }

    private func refusal(_ id: String?, _ reason: String) -> MailboxLine {
        MailboxLine(op: "refused", id: id, reason: reason)
    }

    private func send(_ payload: [UInt8], behavior: String, to: ActorAddress, replyTo: ActorAddress?, sendID: String)
        -> MailboxLine
    {
        let now = Int64(Date().timeIntervalSince1970)
        if !sendID.isEmpty, let earlier = sendIDs[sendID], earlier.until > now {
            // The same send again (the workload reconnected after an agent restart): it went once already.
            return MailboxLine(op: "sent", id: sendID, toMessage: earlier.id)
        }
        guard let grant, let own = delegation else {
            return refusal(sendID, "this actor has no authority to send yet (the orchestrator's grant has not arrived)")
        }
        // Within its deployment, the orchestrator's delegation; to another, the consumer's grant for it.
        let authority: Delegation
        if to.deployment == address.deployment {
            authority = own
        } else if let granted = grant.foreign[to.deployment], let delegation = try? Delegation(bytes: Array(granted)) {
            authority = delegation
        } else {
            return refusal(
                sendID,
                "unauthorised: no grant lets this actor message deployment \(to.deployment) (its consumer gives one with `orrery actor grant`)"
            )
        }
        guard
            let receiver = grant.directory[to.description].flatMap({ try? DID($0) })
                ?? senderKeys[to.description].flatMap({ $0.until > now ? $0.did : nil })
        else {
            return refusal(sendID, "unknown-actor: \(to) has no known key (not deployed, or not started yet)")
        }
        guard outbound.count < Self.undeliveredLimit else {
            return refusal(
                sendID,
                "busy: \(Self.undeliveredLimit) messages are not delivered yet; wait for answers before sending more")
        }
        guard payload.count <= ActorEnvelopes.maximumPayload else {
            return refusal(sendID, "oversized: at most \(ActorEnvelopes.maximumPayload) bytes of payload")
        }
        let envelope: Orrery_Actors_V1_Envelope
        do {
            envelope = try ActorEnvelopes.seal(
                payload: payload, behavior: behavior, from: address, to: to, replyTo: replyTo, key: key,
                receiver: receiver, subject: authority.subject ?? authority.issuer, proofs: [authority],
                lifetime: Self.lifetime, now: now)
        } catch {
            return refusal(sendID, "\(error)")
        }
        guard let id = ActorEnvelopes.identity(of: envelope) else { return refusal(sendID, "sealing failed") }
        let mail = Orrery_Actors_V1_Mail.with {
            $0.to = to.description
            $0.envelope = envelope
        }
        outbound[id.string] = Outbound(
            sendID: sendID, mail: mail, expiresAt: now + Self.lifetime, lastSent: .now)
        if !sendID.isEmpty {
            if sendIDs.count >= 10_000 { sendIDs = sendIDs.filter { $0.value.until > now } }
            sendIDs[sendID] = (id.string, now + Self.lifetime)
        }
        if let bytes = try? mail.serializedData() {
            journal?.sent(
                ActorJournal.Sent(id: id.string, sendID: sendID, mail: bytes, expiresAt: now + Self.lifetime))
        }
        emit(.with { $0.mail = mail })
        return MailboxLine(op: "sent", id: sendID, toMessage: id.string)
    }

    // MARK: Mail from other actors

    /// An envelope for this actor: admitted into the queue, or refused back to its sender with the reason.
    func receive(_ envelope: Orrery_Actors_V1_Envelope) {
        guard let gate else {
            // Not granted yet: the sender's retry comes back later.
            return
        }
        do {
            let admitted = try gate.admit(envelope)
            let line = MailboxLine(
                op: "message", id: admitted.id.string, from: admitted.from.description, behavior: admitted.behavior,
                payload: admitted.payload, replyTo: admitted.replyTo?.description)
            let now = Int64(Date().timeIntervalSince1970)
            if replyTargets.count >= 10_000 { replyTargets = replyTargets.filter { $0.value.until > now } }
            replyTargets[admitted.id.string] = (admitted.replyTo ?? admitted.from, now + Self.lifetime)
            if senderKeys.count >= 10_000 { senderKeys = senderKeys.filter { $0.value.until > now } }
            senderKeys[admitted.from.description] = (admitted.sender, now + Self.lifetime)
            enqueue(line)
        } catch {
            guard let (from, id) = ActorEnvelopes.sender(of: envelope) else { return }
            if case .replayed(let cid) = error {
                // A retry: answered "delivered" once the workload has it; until then it is still queued here.
                if received[cid] != nil { emit(Self.report(to: from.description, id: cid.string, delivered: true)) }
                return
            }
            logger.info(
                "envelope refused", metadata: ["to": "\(address)", "from": "\(from)", "reason": "\(error)"])
            emit(Self.report(to: from.description, id: id, delivered: false, reason: "\(error)", kind: error.kind))
        }
    }

    /// The receiver's answer to an envelope this actor sent.
    func report(_ report: Orrery_Actors_V1_DeliveryReport) {
        if report.kind == "not-here" { return }  // it is moving: the resend finds it after it resumes
        guard let sent = outbound.removeValue(forKey: report.envelopeID) else { return }
        journal?.settled(report.envelopeID, delivered: report.delivered)
        if !report.delivered {
            // Refused: the workload may send it again under the same id.
            sendIDs.removeValue(forKey: sent.sendID)
            enqueue(refusal(sent.sendID, report.reason))
        }
    }

    /// Resends what is undelivered; drops (and tells the workload about) what expired.
    func resend(now: Int64 = Int64(Date().timeIntervalSince1970)) {
        for (id, sent) in outbound {
            if sent.expiresAt <= now {
                outbound.removeValue(forKey: id)
                journal?.settled(id, delivered: false)
                sendIDs.removeValue(forKey: sent.sendID)
                enqueue(refusal(sent.sendID, "expired: not delivered within \(Self.lifetime) s"))
            } else if sent.lastSent.duration(to: .now) >= Self.retryAfter {
                outbound[id]?.lastSent = .now
                emit(.with { $0.mail = sent.mail })
            }
        }
    }

    var undelivered: Int { outbound.count }

    /// Messages admitted and waiting for the workload to take them.
    var queued: Int { queue.count }

    // MARK: Checkpoints

    /// Asks the workload to write its state (a `checkpoint` line ahead of everything queued) and waits for its
    /// `checkpointed`; with `pause`, no message reaches it afterwards (it is about to move).
    /// - Returns: the envelopes it had received (a resumed actor refuses them as replays), or nil on timeout.
    func checkpoint(id: String, pause: Bool, timeout: Duration) async -> [CID: Int64]? {
        if pause { paused = true }
        requested.insert(id)
        enqueue(MailboxLine(op: "checkpoint", id: id), first: true)
        let deadline = ContinuousClock.now + timeout
        while !checkpointed.contains(id), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        requested.remove(id)
        guard checkpointed.remove(id) != nil else {
            queue.removeAll { $0.op == "checkpoint" && $0.id == id }
            paused = false
            wake()
            return nil
        }
        let now = Int64(Date().timeIntervalSince1970)
        received = received.filter { $0.value >= now }
        return received
    }

    /// Held for a move: it receives no message until it resumes elsewhere or the move is abandoned.
    var isPaused: Bool { paused }

    /// Resumes delivery (a planned move was abandoned).
    func unpause() {
        paused = false
        wake()
    }

    static func report(to: String, id: String, delivered: Bool, reason: String = "", kind: String = "")
        -> Orrery_Orchestrator_V1_AgentMessage
    {
        .with {
            $0.mail = .with {
                $0.to = to
                $0.report = .with {
                    $0.envelopeID = id
                    $0.delivered = delivered
                    $0.reason = reason
                    $0.kind = kind
                }
            }
        }
    }
}
