internal import Crypto

/// A CIDv1 content identifier; the ones made here are DAG-CBOR (0x71) over SHA-256.
public struct CID: Sendable, Hashable, CustomStringConvertible, Comparable {
    /// version ‖ codec ‖ multihash.
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws {
        var offset = 0
        guard Varint.decode(bytes, offset: &offset) == 1,
            Varint.decode(bytes, offset: &offset) != nil,
            Varint.decode(bytes, offset: &offset) != nil,
            let length = Varint.decode(bytes, offset: &offset),
            bytes.count - offset == Int(length)
        else { throw DAGCBORError.invalid("not a CIDv1") }
        self.bytes = bytes
    }

    /// The CID of DAG-CBOR `encoded` bytes.
    public static func dagCBOR(of encoded: some Collection<UInt8>) -> CID {
        let digest = SHA256.hash(data: Array(encoded))
        // Known-valid layout: version 1, dag-cbor, sha2-256 of 32 bytes.
        return CID(unchecked: [0x01, 0x71, 0x12, 0x20] + Array(digest))
    }

    private init(unchecked bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Parses the multibase text form: `b…` (base32) or `z…` (base58btc).
    public init(_ text: String) throws {
        let body = text.dropFirst()
        let decoded: [UInt8]?
        switch text.first {
        case "b": decoded = Base32.decode(body)
        case "z": decoded = Base58.decode(body)
        default: decoded = nil
        }
        guard let decoded else { throw DAGCBORError.invalid("'\(text)' is not a base32 or base58btc CID") }
        try self.init(bytes: decoded)
    }

    /// The base32 text form (`bafy…`).
    public var string: String { "b" + Base32.encode(bytes) }

    public var description: String { string }

    public static func < (lhs: CID, rhs: CID) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}
