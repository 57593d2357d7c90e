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

/// The settlement journal's hash chain: each entry's digest covers the digest before it and every field of the
/// entry, so changing, removing or reordering an entry changes every digest after it; the gateway signs the chain's
/// head (a checkpoint), so a chain recomputed after tampering no longer matches what the gateway signed.
public enum JournalChain {
    /// The digest before the first entry.
    public static let genesis = [UInt8](repeating: 0, count: 32)
    static let domain = Array("orrery.settlement.journal.v1".utf8) + [0]

    /// The digest of `entry` following `previous` (as `ChainedEntry` in settlement.proto describes it).
    public static func digest(previous: [UInt8], entry: Orrery_Settlement_V1_ChainedEntry) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: domain)
        hasher.update(data: previous)
        var fields: [[UInt8]] = [
            Array(String(entry.id).utf8), Array(entry.kind.utf8), Array(entry.contractID.utf8), Array(entry.memo.utf8),
            Array(entry.invoker.utf8), Array(entry.idempotencyKey.utf8), [UInt8](entry.requestSha256),
            Array(String(entry.createdAtMicros).utf8), Array(String(entry.lines.count).utf8),
        ]
        for line in entry.lines { fields += [Array(line.account.utf8), Array(line.amount.utf8)] }
        for field in fields {
            let length = UInt32(truncatingIfNeeded: field.count)
            hasher.update(data: [
                UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff),
            ])
            hasher.update(data: field)
        }
        return Array(hasher.finalize())
    }

    /// A checkpoint of the chain signed by the gateway's key.
    public static func checkpoint(position: UInt64, digest: [UInt8], at time: Date, key: SigningKey)
        throws -> Orrery_Common_V1_Signed
    {
        let body = Orrery_Settlement_V1_JournalCheckpoint.with {
            $0.position = position
            $0.chainDigest = Data(digest)
            $0.gatewayDid = key.did.string
            $0.signedAt = Google_Protobuf_Timestamp(date: time)
        }
        return SignedMessage.make(
            type: Orrery_Settlement_V1_JournalCheckpoint.protoMessageName, payload: try body.serializedBytes(),
            signers: [key])
    }

    /// The checkpoint inside `signed`, after checking that the gateway it names signed it.
    public static func verifyCheckpoint(_ signed: Orrery_Common_V1_Signed) throws
        -> Orrery_Settlement_V1_JournalCheckpoint
    {
        let body = try Orrery_Settlement_V1_JournalCheckpoint(serializedBytes: signed.payload)
        try SignedMessage.verify(
            signed, type: Orrery_Settlement_V1_JournalCheckpoint.protoMessageName, requiring: [try DID(body.gatewayDid)]
        )
        return body
    }
}
