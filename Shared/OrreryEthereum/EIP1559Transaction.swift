/// A type-2 (EIP-1559) transaction without access list entries.
public struct EIP1559Transaction: Sendable, Hashable {
    public var chainID: UInt64
    public var nonce: UInt64
    public var maxPriorityFeePerGas: UInt256
    public var maxFeePerGas: UInt256
    public var gasLimit: UInt64
    /// nil creates a contract.
    public var to: EthereumAddress?
    public var value: UInt256
    public var data: [UInt8]

    public init(
        chainID: UInt64, nonce: UInt64, maxPriorityFeePerGas: UInt256, maxFeePerGas: UInt256, gasLimit: UInt64,
        to: EthereumAddress?, value: UInt256 = .zero, data: [UInt8] = []
    ) {
        self.chainID = chainID
        self.nonce = nonce
        self.maxPriorityFeePerGas = maxPriorityFeePerGas
        self.maxFeePerGas = maxFeePerGas
        self.gasLimit = gasLimit
        self.to = to
        self.value = value
        self.data = data
    }

    private var unsignedFields: [RLP] {
        [
            .uint(chainID), .uint(nonce), .uint(maxPriorityFeePerGas), .uint(maxFeePerGas), .uint(gasLimit),
            .bytes(to?.bytes ?? []), .uint(value), .bytes(data), .list([]),
        ]
    }

    /// keccak256(0x02 ‖ rlp(unsigned fields)) — what the sender signs.
    public var signingHash: [UInt8] { Keccak256.hash([0x02] + RLP.list(unsignedFields).encoded) }

    /// Signs and returns the raw transaction (`eth_sendRawTransaction`'s input) and its hash.
    public func signed(by key: Secp256k1PrivateKey) -> SignedTransaction {
        let signature = key.sign(digest: signingHash)
        let fields =
            unsignedFields + [
                .uint(UInt64(signature.recoveryID)), .uint(UInt256(bigEndian: signature.r) ?? .zero),
                .uint(UInt256(bigEndian: signature.s) ?? .zero),
            ]
        let raw = [0x02] + RLP.list(fields).encoded
        return SignedTransaction(raw: raw, hash: Keccak256.hash(raw))
    }
}

/// A signed, serialised transaction and its hash (the transaction id on chain).
public struct SignedTransaction: Sendable, Hashable {
    public let raw: [UInt8]
    public let hash: [UInt8]
}
