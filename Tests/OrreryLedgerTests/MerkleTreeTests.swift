import Foundation
import OrreryLedger
import Testing

/// The RFC 6962 tree: roots, proofs and their verification, against a direct transcription of the RFC's recursive
/// definitions (an independent Python one checks the notary's proofs end to end).
@Suite("Merkle tree (RFC 6962 / 9162)")
struct MerkleTreeTests {
    /// MTH straight from RFC 6962 §2.1.
    static func referenceRoot(_ leaves: ArraySlice<MerkleTree.Hash>) -> MerkleTree.Hash {
        if leaves.isEmpty { return MerkleTree.emptyRoot }
        if leaves.count == 1 { return leaves[leaves.startIndex] }
        let k = Int(MerkleTree.split(UInt64(leaves.count)))
        return MerkleTree.nodeHash(
            referenceRoot(leaves.prefix(k)), referenceRoot(leaves.dropFirst(k)))
    }

    static func leaves(_ count: Int) -> [MerkleTree.Hash] {
        (0..<count).map { MerkleTree.leafHash(Array("entry \($0)".utf8)) }
    }

    static func subtree(_ leaves: [MerkleTree.Hash]) -> MerkleTree.SubtreeHash {
        { start, end in referenceRoot(leaves[Int(start)..<Int(end)]) }
    }

    @Test("leaf and node hashes are domain-separated; the empty tree is SHA-256 of nothing")
    func hashing() {
        #expect(
            MerkleTree.emptyRoot.map { String(format: "%02x", $0) }.joined()
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // RFC 6962's leaf hash of the empty entry: SHA-256(0x00).
        #expect(
            MerkleTree.leafHash([UInt8]()).map { String(format: "%02x", $0) }.joined()
                == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        let a = MerkleTree.leafHash([1])
        #expect(MerkleTree.nodeHash(a, a) != MerkleTree.leafHash(a + a))
    }

    @Test("the streaming root equals the recursive definition for every size up to 130")
    func roots() {
        let all = Self.leaves(130)
        for n in 0...130 {
            #expect(MerkleTree.root(leafHashes: all.prefix(n)) == Self.referenceRoot(all.prefix(n)[...]), "size \(n)")
        }
    }

    @Test("the frontier of perfect subtrees resumes a tree where it stopped, with every completed node reported")
    func resume() {
        let all = Self.leaves(77)
        var full = RootAccumulator()
        var nodes: [String: MerkleTree.Hash] = [:]
        for leaf in all.prefix(45) {
            full.append(leafHash: leaf) { level, position, hash in nodes["\(level)/\(position)"] = hash }
        }
        let frontier = MerkleTree.perfectSubtrees(start: 0, end: 45).map { nodes["\($0.level)/\($0.position)"]! }
        var resumed = RootAccumulator(size: 45, frontier: frontier)
        for leaf in all.dropFirst(45) {
            resumed.append(leafHash: leaf) { level, position, hash in nodes["\(level)/\(position)"] = hash }
        }
        #expect(resumed.root == Self.referenceRoot(all[...]))
        // Every perfect node stored equals the subtree it names.
        for (key, hash) in nodes {
            let parts = key.split(separator: "/").map { Int($0)! }
            let start = parts[1] << parts[0]
            #expect(hash == Self.referenceRoot(all[start..<(start + (1 << parts[0]))]), "node \(key)")
        }
    }

    @Test("every inclusion proof of trees up to 40 leaves verifies; a wrong index, leaf, path or tree head does not")
    func inclusion() throws {
        let all = Self.leaves(41)
        for size in 1...40 {
            let leaves = Array(all.prefix(size))
            let root = Self.referenceRoot(leaves[...])
            for index in 0..<size {
                let proof = try MerkleTree.inclusionProof(
                    index: UInt64(index), size: UInt64(size), subtree: Self.subtree(leaves))
                #expect(
                    MerkleTree.verifyInclusion(
                        leafHash: leaves[index], index: UInt64(index), size: UInt64(size), proof: proof, root: root))
                if size > 1 {
                    let other = (index + 1) % size
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leafHash: leaves[other], index: UInt64(index), size: UInt64(size), proof: proof, root: root)
                    )
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leafHash: leaves[index], index: UInt64(other), size: UInt64(size), proof: proof,
                            root: root))
                    var bent = proof
                    bent[0][0] ^= 1
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leafHash: leaves[index], index: UInt64(index), size: UInt64(size), proof: bent, root: root))
                }
                // The proof binds the leaf to this tree head: the next tree's head does not accept it.
                let nextRoot = Self.referenceRoot(all.prefix(size + 1)[...])
                #expect(
                    !MerkleTree.verifyInclusion(
                        leafHash: leaves[index], index: UInt64(index), size: UInt64(size + 1), proof: proof,
                        root: nextRoot))
            }
        }
    }

    @Test("every consistency proof between trees up to 40 leaves verifies; a changed history does not")
    func consistency() throws {
        let all = Self.leaves(40)
        var forked = all
        forked[3] = MerkleTree.leafHash(Array("rewritten".utf8))
        for newSize in 1...40 {
            let newRoot = Self.referenceRoot(all.prefix(newSize)[...])
            for oldSize in 0...newSize {
                let proof = try MerkleTree.consistencyProof(
                    oldSize: UInt64(oldSize), newSize: UInt64(newSize), subtree: Self.subtree(all))
                let oldRoot = Self.referenceRoot(all.prefix(oldSize)[...])
                #expect(
                    MerkleTree.verifyConsistency(
                        oldSize: UInt64(oldSize), oldRoot: oldRoot, newSize: UInt64(newSize), newRoot: newRoot,
                        proof: proof), "\(oldSize) → \(newSize)")
                // A log that rewrote entry 3 after a client saw a tree including it.
                if oldSize > 3 && oldSize < newSize {
                    let forkedRoot = Self.referenceRoot(forked.prefix(newSize)[...])
                    let forkedProof = try MerkleTree.consistencyProof(
                        oldSize: UInt64(oldSize), newSize: UInt64(newSize), subtree: Self.subtree(forked))
                    #expect(
                        !MerkleTree.verifyConsistency(
                            oldSize: UInt64(oldSize), oldRoot: oldRoot, newSize: UInt64(newSize), newRoot: forkedRoot,
                            proof: forkedProof), "fork \(oldSize) → \(newSize)")
                }
            }
        }
    }

    @Test("a range the RFC recursion names is a run of aligned perfect subtrees whose fold is its hash")
    func decomposition() {
        let all = Self.leaves(64)
        for (start, end) in [(0, 13), (8, 13), (12, 13), (32, 64), (0, 64), (16, 21), (0, 1)] {
            let pieces = MerkleTree.perfectSubtrees(start: UInt64(start), end: UInt64(end))
            let hashes = pieces.map { piece in
                let from = Int(piece.position) << piece.level
                return Self.referenceRoot(all[from..<(from + (1 << piece.level))])
            }
            #expect(MerkleTree.fold(hashes) == Self.referenceRoot(all[start..<end]), "[\(start), \(end))")
        }
    }
}
