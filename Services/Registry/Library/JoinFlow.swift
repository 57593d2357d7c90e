internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Proof of key possession at join: the registry signs a fresh `JoinChallenge` for the device, the device
/// countersigns it, and the registry consumes the challenge once.
struct JoinFlow: Sendable {
    static let challengeType = "orrery.registry.v1.JoinChallenge"
    static let challengeLifetime: TimeInterval = 60

    let registryKey: SigningKey
    let client: PostgresClient
    let logger: Logger

    func begin(deviceDID: DID) async throws -> Orrery_Common_V1_Signed {
        var challenge = Orrery_Registry_V1_JoinChallenge()
        challenge.deviceDid = deviceDID.string
        challenge.registryDid = registryKey.did.string
        challenge.nonce = Data(Nonce.random(count: 32))
        let expiry = Date().addingTimeInterval(Self.challengeLifetime)
        challenge.expiresAt = Google_Protobuf_Timestamp(date: expiry)
        try await client.query(
            "INSERT INTO join_challenges (nonce, device_did, expires_at) VALUES (\(challenge.nonce), \(deviceDID.string), \(expiry))",
            logger: logger)
        if Int.random(in: 0..<64) == 0 {
            try await client.query("DELETE FROM join_challenges WHERE expires_at < now()", logger: logger)
        }
        return SignedMessage.make(
            type: Self.challengeType, payload: try challenge.serializedData(), signers: [registryKey])
    }

    /// Checks a countersigned challenge's signatures and addressing; returns its nonce, which the join's
    /// transaction consumes (`DeviceStore.join`).
    /// - Throws: `RPCError` — `unauthenticated` for a bad signature, `permissionDenied` for a challenge of someone
    ///   else, `invalidArgument` for a malformed one.
    func verify(_ signed: Orrery_Common_V1_Signed, deviceDID: DID) throws -> Data {
        do {
            try SignedMessage.verify(signed, type: Self.challengeType, requiring: [registryKey.did, deviceDID])
        } catch let error as SignedMessageError {
            switch error {
            case .missingSignature, .wrongType: throw RPCError(code: .permissionDenied, message: "challenge: \(error)")
            default: throw RPCError(code: .unauthenticated, message: "challenge: \(error)")
            }
        }
        let challenge: Orrery_Registry_V1_JoinChallenge
        do {
            challenge = try Orrery_Registry_V1_JoinChallenge(serializedBytes: signed.payload)
        } catch {
            throw RPCError(code: .invalidArgument, message: "challenge: the payload is not a JoinChallenge")
        }
        guard challenge.deviceDid == deviceDID.string, challenge.registryDid == registryKey.did.string else {
            throw RPCError(
                code: .permissionDenied, message: "challenge: it was issued to another device or by another registry")
        }
        return challenge.nonce
    }
}
