internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization
internal import OrreryRuntimeCore

/// Actors as the orchestrator sees them: it learns each actor's did:key from the agent that created it, grants it
/// authority to message its ensemble (a delegation of /orrery/actor limited to the deployment's addresses and to
/// its own `from`), tells every actor of the deployment who the others are, and routes mail to the device that
/// runs the receiving actor now — holding envelopes (bounded, in order, expired ones dropped) while it moves.
final class ActorRouter: Sendable {
    let client: PostgresClient
    let logger: Logger
    let key: SigningKey
    /// Writes to agent lines, here or through another replica.
    let relay: LineRelay
    var hub: AgentHub { relay.hub }
    let offers: OfferStore
    private let held = Mutex(HeldEnvelopes())
    private let moving = Mutex<Set<String>>([])

    init(client: PostgresClient, logger: Logger, key: SigningKey, relay: LineRelay, offers: OfferStore) {
        self.client = client
        self.logger = logger
        self.key = key
        self.relay = relay
        self.offers = offers
    }

    // MARK: Identities and grants

    /// An agent's announcement of an actor it runs: signed by that device and by the actor, for the device's own
    /// offer; the first key of an address is the actor's for good (a resumed actor keeps it).
    func register(_ signed: Orrery_Common_V1_Signed, from device: DID) async throws {
        let identity = try Orrery_Actors_V1_ActorIdentity(serializedBytes: signed.payload)
        let actor = try DID(identity.actorDid)
        try SignedMessage.verify(
            signed, type: Orrery_Actors_V1_ActorIdentity.protoMessageName, requiring: [device, actor])
        guard let (owner, offer) = try await offers.offer(identity.offerID), owner == device.string,
            let address = ActorAddress(
                deployment: offer.deploymentID, allocation: offer.allocation, replica: Int(offer.replica)),
            address.description == identity.address
        else { throw ActorRouterError("actor \(identity.address): not this device's offer \(identity.offerID)") }
        // The orchestrator must be able to reseal the key when the actor moves.
        _ = try ActorKeySeal.open(Array(identity.sealedKey), with: key, expecting: actor)
        let policy = try Policy(
            .list([
                .list([.string("like"), .string(".to"), .string("actor://\(offer.deploymentID)/*")]),
                .list([.string("=="), .string(".from"), .string(address.description)]),
            ]))
        let delegation = Delegation.issue(
            by: key, to: actor, subject: key.did, command: try Command("/orrery/actor"), policy: policy,
            expiration: nil)
        let rows = try await client.query(
            """
            INSERT INTO actors (deployment_id, allocation, replica, actor_did, sealed_key, delegation)
            VALUES (\(offer.deploymentID), \(offer.allocation), \(Int32(offer.replica)), \(actor.string),
                    \(Data(identity.sealedKey)), \(Data(delegation.envelope.bytes)))
            ON CONFLICT (deployment_id, allocation, replica) DO NOTHING RETURNING actor_did
            """, logger: logger)
        var inserted = false
        for try await _ in rows.decode(String.self) { inserted = true }
        if !inserted, let known = try await actorDID(address), known != actor.string {
            throw ActorRouterError("\(address) is actor \(known); a device cannot give it another key (\(actor))")
        }
        if inserted { logger.info("actor registered", metadata: ["address": "\(address)", "did": "\(actor)"]) }
        try await sendGrants(deployment: offer.deploymentID)
        // Actors granted access to this deployment learn the new one's key too.
        let granted = try await client.query(
            "SELECT DISTINCT deployment_id FROM actor_grants WHERE to_deployment = \(offer.deploymentID)",
            logger: logger)
        var senders: [String] = []
        for try await deployment in granted.decode(String.self) { senders.append(deployment) }
        for deployment in senders { try await sendGrants(deployment: deployment) }
    }

    func actorDID(_ address: ActorAddress) async throws -> String? {
        let rows = try await client.query(
            """
            SELECT actor_did FROM actors WHERE deployment_id = \(address.deployment)
              AND allocation = \(address.allocation) AND replica = \(Int32(address.replica))
            """, logger: logger)
        for try await did in rows.decode(String.self) { return did }
        return nil
    }

    /// Sends each running actor of the deployment its grant with the whole directory, on its agent line (here or
    /// through the replica holding it).
    func sendGrants(deployment: String) async throws {
        let rows = try await client.query(
            """
            SELECT a.allocation, a.replica, a.actor_did, a.delegation, o.id, o.device_did, d.consumer_did
            FROM actors a JOIN deployments d ON d.id = a.deployment_id
            LEFT JOIN offers o ON o.deployment_id = a.deployment_id AND o.allocation = a.allocation
                 AND o.replica = a.replica AND o.state IN (\(OfferState.deploying), \(OfferState.running))
            WHERE a.deployment_id = \(deployment)
            """, logger: logger)
        var directory: [String: String] = [:]
        var targets: [(address: String, delegation: Data, offer: String, device: String)] = []
        var consumer = ""
        for try await (allocation, replica, did, delegation, offer, device, owner) in rows.decode(
            (String, Int32, String, Data, String?, String?, String).self)
        {
            let address = "actor://\(deployment)/\(allocation)/\(replica)"
            directory[address] = did
            consumer = owner
            if let offer, let device { targets.append((address, delegation, offer, device)) }
        }
        for target in targets {
            guard let sender = ActorAddress(target.address) else { continue }
            var grant = Orrery_Actors_V1_ActorGrant.with {
                $0.offerID = target.offer
                $0.address = target.address
                $0.delegation = target.delegation
                $0.directory = directory
                $0.trustedRoots = [key.did.string, consumer]
            }
            for (deployment, delegation) in try await foreignGrants(of: sender) {
                grant.foreign[deployment] = delegation
                for (address, did) in try await actors(of: deployment) { grant.directory[address] = did }
            }
            await relay.send(.with { $0.actorGrant = grant }, to: target.device)
        }
    }

    /// Every actor of a deployment: address → did:key.
    func actors(of deployment: String) async throws -> [String: String] {
        let rows = try await client.query(
            "SELECT allocation, replica, actor_did FROM actors WHERE deployment_id = \(deployment)", logger: logger)
        var found: [String: String] = [:]
        for try await (allocation, replica, did) in rows.decode((String, Int32, String).self) {
            found["actor://\(deployment)/\(allocation)/\(replica)"] = did
        }
        return found
    }

    /// The consumer's delegations letting `sender` message other deployments, by deployment (the newest of each).
    private func foreignGrants(of sender: ActorAddress) async throws -> [String: Data] {
        let rows = try await client.query(
            """
            SELECT to_deployment, delegation FROM actor_grants WHERE deployment_id = \(sender.deployment)
              AND allocation = \(sender.allocation) AND replica = \(Int32(sender.replica)) ORDER BY created_at
            """, logger: logger)
        var found: [String: Data] = [:]
        for try await (deployment, delegation) in rows.decode((String, Data).self) { found[deployment] = delegation }
        return found
    }

    /// Checks and keeps a consumer's delegation letting an actor (of any deployment) message one of its deployments,
    /// then sends the actor its grant again. `consumer` owns that deployment (checked by the API).
    /// - Returns: the delegation's CID.
    func grantAccess(from sender: ActorAddress, to deployment: String, delegation bytes: [UInt8], consumer: String)
        async throws -> String
    {
        let delegation = try ConsumerGrant.decode(bytes)
        guard let actor = try await actorDID(sender) else {
            throw RPCError(code: .failedPrecondition, message: "from: \(sender) has not started yet (no key known)")
        }
        let now = Int64(Date().timeIntervalSince1970)
        var problems = ConsumerGrant.problems(
            delegation, consumer: consumer, audience: actor, audienceName: "\(sender) (\(actor))", now: now)
        let command = delegation.command.description
        if command != "/orrery/actor", !command.hasPrefix("/orrery/actor/") {
            problems.append("its command \(command) is not /orrery/actor…")
        }
        // Its policy must hold the sender to itself and the receivers to the named deployment.
        let elsewhere = "actor://\(sender.deployment == deployment ? "dep_elsewhere" : sender.deployment)/any/0"
        problems += ConsumerGrant.policyProblems(
            delegation.policy, from: sender.description, to: "actor://\(deployment)/any/0",
            strangerFrom: "actor://\(sender.deployment)/impostor/0", strangerTo: elsewhere,
            allowed: "\(sender) message \(deployment)", fromName: sender.description, toName: deployment)
        guard problems.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "delegation: " + problems.joined(separator: "; "))
        }
        try await client.query(
            """
            INSERT INTO actor_grants (cid, deployment_id, allocation, replica, to_deployment, delegation)
            VALUES (\(delegation.cid.string), \(sender.deployment), \(sender.allocation), \(Int32(sender.replica)),
                    \(deployment), \(Data(bytes)))
            ON CONFLICT (cid) DO NOTHING
            """, logger: logger)
        try await sendGrants(deployment: sender.deployment)
        return delegation.cid.string
    }

    // MARK: Mail

    /// Largest envelope routed: its payload limit plus room for its authority.
    static let maximumMail = ActorEnvelopes.maximumPayload + (64 << 10)

    /// Routes mail to the device running its actor now — on its line here, or relayed to the replica holding it; an
    /// envelope for an actor that is moving or not running is held here; a report that cannot go now is dropped (the
    /// sender resends).
    func route(_ mail: Orrery_Actors_V1_Mail) async throws {
        guard let address = ActorAddress(mail.to) else {
            logger.notice("mail to something that is not an actor address dropped", metadata: ["to": "\(mail.to)"])
            return
        }
        if case .envelope(let envelope) = mail.kind {
            guard envelope.payload.count + envelope.authority.count <= Self.maximumMail else {
                logger.notice("oversized mail dropped", metadata: ["to": "\(address)"])
                return
            }
        }
        let isMoving = moving.withLock { $0.contains(address.description) }
        if !isMoving, let device = try await runningDevice(address) {
            var expiry: Date?
            if case .envelope(let envelope) = mail.kind { expiry = Self.deadline(of: envelope) }
            await relay.send(.with { $0.mail = mail }, to: device, until: expiry)
            return
        }
        guard case .envelope(let envelope) = mail.kind else { return }
        // Only an actor that exists has mail held for it (the held queues are bounded per actor, not in number).
        guard try await actorDID(address) != nil else {
            if let (from, id) = ActorEnvelopes.sender(of: envelope) {
                try await route(
                    .with {
                        $0.to = from.description
                        $0.report = .with {
                            $0.envelopeID = id
                            $0.reason = "unknown-actor: no actor \(address) was ever started"
                            $0.kind = "unknown-actor"
                        }
                    })
            }
            return
        }
        let now = Int64(Date().timeIntervalSince1970)
        let outcome = held.withLock {
            $0.hold(envelope, for: address, expiresAt: ActorEnvelopes.expiration(of: envelope) ?? now, now: now)
        }
        if outcome == .full {
            logger.notice("held mail is at its limit; dropped (the sender resends)", metadata: ["to": "\(address)"])
        }
    }

    /// When an envelope stops being worth delivering.
    private static func deadline(of envelope: Orrery_Actors_V1_Envelope) -> Date? {
        ActorEnvelopes.expiration(of: envelope).map { Date(timeIntervalSince1970: TimeInterval($0)) }
    }

    private func runningDevice(_ address: ActorAddress) async throws -> String? {
        let rows = try await client.query(
            """
            SELECT device_did FROM offers WHERE deployment_id = \(address.deployment)
              AND allocation = \(address.allocation) AND replica = \(Int32(address.replica))
              AND state = \(OfferState.running)
            LIMIT 1
            """, logger: logger)
        for try await device in rows.decode(String.self) { return device }
        return nil
    }

    /// Delivers held mail whose actor runs again, until cancelled.
    func run() async {
        await PeriodicWork("delivering held mail", every: .milliseconds(100), pausesFirst: true, logger: logger) {
            await self.deliverHeld()
        }.run()
    }

    /// One pass: the mail held for actors that run again goes to their devices.
    private func deliverHeld() async {
        let now = Int64(Date().timeIntervalSince1970)
        let waiting = held.withLock { $0.actors }
        for address in waiting where !moving.withLock({ $0.contains(address.description) }) {
            guard let device = try? await runningDevice(address) else { continue }
            let envelopes = held.withLock { $0.release(address, now: now) }
            for envelope in envelopes {
                await relay.send(
                    .with {
                        $0.mail = .with {
                            $0.to = address.description
                            $0.envelope = envelope
                        }
                    }, to: device,
                    until: Self.deadline(of: envelope))
            }
            logger.info("held mail delivered", metadata: ["to": "\(address)", "count": "\(envelopes.count)"])
        }
    }

    /// Envelopes dropped because they expired while held.
    var droppedExpired: Int { held.withLock { $0.droppedExpired } }

    /// While an actor moves, its mail is held here.
    func setMoving(_ address: ActorAddress, _ on: Bool) {
        _ = moving.withLock { on ? $0.insert(address.description).inserted : $0.remove(address.description) != nil }
    }
}

struct ActorRouterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
