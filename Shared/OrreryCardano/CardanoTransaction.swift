public import Crypto

/// A transaction input: a previous transaction's id and output index.
public struct CardanoInput: Sendable, Hashable {
    public let transactionID: [UInt8]
    public let index: UInt64

    public init(transactionID: [UInt8], index: UInt64) {
        self.transactionID = transactionID
        self.index = index
    }
}

/// A native asset: its minting policy id (28 bytes) and asset name (≤ 32 bytes).
public struct CardanoAsset: Sendable, Hashable {
    public let policyID: [UInt8]
    public let name: [UInt8]

    public init(policyID: [UInt8], name: [UInt8]) {
        self.policyID = policyID
        self.name = name
    }
}

/// An output: an address, lovelace and optionally a quantity of one native asset.
public struct CardanoOutput: Sendable, Hashable {
    public let address: CardanoAddress
    public let lovelace: UInt64
    public let asset: (CardanoAsset, UInt64)?

    public init(address: CardanoAddress, lovelace: UInt64, asset: (CardanoAsset, UInt64)? = nil) {
        self.address = address
        self.lovelace = lovelace
        self.asset = asset
    }

    public static func == (lhs: CardanoOutput, rhs: CardanoOutput) -> Bool {
        lhs.address == rhs.address && lhs.lovelace == rhs.lovelace && lhs.asset?.0 == rhs.asset?.0
            && lhs.asset?.1 == rhs.asset?.1
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(lovelace)
    }

    var cbor: CBOR {
        let amount: CBOR
        if let (asset, quantity) = asset {
            amount = .array([
                .unsigned(lovelace),
                .map([CBORPair(.bytes(asset.policyID), .map([CBORPair(.bytes(asset.name), .unsigned(quantity))]))]),
            ])
        } else {
            amount = .unsigned(lovelace)
        }
        return .array([.bytes(address.bytes), amount])
    }
}

/// A transaction body `{0: inputs, 1: outputs, 2: fee, 3: ttl}` and its signing: each vkey witness is an Ed25519
/// signature over blake2b-256 of the body's CBOR, which is also the transaction id.
public struct CardanoTransactionBody: Sendable, Hashable {
    public let inputs: [CardanoInput]
    public let outputs: [CardanoOutput]
    public let fee: UInt64
    /// The last slot in which the transaction is valid.
    public let ttl: UInt64

    public init(inputs: [CardanoInput], outputs: [CardanoOutput], fee: UInt64, ttl: UInt64) {
        self.inputs = inputs
        self.outputs = outputs
        self.fee = fee
        self.ttl = ttl
    }

    public var cbor: CBOR {
        .map([
            CBORPair(
                .unsigned(0), .array(inputs.map { .array([.bytes($0.transactionID), .unsigned($0.index)]) })),
            CBORPair(.unsigned(1), .array(outputs.map(\.cbor))),
            CBORPair(.unsigned(2), .unsigned(fee)),
            CBORPair(.unsigned(3), .unsigned(ttl)),
        ])
    }

    /// blake2b-256 of the body's CBOR.
    public var id: [UInt8] { Blake2b.hash256(cbor.encoded) }

    /// The whole transaction `[body, {0: [[vkey, signature], …]}, true, null]`, signed by each key.
    public func signed(by keys: [Curve25519.Signing.PrivateKey]) throws -> [UInt8] {
        let bodyID = id
        let witnesses = try keys.map { key -> CBOR in
            .array([.bytes(Array(key.publicKey.rawRepresentation)), .bytes(Array(try key.signature(for: bodyID)))])
        }
        return CBOR.array([cbor, .map([CBORPair(.unsigned(0), .array(witnesses))]), .bool(true), .null]).encoded
    }
}
