internal import OrreryIdentity
/// A cumulative payment voucher for Orrery's payment-channel contract: "the payee of `channel` may withdraw up to
/// `amount` in total". Signed as EIP-712 typed data by the channel's signer (the gateway, as the consumer's capped
/// delegate); the contract recomputes the same digest and checks the signer with `ecrecover`.
public struct ChannelVoucher: Sendable, Hashable {
    /// The EIP-712 domain's name and version the contract is deployed with.
    public static let domainName = "Orrery Channels"
    public static let domainVersion = "1"

    public let chainID: UInt64
    public let contract: EthereumAddress
    /// The channel id (32 bytes; Orrery uses keccak-256 of the contract id).
    public let channel: [UInt8]
    public let amount: UInt256

    public init(chainID: UInt64, contract: EthereumAddress, channel: [UInt8], amount: UInt256) {
        precondition(channel.count == 32, "a channel id is 32 bytes")
        self.chainID = chainID
        self.contract = contract
        self.channel = channel
        self.amount = amount
    }

    /// The channel id Orrery gives a contract: keccak-256 of its id's UTF-8 bytes.
    public static func channelID(forContract contractID: String) -> [UInt8] { Keccak256.hash(contractID) }

    /// The voucher in the `eth_signTypedData_v4` JSON shape (what a wallet or eth-account signs).
    public var typedData: TypedData {
        TypedData(
            types: [
                "EIP712Domain": [
                    .init(name: "name", type: "string"), .init(name: "version", type: "string"),
                    .init(name: "chainId", type: "uint256"), .init(name: "verifyingContract", type: "address"),
                ],
                "Voucher": [.init(name: "channel", type: "bytes32"), .init(name: "amount", type: "uint256")],
            ],
            primaryType: "Voucher",
            domain: .object([
                ("name", .string(Self.domainName)), ("version", .string(Self.domainVersion)),
                ("chainId", .number(String(chainID))), ("verifyingContract", .string(contract.checksummed)),
            ]),
            message: .object([("channel", .string(Hex.prefixed(channel))), ("amount", .string(amount.decimal))]))
    }

    /// The JSON text of `typedData`.
    public var json: String {
        let typed = typedData
        let types = JSONValue.object(
            typed.types.keys.sorted().map { name in
                (
                    name,
                    JSONValue.array(
                        (typed.types[name] ?? []).map {
                            .object([("name", .string($0.name)), ("type", .string($0.type))])
                        }
                    )
                )
            })
        return JSONValue.object([
            ("types", types), ("primaryType", .string(typed.primaryType)), ("domain", typed.domain),
            ("message", typed.message),
        ]).serialized
    }

    public func digest() -> [UInt8] {
        // The voucher's own types are well formed, so hashing cannot fail.
        (try? typedData.digest()) ?? []
    }

    /// The 65-byte r ‖ s ‖ v signature.
    public func sign(with key: Secp256k1PrivateKey) -> [UInt8] { key.sign(digest: digest()).rsv }

    /// The address that signed `signature` over this voucher.
    public func signer(of signature: [UInt8]) throws -> EthereumAddress {
        try RecoverableSignature(rsv: signature).recoverAddress(digest: digest())
    }
}
