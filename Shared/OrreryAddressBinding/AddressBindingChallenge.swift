public import OrreryEthereum

/// What an address signs to be bound to a DID at this gateway: the DID, the address, the gateway's DID, an issue time
/// and a nonce. Ethereum wallets sign it as EIP-712 typed data (`eth_signTypedData_v4`); Cardano wallets sign its
/// text form with CIP-8/CIP-30 `signData`.
public struct AddressBindingChallenge: Sendable, Hashable {
    public let did: String
    public let chain: String
    public let address: String
    public let gateway: String
    public let issuedAt: Int64
    public let nonce: String

    public init(did: String, chain: String, address: String, gateway: String, issuedAt: Int64, nonce: String) {
        self.did = did
        self.chain = chain
        self.address = address
        self.gateway = gateway
        self.issuedAt = issuedAt
        self.nonce = nonce
    }

    /// `AddressBinding(string did,address account,string gateway,uint256 issuedAt,string nonce)` in the domain
    /// `{name: "Orrery", version: "1"}` (no chain id: the proof is about the key, on any EVM chain).
    public var typedData: TypedData {
        TypedData(
            types: [
                "EIP712Domain": [.init(name: "name", type: "string"), .init(name: "version", type: "string")],
                "AddressBinding": [
                    .init(name: "did", type: "string"), .init(name: "account", type: "address"),
                    .init(name: "gateway", type: "string"), .init(name: "issuedAt", type: "uint256"),
                    .init(name: "nonce", type: "string"),
                ],
            ],
            primaryType: "AddressBinding",
            domain: .object([("name", .string("Orrery")), ("version", .string("1"))]),
            message: .object([
                ("did", .string(did)), ("account", .string(address)), ("gateway", .string(gateway)),
                ("issuedAt", .number(String(issuedAt))), ("nonce", .string(nonce)),
            ]))
    }

    /// The text a Cardano wallet signs (the COSE_Sign1 payload), one field per line.
    public var text: String {
        """
        Orrery address binding
        did: \(did)
        address: \(address)
        gateway: \(gateway)
        issued_at: \(issuedAt)
        nonce: \(nonce)
        """
    }
}
