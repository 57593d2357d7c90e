#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The UCAN container (ucan-wg/container v0.1.0): tokens in `{"ctn-v1": [bytes…]}` (sorted, no duplicates),
/// optionally gzipped, optionally base64, behind a one-byte header naming the combination.
public enum UCANContainer {
    /// The header byte and what it selects.
    public enum Header: UInt8, Sendable, CaseIterable {
        case raw = 0x40  // '@'
        case base64Standard = 0x42  // 'B'
        case base64URL = 0x43  // 'C'
        case gzip = 0x4D  // 'M'
        case gzipBase64Standard = 0x4F  // 'O'
        case gzipBase64URL = 0x50  // 'P'

        var isGzipped: Bool { self == .gzip || self == .gzipBase64Standard || self == .gzipBase64URL }
        var isText: Bool { self != .raw && self != .gzip }
    }

    /// Encodes `tokens` (each a token's DAG-CBOR bytes) behind `header`; `C` (base64url) is what an
    /// `Authorization: Bearer` header carries.
    /// - Throws: `UCANError(.malformedToken)` when gzip is asked for but fails.
    public static func encode(_ tokens: [[UInt8]], header: Header = .base64URL) throws -> [UInt8] {
        let unique = Array(Set(tokens)).sorted { $0.lexicographicallyPrecedes($1) }
        var body = DAGCBOR.encode(.map(["ctn-v1": .list(unique.map { .bytes($0) })]))
        if header.isGzipped { body = try Gzip.compress(body) }
        switch header {
        case .base64Standard, .gzipBase64Standard: body = Array(Base64.standard(body).utf8)
        case .base64URL, .gzipBase64URL: body = Array(Base64.url(body).utf8)
        case .raw, .gzip: break
        }
        return [header.rawValue] + body
    }

    /// The text form (for a header that base64-encodes).
    public static func encodeText(_ tokens: [[UInt8]], header: Header = .base64URL) throws -> String {
        String(decoding: try encode(tokens, header: header), as: UTF8.self)
    }

    /// Decodes a container into its tokens' bytes.
    /// - Parameter maximumSize: The largest body accepted once base64 and gzip are undone (a server passes a
    ///   small bound for an `authorization` header).
    /// - Throws: `UCANError(.malformedToken)` naming what is wrong.
    public static func decode(_ container: [UInt8], maximumSize: Int = Gzip.maximumInflatedSize) throws -> [[UInt8]] {
        guard let first = container.first, let header = Header(rawValue: first) else {
            throw UCANError(
                .malformedToken,
                "unknown container header \(container.first.map { cFormat("0x%02x", $0) } ?? "(empty)")")
        }
        var body = Array(container.dropFirst())
        if header.isText {
            guard let decoded = Base64.decode(String(decoding: body, as: UTF8.self)) else {
                throw UCANError(.malformedToken, "the container is not valid base64")
            }
            body = decoded
        }
        if header.isGzipped { body = try Gzip.decompress(body, maximumSize: maximumSize) }
        guard body.count <= maximumSize else {
            throw UCANError(.malformedToken, "the container holds \(body.count) bytes, more than \(maximumSize)")
        }
        let value: IPLD
        do {
            value = try DAGCBOR.decode(body)
        } catch {
            throw UCANError(.malformedToken, "container: \(error)")
        }
        guard case .map(let map) = value, map.count == 1, case .list(let items)? = map["ctn-v1"] else {
            throw UCANError(.malformedToken, "a container is {\"ctn-v1\": [tokens]}")
        }
        return try items.map { item in
            guard case .bytes(let bytes) = item else { throw UCANError(.malformedToken, "container entries are bytes") }
            return bytes
        }
    }

    /// Decodes the text form.
    public static func decode(_ text: String, maximumSize: Int = Gzip.maximumInflatedSize) throws -> [[UInt8]] {
        var bytes = Array(text.utf8)[...]
        while let last = bytes.last, last == 0x20 || last == 0x0A || last == 0x0D || last == 0x09 { bytes.removeLast() }
        while let first = bytes.first, first == 0x20 || first == 0x0A || first == 0x0D || first == 0x09 {
            bytes.removeFirst()
        }
        return try decode(Array(bytes), maximumSize: maximumSize)
    }
}
