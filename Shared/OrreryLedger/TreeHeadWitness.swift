#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryIdentity
public import OrreryProto
internal import SwiftProtobuf

/// A notary client's memory of the log: the last signed tree head it verified, kept in a file. Each newer head
/// must be signed by the same log and proven consistent with the one remembered, so a notary that rewrote or
/// forked its history is caught by its own clients (docs/ARCHITECTURE.md §3).
public struct TreeHeadWitness: Sendable {
    public let file: String

    public init(file: String) {
        self.file = file
    }

    /// The head last verified, if any.
    public func last() -> Orrery_Notary_V1_SignedTreeHead? {
        guard let data = FileManager.default.contents(atPath: file) else { return nil }
        return try? Orrery_Notary_V1_SignedTreeHead(serializedBytes: data)
    }

    /// The size a consistency proof should start from.
    public var knownSize: UInt64 { last()?.head.treeSize ?? 0 }

    /// Checks `head` (its signature, and against the remembered one with `consistency`) and remembers it.
    /// Returns the head as parsed from its signed bytes.
    ///
    /// Only evidence is an alarm: another log, two roots for one size, a proof from the remembered size that does not
    /// verify, or a smaller tree signed after the remembered one. A head that cannot be judged — older than the one
    /// remembered (delivered late), or larger without a proof from the remembered size (the proof was asked for
    /// before this witness moved on) — throws `TreeHeadError.unprovable` and changes nothing.
    @discardableResult
    public func observe(
        _ head: Orrery_Notary_V1_SignedTreeHead, consistency: Orrery_Notary_V1_ConsistencyProof?
    ) throws -> Orrery_Notary_V1_TreeHead {
        let verified = try Self.verify(head)
        if let previous = last() {
            let before = try Self.verify(previous)
            guard verified.logDid == before.logDid else {
                throw TreeHeadError.otherLog(expected: before.logDid, found: verified.logDid)
            }
            if verified.treeSize < before.treeSize {
                guard let newer = verified.timestamp.validDate, let older = before.timestamp.validDate, newer > older
                else {
                    throw TreeHeadError.unprovable(known: before.treeSize, offered: verified.treeSize)
                }
                throw TreeHeadError.shrank(from: before.treeSize, to: verified.treeSize)
            }
            if verified.treeSize == before.treeSize {
                guard verified.rootHash == before.rootHash else {
                    throw TreeHeadError.inconsistent(from: before.treeSize, to: verified.treeSize)
                }
                return verified
            }
            guard let consistency, consistency.oldSize == before.treeSize, consistency.newSize == verified.treeSize
            else { throw TreeHeadError.unprovable(known: before.treeSize, offered: verified.treeSize) }
            guard
                MerkleTree.verifyConsistency(
                    oldSize: before.treeSize, oldRoot: [UInt8](before.rootHash), newSize: verified.treeSize,
                    newRoot: [UInt8](verified.rootHash), proof: consistency.path.map { [UInt8]($0) })
            else { throw TreeHeadError.inconsistent(from: before.treeSize, to: verified.treeSize) }
        }
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data(try head.serializedBytes() as [UInt8]).write(to: URL(fileURLWithPath: file), options: .atomic)
        return verified
    }

    /// The tree head inside a signed head, after checking the log's signature over it.
    public static func verify(_ head: Orrery_Notary_V1_SignedTreeHead) throws -> Orrery_Notary_V1_TreeHead {
        let signed = head.signed
        let parsed: Orrery_Notary_V1_TreeHead
        do {
            parsed = try Orrery_Notary_V1_TreeHead(serializedBytes: signed.payload)
        } catch {
            throw TreeHeadError.badSignature("the signed payload is not a tree head")
        }
        do {
            try SignedMessage.verify(
                signed, type: Orrery_Notary_V1_TreeHead.protoMessageName, requiring: [try DID(parsed.logDid)])
        } catch {
            throw TreeHeadError.badSignature("\(error)")
        }
        return parsed
    }
}

/// Why a tree head was not accepted.
public enum TreeHeadError: Error, Equatable, CustomStringConvertible, Sendable {
    case badSignature(String)
    case otherLog(expected: String, found: String)
    case shrank(from: UInt64, to: UInt64)
    case inconsistent(from: UInt64, to: UInt64)
    /// Not evidence of anything: the head cannot be checked against the remembered one (it is older, or comes
    /// without a consistency proof from the remembered size).
    case unprovable(known: UInt64, offered: UInt64)

    /// Whether this is evidence that the log was rewritten or forked (an alarm), rather than a head that could not
    /// be checked.
    public var isEvidence: Bool {
        if case .unprovable = self { return false }
        return true
    }

    public var description: String {
        switch self {
        case .badSignature(let reason): return "the tree head's signature does not verify: \(reason)"
        case .otherLog(let expected, let found):
            return "the tree head is signed by \(found), not by the log \(expected)"
        case .shrank(let from, let to):
            return "the notary rewrote history: its log shrank from \(from) to \(to) entries"
        case .inconsistent(let from, let to):
            return
                "the notary rewrote history: the tree of \(to) entries is not an extension of the \(from) entries seen before"
        case .unprovable(let known, let offered):
            return
                "a tree head of \(offered) entries cannot be checked against the \(known) remembered (it is older, or comes without a consistency proof from \(known)): not taken"
        }
    }
}
