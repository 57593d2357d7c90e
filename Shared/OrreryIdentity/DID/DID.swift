internal import Synchronization

/// A `did:key` identity: the DID string and the public key it encodes, resolvable offline.
public struct DID: Sendable, Hashable, CustomStringConvertible, Comparable {
    /// The DID, e.g. `did:key:z6Mk…`.
    public let string: String
    public let publicKey: PublicKey

    /// Parses a did:key (a fragment, if present, is ignored: principals align without fragments).
    /// - Throws: `DIDError` naming what is wrong.
    public init(_ text: String) throws {
        guard text.utf8.count <= Self.maximumLength else {
            throw DIDError.malformed("\(text.utf8.count) characters; a did:key has fewer than \(Self.maximumLength)")
        }
        if let known = DIDCache.shared.lookup(text) {
            self = known
            return
        }
        try self.init(parsing: text)
        DIDCache.shared.store(text, self)
    }

    /// The longest text accepted as a DID, fragment included: a did:key of a supported key is under 60 characters.
    /// Longer text is refused before it is decoded.
    public static let maximumLength = 256

    /// The longest multibase key part: 33 key bytes plus a 2-byte codec are at most 49 base58 characters.
    static let maximumKeyCharacters = 64

    private init(parsing text: String) throws {
        guard text.utf8.count <= Self.maximumLength else {
            throw DIDError.malformed("\(text.utf8.count) characters; a did:key has fewer than \(Self.maximumLength)")
        }
        let withoutFragment = text.split(separator: "#", maxSplits: 1).first.map(String.init) ?? text
        guard withoutFragment.hasPrefix("did:key:") else {
            throw DIDError.notDIDKey(text)
        }
        let multibase = withoutFragment.dropFirst("did:key:".count)
        guard multibase.utf8.count <= Self.maximumKeyCharacters + 1 else {
            throw DIDError.malformed("its key part is \(multibase.utf8.count) characters; a did:key's is at most \(Self.maximumKeyCharacters + 1)")
        }
        guard multibase.first == "z", let bytes = Base58.decode(multibase.dropFirst()) else {
            throw DIDError.malformed("a did:key is multibase base58btc ('z…')")
        }
        self.publicKey = try PublicKey(multicodecBytes: bytes)
        self.string = withoutFragment
    }

    /// The did:key of `publicKey`.
    public init(publicKey: PublicKey) {
        self.publicKey = publicKey
        self.string = "did:key:z" + Base58.encode(publicKey.multicodecBytes)
    }

    /// The multibase form of the key (`z…`), also the fragment of its verification method.
    public var multibaseKey: String { String(string.dropFirst("did:key:".count)) }

    public var description: String { string }

    public static func < (lhs: DID, rhs: DID) -> Bool { lhs.string < rhs.string }
}

/// Why a DID could not be used.
public enum DIDError: Error, Equatable, CustomStringConvertible, Sendable {
    case notDIDKey(String)
    case malformed(String)
    case unsupportedKeyType(UInt64)

    public var description: String {
        switch self {
        case .notDIDKey(let text): return "'\(text)' is not a did:key"
        case .malformed(let reason): return "malformed did:key: \(reason)"
        case .unsupportedKeyType(let codec):
            return "unsupported did:key type 0x\(String(codec, radix: 16)) (Ed25519 and P-256 are)"
        }
    }
}

/// DIDs already parsed, by their text: a service sees the same few parties over and over, and parsing means a
/// base58 decode and a key check each time. Bounded; cleared when full.
final class DIDCache: Sendable {
    static let shared = DIDCache()
    private let parsed = Mutex<[String: DID]>([:])

    func lookup(_ text: String) -> DID? { parsed.withLock { $0[text] } }

    func store(_ text: String, _ did: DID) {
        parsed.withLock { parsed in
            if parsed.count >= 10_000 { parsed.removeAll(keepingCapacity: true) }
            parsed[text] = did
        }
    }
}
