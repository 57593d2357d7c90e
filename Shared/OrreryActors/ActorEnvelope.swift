internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryIdentity
public import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// A message from one actor to another, as the receiving side admits it.
public struct AdmittedEnvelope: Sendable, Equatable {
    public let from: ActorAddress
    /// The sending actor's did:key (the invocation's issuer).
    public let sender: DID
    public let behavior: String
    public let replyTo: ActorAddress?
    public let payload: [UInt8]
    /// The invocation's CID: what de-duplicates retries.
    public let id: CID
}

/// Why an envelope does not reach the workload; each with a reason the sender can read.
public enum EnvelopeRefusal: Error, Equatable, CustomStringConvertible {
    case oversized(Int)
    case malformed(String)
    case misaddressed(String)
    case badSignature(String)
    case expired(String)
    case unauthorised(String)
    case replayed(CID)

    /// The refusal's name, for counting dropped envelopes by reason.
    public var kind: String {
        switch self {
        case .oversized: "oversized"
        case .malformed: "malformed"
        case .misaddressed: "misaddressed"
        case .badSignature: "bad-signature"
        case .expired: "expired"
        case .unauthorised: "unauthorised"
        case .replayed: "replayed"
        }
    }

    public var description: String {
        switch self {
        case .oversized(let size): "oversized: \(size) bytes of payload, at most \(ActorEnvelopes.maximumPayload)"
        case .malformed(let why): "malformed: \(why)"
        case .misaddressed(let why): "misaddressed: \(why)"
        case .badSignature(let why): "bad signature: \(why)"
        case .expired(let why): "expired: \(why)"
        case .unauthorised(let why): "unauthorised: \(why)"
        case .replayed(let id): "replayed: envelope \(id) was delivered already"
        }
    }
}

/// Sealing envelopes: a UCAN invocation of `/orrery/actor/<behavior>` by the sending actor's key, its audience the
/// receiving actor's DID, its subject the party the receiver trusts for its ensemble, the payload bound by digest.
public enum ActorEnvelopes {
    public static let maximumPayload = 1 << 20

    /// The command an envelope of `behavior` invokes; behaviors are 1…64 of `a-z 0-9 -`.
    public static func command(for behavior: String) throws -> Command {
        guard (1...64).contains(behavior.utf8.count),
            behavior.utf8.allSatisfy({
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || $0 == UInt8(ascii: "-")
            })
        else { throw EnvelopeRefusal.malformed("behavior '\(behavior)' is not 1…64 of a-z, 0-9, -") }
        return try Command("/orrery/actor/\(behavior)")
    }

    /// When an envelope expires (its invocation's expiry), without checking anything else; nil when unreadable.
    public static func expiration(of envelope: Orrery_Actors_V1_Envelope) -> Int64? {
        invocation(in: envelope)?.expiration
    }

    /// An envelope's id (its invocation's CID), without checking anything else; nil when unreadable.
    public static func identity(of envelope: Orrery_Actors_V1_Envelope) -> CID? {
        invocation(in: envelope)?.cid
    }

    /// Who an envelope claims to be from and its id, without checking anything else (to route a refusal back).
    public static func sender(of envelope: Orrery_Actors_V1_Envelope) -> (ActorAddress, String)? {
        guard let invocation = invocation(in: envelope), case .string(let from)? = invocation.arguments["from"],
            let address = ActorAddress(from)
        else { return nil }
        return (address, invocation.cid.string)
    }

    private static func invocation(in envelope: Orrery_Actors_V1_Envelope) -> Invocation? {
        guard let tokens = try? UCANContainer.decode(Array(envelope.authority)) else { return nil }
        return tokens.lazy.compactMap { try? Invocation(bytes: $0) }.first
    }

    /// Seals `payload` from `from` (signed with `key`) to `to` (the actor `receiver`), under `proofs` (root first)
    /// rooted in `subject`, valid for `lifetime` seconds.
    public static func seal(
        payload: [UInt8], behavior: String, from: ActorAddress, to: ActorAddress, replyTo: ActorAddress? = nil,
        key: SigningKey, receiver: DID, subject: DID, proofs: [Delegation], lifetime: Int64 = 60,
        now: Int64 = Int64(Date().timeIntervalSince1970)
    ) throws -> Orrery_Actors_V1_Envelope {
        let invocation = Invocation.issue(
            by: key, subject: subject, audience: receiver, command: try command(for: behavior),
            arguments: [
                "from": .string(from.description), "to": .string(to.description), "behavior": .string(behavior),
                "reply_to": .string(replyTo?.description ?? ""),
                "payload_sha256": .bytes(Array(SHA256.hash(data: payload))),
            ], proofs: proofs.map(\.cid), expiration: now + lifetime, issuedAt: now)
        return .with {
            $0.authority = Data(
                (try? UCANContainer.encode([invocation.envelope.bytes] + proofs.map(\.envelope.bytes))) ?? [])
            $0.payload = Data(payload)
        }
    }
}

/// The receiving side's checks, in order of cost: size, shape, address, payload digest, root, then the UCAN chain
/// (signatures, expiry, commands, policies, revocation), then replay. Only an envelope passing every one is admitted.
public final class EnvelopeGate: Sendable {
    public let receiver: ActorAddress
    public let receiverDID: DID
    /// Whom the receiver's ensemble trusts as the root of senders' authority (the orchestrator, the consumer).
    public let trustedRoots: Set<DID>
    private let validator = ChainValidator()
    private let isRevoked: @Sendable (CID) -> Bool
    /// Delivered envelopes until they expire (a replay within the lifetime is refused; after it, expiry refuses it).
    private let delivered = Mutex<[CID: Int64]>([:])

    /// `delivered`: envelopes already delivered to this actor (restored with its checkpoint) and their expiries.
    public init(
        receiver: ActorAddress, receiverDID: DID, trustedRoots: Set<DID>, delivered: [CID: Int64] = [:],
        isRevoked: @escaping @Sendable (CID) -> Bool = { _ in false }
    ) {
        self.receiver = receiver
        self.receiverDID = receiverDID
        self.trustedRoots = trustedRoots
        self.isRevoked = isRevoked
        self.delivered.withLock { $0 = delivered }
    }

    public func admit(_ envelope: Orrery_Actors_V1_Envelope, now: Int64 = Int64(Date().timeIntervalSince1970))
        throws(EnvelopeRefusal) -> AdmittedEnvelope
    {
        guard envelope.payload.count <= ActorEnvelopes.maximumPayload else {
            throw .oversized(envelope.payload.count)
        }
        // The container is a set of tokens: exactly one invocation, the rest its delegations.
        var invocations: [Invocation] = []
        var proofs: [CID: Delegation] = [:]
        do {
            for token in try UCANContainer.decode(Array(envelope.authority)) {
                if let invocation = try? Invocation(bytes: token) {
                    invocations.append(invocation)
                } else {
                    let delegation = try Delegation(bytes: token)
                    proofs[delegation.cid] = delegation
                }
            }
        } catch {
            throw .malformed("the authority holds a token that is neither an invocation nor a delegation (\(error))")
        }
        guard invocations.count == 1, let invocation = invocations.first else {
            throw .malformed("the authority holds \(invocations.count) invocations, not one")
        }
        let arguments = invocation.arguments
        guard case .string(let fromText)? = arguments["from"], let from = ActorAddress(fromText),
            case .string(let toText)? = arguments["to"], case .string(let behavior)? = arguments["behavior"],
            case .string(let replyText)? = arguments["reply_to"], case .bytes(let digest)? = arguments["payload_sha256"]
        else { throw .malformed("the invocation lacks from, to, behavior, reply_to or payload_sha256") }
        guard toText == receiver.description, invocation.audience == receiverDID else {
            throw .misaddressed(
                "it is for \(toText) (\(invocation.audience?.string ?? "no audience")), this is \(receiver)")
        }
        guard (try? ActorEnvelopes.command(for: behavior)) == invocation.command else {
            throw .malformed("the command \(invocation.command) is not the behavior \(behavior)'s")
        }
        guard digest == Array(SHA256.hash(data: envelope.payload)) else {
            throw .badSignature("the payload is not the one the sender signed")
        }
        guard trustedRoots.contains(invocation.subject) else {
            throw .unauthorised("its authority roots in \(invocation.subject), which this ensemble does not trust")
        }
        do {
            _ = try validator.validate(invocation, proofs: proofs, now: now, isRevoked: isRevoked)
        } catch let error as UCANError {
            switch error.name {
            case .expired: throw .expired(error.reason)
            case .invalidSignature: throw .badSignature(error.reason)
            default: throw .unauthorised(error.reason)
            }
        } catch {
            throw .unauthorised("\(error)")
        }
        let id = invocation.cid
        let expiry = invocation.expiration ?? now
        let fresh = delivered.withLock { delivered in
            if delivered.count > 10_000 { delivered = delivered.filter { $0.value >= now } }
            return delivered.updateValue(expiry, forKey: id) == nil
        }
        guard fresh else { throw .replayed(id) }
        return AdmittedEnvelope(
            from: from, sender: invocation.issuer, behavior: behavior,
            replyTo: replyText.isEmpty ? nil : ActorAddress(replyText), payload: [UInt8](envelope.payload), id: id)
    }
}
