internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import NIOCore
internal import OrreryLedger
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Reads of the append-only log: tree heads, entries, and proofs built from the stored perfect subtrees.
struct LogStore: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// The most entries one `entries` call returns.
    static let pageLimit: UInt64 = 1000

    /// The newest signed tree head, or nil while the log is empty.
    func latestHead() async throws -> Orrery_Notary_V1_SignedTreeHead? {
        try await Self.latestHead(on: client, logger: logger)
    }

    static func latestHead(on client: some PostgresQueryable, logger: Logger) async throws
        -> Orrery_Notary_V1_SignedTreeHead?
    {
        let rows = try await client.runQuery(
            "SELECT signed FROM tree_heads ORDER BY tree_size DESC LIMIT 1", logger: logger)
        for try await signed in rows.decode(Data.self) { return try Self.signedHead(signed) }
        return nil
    }

    /// The signed tree head of exactly `size` entries, when a batch ended there.
    func head(size: UInt64) async throws -> Orrery_Notary_V1_SignedTreeHead? {
        let rows = try await client.query(
            "SELECT signed FROM tree_heads WHERE tree_size = \(Int64(size))", logger: logger)
        for try await signed in rows.decode(Data.self) { return try Self.signedHead(signed) }
        return nil
    }

    static func signedHead(_ bytes: Data) throws -> Orrery_Notary_V1_SignedTreeHead {
        let signed = try Orrery_Common_V1_Signed(serializedBytes: bytes)
        return .with {
            $0.head = (try? Orrery_Notary_V1_TreeHead(serializedBytes: signed.payload)) ?? .init()
            $0.signed = signed
        }
    }

    /// Leaves `[start, end)` exactly as stored.
    func entries(start: UInt64, end: UInt64) async throws -> [Data] {
        let rows = try await client.query(
            "SELECT leaf FROM log_entries WHERE idx >= \(Int64(start)) AND idx < \(Int64(end)) ORDER BY idx",
            logger: logger)
        var leaves: [Data] = []
        for try await leaf in rows.decode(Data.self) { leaves.append(leaf) }
        return leaves
    }

    /// The audit path of `index` in the tree of `size` entries.
    func inclusionProof(index: UInt64, size: UInt64) async throws -> [MerkleTree.Hash] {
        try await withSubtrees { subtree in try MerkleTree.inclusionProof(index: index, size: size, subtree: subtree) }
    }

    /// The consistency proof between the trees of `oldSize` and `newSize` entries.
    func consistencyProof(oldSize: UInt64, newSize: UInt64) async throws -> [MerkleTree.Hash] {
        try await withSubtrees { subtree in
            try MerkleTree.consistencyProof(oldSize: oldSize, newSize: newSize, subtree: subtree)
        }
    }

    /// Runs a proof construction twice: once to learn which subtrees it needs, then with their hashes read in one
    /// query from the stored perfect subtrees.
    private func withSubtrees(_ build: (MerkleTree.SubtreeHash) throws -> [MerkleTree.Hash]) async throws
        -> [MerkleTree.Hash]
    {
        var ranges: [(UInt64, UInt64)] = []
        _ = try build { start, end in
            ranges.append((start, end))
            return MerkleTree.emptyRoot
        }
        let pieces = ranges.flatMap { MerkleTree.perfectSubtrees(start: $0.0, end: $0.1) }
        let nodes = try await Self.nodes(pieces, on: client, logger: logger)
        return try build { start, end in
            let hashes = try MerkleTree.perfectSubtrees(start: start, end: end).map { piece in
                guard let hash = nodes[NodeKey(level: piece.level, position: piece.position)] else {
                    throw LogStoreError.missingNode(level: piece.level, position: piece.position)
                }
                return hash
            }
            return MerkleTree.fold(hashes)
        }
    }

    struct NodeKey: Hashable {
        var level: Int
        var position: UInt64
    }

    /// The stored hashes of perfect subtrees.
    static func nodes(
        _ keys: [(level: Int, position: UInt64)], on client: some PostgresQueryable, logger: Logger
    ) async throws -> [NodeKey: MerkleTree.Hash] {
        guard !keys.isEmpty else { return [:] }
        let levels = keys.map { Int16($0.level) }
        let positions = keys.map { Int64($0.position) }
        let rows = try await client.runQuery(
            """
            SELECT n.level, n.position, n.hash
            FROM unnest(\(levels)::smallint[], \(positions)::bigint[]) AS k(level, position)
            JOIN log_nodes n ON n.level = k.level AND n.position = k.position
            """,
            logger: logger)
        var nodes: [NodeKey: MerkleTree.Hash] = [:]
        for try await (level, position, hash) in rows.decode((Int16, Int64, Data).self) {
            nodes[NodeKey(level: Int(level), position: UInt64(position))] = Array(hash)
        }
        return nodes
    }
}

/// The stored tree is missing a node it must have: the log's storage is damaged.
enum LogStoreError: Error, CustomStringConvertible {
    case missingNode(level: Int, position: UInt64)

    var description: String {
        switch self {
        case .missingNode(let level, let position):
            return "the log's stored subtree (level \(level), position \(position)) is missing"
        }
    }
}
