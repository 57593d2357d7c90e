/// A content digest as OCI writes it, `sha256:` and 64 lowercase hex digits: the name of a blob or manifest, checked
/// against the bytes before they are used.
public struct OCIDigest: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The 64 lowercase hex digits.
    public let hex: String

    public var description: String { "sha256:" + hex }

    /// Parses `sha256:<64 hex>`; other algorithms (sha512 and unregistered ones) are refused by name.
    public init(parsing text: String) throws(OCIError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw .invalidDigest("\(text.prefix(80)) is not a digest (algorithm:hex)")
        }
        let algorithm = text[..<colon]
        let encoded = text[text.index(after: colon)...]
        guard algorithm == "sha256" else {
            throw .invalidDigest("the digest algorithm \(algorithm.prefix(20)) is not supported (only sha256)")
        }
        guard encoded.utf8.count == 64, encoded.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { throw .invalidDigest("\(text.prefix(80)) is not sha256 and 64 lowercase hex digits") }
        hex = String(encoded)
    }

    /// The digest of bytes already hashed.
    public init(sha256 bytes: some Sequence<UInt8>) {
        hex = bytes.map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xf)]], as: UTF8.self)
        }.joined()
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = try OCIDigest(parsing: try container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
