public import Crypto

/// Which Cardano network an address belongs to (its header's low nibble and bech32 prefix).
public enum CardanoNetwork: Sendable, Hashable {
    case mainnet
    case testnet

    var id: UInt8 { self == .mainnet ? 1 : 0 }
    var addressPrefix: String { self == .mainnet ? "addr" : "addr_test" }
}

/// A CIP-19 enterprise address (header type 6: a payment key hash, no stake part).
public struct CardanoAddress: Sendable, Hashable, CustomStringConvertible {
    public let network: CardanoNetwork
    /// blake2b-224 of the payment verification key.
    public let paymentKeyHash: [UInt8]

    public init(paymentKey: Curve25519.Signing.PublicKey, network: CardanoNetwork) {
        self.network = network
        paymentKeyHash = Blake2b.hash224(Array(paymentKey.rawRepresentation))
    }

    /// Parses the bech32 form of an enterprise key-hash address.
    public init?(_ text: String) {
        guard let (hrp, data) = Bech32.decode(text), data.count == 29, data[0] >> 4 == 6 else { return nil }
        switch (hrp, data[0] & 0x0F) {
        case ("addr", 1): network = .mainnet
        case ("addr_test", 0): network = .testnet
        default: return nil
        }
        paymentKeyHash = Array(data[1...])
    }

    /// header ‖ key hash — the bytes inside transactions and COSE headers.
    public var bytes: [UInt8] { [0x60 | network.id] + paymentKeyHash }

    public var bech32: String { Bech32.encode(hrp: network.addressPrefix, data: bytes) }

    public var description: String { bech32 }
}
