internal import Foundation
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// Actors as the orchestrator sees them: it learns each actor's did:key from the agent that created it, grants it
/// authority to message its ensemble (a delegation of /orrery/actor limited to the deployment's addresses and to
/// its own `from`), tells every actor of the deployment who the others are, and routes mail to the device that
/// runs the receiving actor now — holding envelopes (bounded, in order, expired ones dropped) while it moves.
final class ActorRouter: Sendable {
    let client: PostgresClient
    let logger: Logger
    let key: SigningKey
    let hub: AgentHub
    let offers: OfferStore
    private let held = Mutex(HeldEnvelopes())
    private let moving = Mutex<Set<String>>([])

    init(client: PostgresClient, logger: Logger, key: SigningKey, hub: AgentHub, offers: OfferStore) {
        self.client = client
        self.logger = logger
        self.key = key
        self.hub = hub
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

    /// Sends each actor of the deployment on a line held here its grant with the whole directory.
    func sendGrants(deployment: String) async throws {
        let rows = try await client.query(
            """
            SELECT a.allocation, a.replica, a.actor_did, a.delegation, o.id, o.device_did, d.consumer_did
            FROM actors a JOIN deployments d ON d.id = a.deployment_id
            LEFT JOIN offers o ON o.deployment_id = a.deployment_id AND o.allocation = a.allocation
                 AND o.replica = a.replica AND o.state IN (5, 6)
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
            hub.send(
                .with {
                    $0.actorGrant = .with {
                        $0.offerID = target.offer
                        $0.address = target.address
                        $0.delegation = target.delegation
                        $0.directory = directory
                        $0.trustedRoots = [key.did.string, consumer]
                    }
                }, to: target.device)
        }
    }

    // MARK: Mail

    /// Largest envelope routed: its payload limit plus room for its authority.
    static let maximumMail = ActorEnvelopes.maximumPayload + (64 << 10)

    /// Routes mail to the device running its actor now; an envelope for an actor that is moving, not running or
    /// whose device's line is not here is held; a report that cannot go now is dropped (the sender resends).
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
        if !isMoving, let device = try await runningDevice(address), hub.holds(device) {
            hub.send(.with { $0.mail = mail }, to: device)
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

    private func runningDevice(_ address: ActorAddress) async throws -> String? {
        let rows = try await client.query(
            """
            SELECT device_did FROM offers WHERE deployment_id = \(address.deployment)
              AND allocation = \(address.allocation) AND replica = \(Int32(address.replica)) AND state = 6
            LIMIT 1
            """, logger: logger)
        for try await device in rows.decode(String.self) { return device }
        return nil
    }

    /// Delivers held mail whose actor runs again, until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let now = Int64(Date().timeIntervalSince1970)
            let waiting = held.withLock { $0.actors }
            for address in waiting where !moving.withLock({ $0.contains(address.description) }) {
                guard let device = try? await runningDevice(address), hub.holds(device) else { continue }
                let envelopes = held.withLock { $0.release(address, now: now) }
                for envelope in envelopes {
                    hub.send(
                        .with {
                            $0.mail = .with {
                                $0.to = address.description
                                $0.envelope = envelope
                            }
                        }, to: device)
                }
                logger.info("held mail delivered", metadata: ["to": "\(address)", "count": "\(envelopes.count)"])
            }
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
