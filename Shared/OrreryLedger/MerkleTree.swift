internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics

/// The Merkle tree hashing of Certificate Transparency (RFC 6962 §2.1, RFC 9162 §2.1): a leaf hash is
/// SHA-256(0x00 ‖ entry), an interior node SHA-256(0x01 ‖ left ‖ right), so a leaf can never pass as a node;
/// a tree of n leaves splits at the largest power of two below n. Proofs are generated over any source of
/// subtree hashes and verified with the RFC 9162 algorithms.
public enum MerkleTree {
    /// A 32-byte SHA-256 digest.
    public typealias Hash = [UInt8]

    /// The root of the empty tree: SHA-256 of nothing.
    public static let emptyRoot: Hash = Array(SHA256.hash(data: [UInt8]()))

    public static func leafHash(_ entry: some DataProtocol) -> Hash {
        var hasher = SHA256()
        hasher.update(data: [0])
        hasher.update(data: entry)
        return Array(hasher.finalize())
    }

    public static func nodeHash(_ left: Hash, _ right: Hash) -> Hash {
        var hasher = SHA256()
        hasher.update(data: [1])
        hasher.update(data: left)
        hasher.update(data: right)
        return Array(hasher.finalize())
    }

    /// The largest power of two strictly below `n` (n ≥ 2).
    public static func split(_ n: UInt64) -> UInt64 {
        precondition(n >= 2)
        return 1 << (63 - (n - 1).leadingZeroBitCount)
    }

    /// The root over `leafHashes`, computed bottom-up in one pass with O(log n) memory: each leaf is pushed onto
    /// a stack of perfect subtrees that merge while the two on top have the same size; what remains merges right
    /// to left, which is exactly the RFC's split at the largest power of two.
    public static func root(leafHashes: some Sequence<Hash>) -> Hash {
        var accumulator = RootAccumulator()
        for leaf in leafHashes { accumulator.append(leafHash: leaf) }
        return accumulator.root
    }

    /// A subtree hash source for proofs: the hash of leaves `[start, end)` for a range the RFC recursion names.
    public typealias SubtreeHash = (_ start: UInt64, _ end: UInt64) throws -> Hash

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 PATH), leaf side first.
    public static func inclusionProof(index: UInt64, size: UInt64, subtree: SubtreeHash) throws -> [Hash] {
        precondition(index < size)
        var proof: [Hash] = []
        try path(index, 0, size, subtree, &proof)
        return proof
    }

    private static func path(_ m: UInt64, _ start: UInt64, _ end: UInt64, _ subtree: SubtreeHash, _ proof: inout [Hash])
        throws
    {
        let n = end - start
        guard n > 1 else { return }
        let k = split(n)
        if m < k {
            try path(m, start, start + k, subtree, &proof)
            proof.append(try subtree(start + k, end))
        } else {
            try path(m - k, start + k, end, subtree, &proof)
            proof.append(try subtree(start, start + k))
        }
    }

    /// The proof that the tree of `oldSize` leaves is a prefix of the tree of `newSize` (RFC 6962 PROOF).
    public static func consistencyProof(oldSize: UInt64, newSize: UInt64, subtree: SubtreeHash) throws -> [Hash] {
        precondition(oldSize <= newSize)
        guard oldSize > 0, oldSize < newSize else { return [] }
        var proof: [Hash] = []
        try subproof(oldSize, 0, newSize, true, subtree, &proof)
        return proof
    }

    private static func subproof(
        _ m: UInt64, _ start: UInt64, _ end: UInt64, _ complete: Bool, _ subtree: SubtreeHash, _ proof: inout [Hash]
    ) throws {
        let n = end - start
        if m == n {
            if !complete { proof.append(try subtree(start, end)) }
            return
        }
        let k = split(n)
        if m <= k {
            try subproof(m, start, start + k, complete, subtree, &proof)
            proof.append(try subtree(start + k, end))
        } else {
            try subproof(m - k, start + k, end, false, subtree, &proof)
            proof.append(try subtree(start, start + k))
        }
    }

    /// Checks an inclusion proof (RFC 9162 §2.1.3.2).
    public static func verifyInclusion(leafHash: Hash, index: UInt64, size: UInt64, proof: [Hash], root: Hash) -> Bool {
        guard index < size else { return false }
        var fn = index
        var sn = size - 1
        var r = leafHash
        for p in proof {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                r = nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                r = nodeHash(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        return sn == 0 && r == root
    }

    /// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
    public static func verifyConsistency(
        oldSize: UInt64, oldRoot: Hash, newSize: UInt64, newRoot: Hash, proof: [Hash]
    ) -> Bool {
        guard oldSize <= newSize else { return false }
        if oldSize == newSize { return proof.isEmpty && oldRoot == newRoot }
        if oldSize == 0 { return proof.isEmpty }
        var path = proof
        if oldSize & (oldSize - 1) == 0 { path.insert(oldRoot, at: 0) }
        guard let first = path.first else { return false }
        var fn = oldSize - 1
        var sn = newSize - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = first
        var sr = first
        for c in path.dropFirst() {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                fr = nodeHash(c, fr)
                sr = nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                sr = nodeHash(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        return fr == oldRoot && sr == newRoot && sn == 0
    }

    /// The perfect, aligned subtrees `(level, position)` whose hashes make up leaves `[start, end)`: a range the
    /// RFC recursion names is a run of perfect subtrees, largest first. Level 0 is the leaves; the node at
    /// (level, p) covers leaves `[p·2^level, (p+1)·2^level)`.
    public static func perfectSubtrees(start: UInt64, end: UInt64) -> [(level: Int, position: UInt64)] {
        var pieces: [(level: Int, position: UInt64)] = []
        var start = start
        while start < end {
            // The largest aligned power of two that starts at `start` and fits.
            var level = start == 0 ? 63 : start.trailingZeroBitCount
            while level > 0 && (UInt64(1) << level) > end - start { level -= 1 }
            pieces.append((level, start >> level))
            start += UInt64(1) << level
        }
        return pieces
    }

    /// Folds the perfect subtrees of a range (as `perfectSubtrees` lists them) into its RFC 6962 hash.
    public static func fold(_ hashes: [Hash]) -> Hash {
        guard var result = hashes.last else { return emptyRoot }
        for hash in hashes.dropLast().reversed() { result = nodeHash(hash, result) }
        return result
    }
}

/// Computes a tree's root incrementally, leaf by leaf, keeping one perfect subtree per set bit of the size; also
/// yields each perfect node as it completes (for storing them).
public struct RootAccumulator: Sendable {
    /// The perfect subtrees, largest (leftmost) first, with their levels.
    public private(set) var frontier: [(level: Int, hash: MerkleTree.Hash)] = []
    public private(set) var size: UInt64 = 0

    public init() {}

    /// Resumes from the perfect subtrees of a tree of `size` leaves (largest first, as `MerkleTree.perfectSubtrees`
    /// of `[0, size)` lists them).
    public init(size: UInt64, frontier: [MerkleTree.Hash]) {
        self.size = size
        let levels = MerkleTree.perfectSubtrees(start: 0, end: size).map(\.level)
        precondition(levels.count == frontier.count, "the frontier must have one hash per set bit of the size")
        self.frontier = zip(levels, frontier).map { ($0, $1) }
    }

    /// Adds a leaf; `completed` receives each perfect node `(level, position, hash)` this leaf completes, the
    /// leaf itself (level 0) first.
    public mutating func append(
        leafHash: MerkleTree.Hash,
        completed: (_ level: Int, _ position: UInt64, _ hash: MerkleTree.Hash) -> Void = {
            _, _, _ in
        }
    ) {
        var level = 0
        var hash = leafHash
        var position = size
        completed(0, position, hash)
        while let last = frontier.last, last.level == level {
            frontier.removeLast()
            hash = MerkleTree.nodeHash(last.hash, hash)
            level += 1
            position >>= 1
            completed(level, position, hash)
        }
        frontier.append((level, hash))
        size += 1
    }

    /// The root of the leaves so far.
    public var root: MerkleTree.Hash { MerkleTree.fold(frontier.map(\.hash)) }
}
