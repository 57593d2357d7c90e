internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Issues onboarding delegations with the operator's key, once per idempotency key.
struct DelegationIssuer {
    static let maximumLifetime: Int64 = 30 * 86_400

    let operatorKey: SigningKey
    let database: PostgresClient
    let logger: Logger

    func issue(_ request: Orrery_Identity_V1_IssueDelegationRequest) async throws
        -> Orrery_Identity_V1_IssueDelegationResponse
    {
        let audience: DID
        do { audience = try DID(request.audience) } catch {
            throw RPCError(code: .invalidArgument, message: "audience: \(error)")
        }
        let command: Command
        do { command = try Command(request.command) } catch {
            throw RPCError(code: .invalidArgument, message: "command: \(error)")
        }
        guard command.string.hasPrefix("/orrery") else {
            throw RPCError(code: .invalidArgument, message: "command: only /orrery commands are issued here")
        }
        guard (1...Self.maximumLifetime).contains(request.lifetimeSeconds) else {
            throw RPCError(code: .invalidArgument, message: "lifetime_seconds must be 1…\(Self.maximumLifetime)")
        }
        let policy: Policy
        do {
            policy = request.policyJson.isEmpty ? .empty : try Policy(try IPLDJSON.parse(request.policyJson))
        } catch {
            throw RPCError(code: .invalidArgument, message: "policy_json: \(error)")
        }
        guard !request.idempotencyKey.isEmpty, request.idempotencyKey.count <= 200 else {
            throw RPCError(code: .invalidArgument, message: "idempotency_key is required (at most 200 characters)")
        }
        let digest = Hex.encode(SHA256.hash(data: try request.serializedBytes() as [UInt8]))
        if let earlier = try await earlier(request.idempotencyKey, digest: digest) { return earlier }
        let delegation = Delegation.issue(
            by: operatorKey, to: audience, subject: operatorKey.did, command: command, policy: policy,
            expiration: Int64(Date().timeIntervalSince1970) + request.lifetimeSeconds)
        let container = try DelegationChain.write([delegation])
        try await database.query(
            """
            INSERT INTO issued_delegations (idempotency_key, request_digest, cid, container, issued_to)
            VALUES (\(request.idempotencyKey), \(digest), \(delegation.cid.string), \(container), \(audience.string))
            ON CONFLICT (idempotency_key) DO NOTHING
            """,
            logger: logger)
        // A concurrent retry may have won: everyone returns what was stored first.
        guard let stored = try await earlier(request.idempotencyKey, digest: digest) else {
            throw RPCError(code: .internalError, message: "the delegation was not recorded")
        }
        logger.info("issued delegation", metadata: ["cid": "\(stored.cid)", "to": "\(audience)", "cmd": "\(command)"])
        return stored
    }

    private func earlier(_ key: String, digest: String) async throws -> Orrery_Identity_V1_IssueDelegationResponse? {
        let rows = try await database.query(
            "SELECT request_digest, cid, container FROM issued_delegations WHERE idempotency_key = \(key)",
            logger: logger)
        for try await (storedDigest, cid, container) in rows.decode((String, String, String).self) {
            guard storedDigest == digest else {
                throw RPCError(
                    code: .alreadyExists, message: "idempotency_key was already used for a different request")
            }
            return .with {
                $0.cid = cid
                $0.container = container
            }
        }
        return nil
    }
}
