import Foundation
import OrreryIdentity
import OrreryLedger
import OrreryProto
import SwiftProtobuf
import Testing

/// The witness raises an alarm on evidence only: a fork, a failed proof from the size it remembers, a smaller tree
/// signed later. A head that merely crossed a newer one in flight is not taken, and is no alarm.
@Suite("Tree head witness: evidence, not noise")
struct TreeHeadWitnessTests {
    let key = SigningKey()
    let leaves = MerkleTreeTests.leaves(40)

    func head(_ size: Int, at seconds: Double, leaves: [MerkleTree.Hash]? = nil) throws
        -> Orrery_Notary_V1_SignedTreeHead
    {
        let tree = Orrery_Notary_V1_TreeHead.with {
            $0.treeSize = UInt64(size)
            $0.rootHash = Data(MerkleTreeTests.referenceRoot((leaves ?? self.leaves)[0..<size]))
            $0.timestamp = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: seconds))
            $0.logDid = key.did.string
        }
        let signed = SignedMessage.make(
            type: Orrery_Notary_V1_TreeHead.protoMessageName, payload: try tree.serializedBytes(), signers: [key])
        return .with {
            $0.head = tree
            $0.signed = signed
        }
    }

    func proof(_ old: Int, _ new: Int, leaves: [MerkleTree.Hash]? = nil) throws -> Orrery_Notary_V1_ConsistencyProof {
        let path = try MerkleTree.consistencyProof(
            oldSize: UInt64(old), newSize: UInt64(new), subtree: MerkleTreeTests.subtree(leaves ?? self.leaves))
        return .with {
            $0.oldSize = UInt64(old)
            $0.newSize = UInt64(new)
            $0.path = path.map { Data($0) }
        }
    }

    func witness() throws -> TreeHeadWitness {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("witness-\(UUID().uuidString)")
        return TreeHeadWitness(file: directory.appendingPathComponent("head.pb").path)
    }

    func expectError(_ expected: TreeHeadError, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected \(expected)")
        } catch let error as TreeHeadError {
            #expect(error == expected)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("heads grow with proofs from the remembered size; the same head again changes nothing")
    func growth() throws {
        let witness = try witness()
        try witness.observe(try head(10, at: 10), consistency: nil)
        try witness.observe(try head(21, at: 20), consistency: try proof(10, 21))
        try witness.observe(try head(21, at: 20), consistency: nil)
        try witness.observe(try head(23, at: 30), consistency: try proof(21, 23))
        #expect(witness.knownSize == 23)
    }

    @Test("a head that crossed a newer one in flight (a proof from an older size, none, or an older head) is not taken and is no evidence")
    func crossedInFlight() throws {
        let witness = try witness()
        try witness.observe(try head(10, at: 10), consistency: nil)
        try witness.observe(try head(21, at: 20), consistency: try proof(10, 21))
        // Asked for when the witness knew 10; it knows 21 now.
        expectError(.unprovable(known: 21, offered: 23)) {
            try witness.observe(try head(23, at: 30), consistency: try proof(10, 23))
        }
        expectError(.unprovable(known: 21, offered: 23)) { try witness.observe(try head(23, at: 30), consistency: nil) }
        // Signed before the remembered one, delivered after it.
        expectError(.unprovable(known: 21, offered: 15)) { try witness.observe(try head(15, at: 15), consistency: nil) }
        #expect(witness.knownSize == 21)
        #expect(!TreeHeadError.unprovable(known: 21, offered: 23).isEvidence)
    }

    @Test("evidence: two roots for one size, a proof from the remembered size that fails, a smaller tree signed later")
    func evidence() throws {
        let witness = try witness()
        try witness.observe(try head(21, at: 20), consistency: nil)
        var forked = leaves
        forked[5] = MerkleTree.leafHash(Array("rewritten".utf8))
        expectError(.inconsistent(from: 21, to: 21)) {
            try witness.observe(try head(21, at: 25, leaves: forked), consistency: nil)
        }
        expectError(.inconsistent(from: 21, to: 30)) {
            try witness.observe(try head(30, at: 30, leaves: forked), consistency: try proof(21, 30, leaves: forked))
        }
        expectError(.shrank(from: 21, to: 12)) { try witness.observe(try head(12, at: 40), consistency: nil) }
        for error in [TreeHeadError.inconsistent(from: 1, to: 2), .shrank(from: 2, to: 1)] { #expect(error.isEvidence) }
        #expect(witness.knownSize == 21)
    }
}
