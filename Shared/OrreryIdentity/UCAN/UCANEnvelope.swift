/// A signed UCAN token: `[signature, {"h": varsig header, "<tag>": payload}]` in DAG-CBOR.
public struct UCANEnvelope: Sendable {
    /// The type tags this implementation accepts: UCAN 1.0.0 only.
    public static let delegationTag = "ucan/dlg@1.0.0"
    public static let invocationTag = "ucan/inv@1.0.0"

    /// The token exactly as encoded.
    public let bytes: [UInt8]
    public let cid: CID
    public let signature: [UInt8]
    public let header: [UInt8]
    public let tag: String
    public let payload: [String: IPLD]

    /// The bytes the signature covers: the DAG-CBOR of the signature payload map.
    public let signedBytes: [UInt8]

    /// Decodes a token.
    /// - Throws: `UCANError(.malformedToken)` for anything that is not a canonical UCAN 1.0.0 envelope.
    public init(bytes: [UInt8]) throws {
        let value: IPLD
        do {
            value = try DAGCBOR.decode(bytes)
        } catch {
            throw UCANError(.malformedToken, "\(error)")
        }
        guard case .list(let parts) = value, parts.count == 2, case .bytes(let signature) = parts[0],
            case .map(let sigPayload) = parts[1], sigPayload.count == 2, case .bytes(let header)? = sigPayload["h"]
        else { throw UCANError(.malformedToken, "not a UCAN envelope [signature, {h, payload}]") }
        guard let tag = sigPayload.keys.first(where: { $0 != "h" }), case .map(let payload)? = sigPayload[tag] else {
            throw UCANError(.malformedToken, "the envelope carries no payload")
        }
        guard tag == Self.delegationTag || tag == Self.invocationTag else {
            throw UCANError(
                .malformedToken,
                "unsupported token type '\(tag)' (only \(Self.delegationTag) and \(Self.invocationTag))")
        }
        self.bytes = bytes
        self.cid = CID.dagCBOR(of: bytes)
        self.signature = signature
        self.header = header
        self.tag = tag
        self.payload = payload
        // Decoding is canonical (re-encoding gives the same bytes), so the signed payload is the token's own bytes
        // after the array head and the signature: sliced, not encoded again.
        let signatureHead = signature.count < 24 ? 1 : signature.count < 0x100 ? 2 : signature.count < 0x1_0000 ? 3 : 5
        self.signedBytes = Array(bytes[(1 + signatureHead + signature.count)...])
    }

    /// Signs `payload` under `tag` with `key`.
    public init(signing payload: [String: IPLD], tag: String, with key: SigningKey) {
        let header = VarsigHeader.header(for: key.publicKey)
        let sigPayload = IPLD.map(["h": .bytes(header), tag: .map(payload)])
        let signedBytes = DAGCBOR.encode(sigPayload)
        let signature = key.sign(signedBytes)
        let bytes = DAGCBOR.encode(.list([.bytes(signature), sigPayload]))
        self.bytes = bytes
        self.cid = CID.dagCBOR(of: bytes)
        self.signature = signature
        self.header = header
        self.tag = tag
        self.payload = payload
        self.signedBytes = signedBytes
    }

    /// Whether the signature is `issuer`'s, under the header its key type requires.
    public func signatureIsValid(issuer: DID) -> Bool {
        header == VarsigHeader.header(for: issuer.publicKey)
            && issuer.publicKey.verify(signature: signature, message: signedBytes)
    }
}

/// Field access for payload decoding with precise errors.
struct PayloadReader {
    let payload: [String: IPLD]
    let kind: String

    func fail(_ reason: String) -> UCANError { UCANError(.malformedToken, "\(kind): \(reason)") }

    func did(_ key: String) throws -> DID {
        guard case .string(let text)? = payload[key] else { throw fail("'\(key)' must be a DID string") }
        do {
            return try DID(text)
        } catch {
            throw fail("'\(key)': \(error)")
        }
    }

    func optionalDID(_ key: String) throws -> DID? {
        switch payload[key] {
        case nil, .null?: return nil
        default: return try did(key)
        }
    }

    func command(_ key: String = "cmd") throws -> Command {
        guard case .string(let text)? = payload[key] else { throw fail("'\(key)' must be a command string") }
        do {
            return try Command(text)
        } catch {
            throw fail("\(error)")
        }
    }

    func bytes(_ key: String) throws -> [UInt8] {
        guard case .bytes(let bytes)? = payload[key] else { throw fail("'\(key)' must be bytes") }
        return bytes
    }

    /// A 53-bit timestamp, absent or null → nil.
    func timestamp(_ key: String, required: Bool) throws -> Int64? {
        switch payload[key] {
        case nil:
            if required { throw fail("'\(key)' is required (null for none)") }
            return nil
        case .null?:
            return nil
        case .integer(let value)?:
            guard abs(value) <= (1 << 53) - 1 else { throw fail("'\(key)' is outside the 53-bit range") }
            return value
        default:
            throw fail("'\(key)' must be an integer timestamp or null")
        }
    }

    func map(_ key: String, required: Bool) throws -> [String: IPLD]? {
        switch payload[key] {
        case nil:
            if required { throw fail("'\(key)' is required") }
            return nil
        case .map(let map)?:
            return map
        default:
            throw fail("'\(key)' must be a map")
        }
    }
}
