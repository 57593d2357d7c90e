public import Crypto
public import Foundation
public import OrreryCardano
public import OrreryEthereum

/// The chain adapters a gateway runs. Compute never requires a chain: with none configured the ledger alone
/// settles, and chain requests are refused with a reason.
public struct ChainSettings: Sendable {
    public var ethereum: EthereumSettings?
    public var cardano: CardanoSettings?

    public init(ethereum: EthereumSettings? = nil, cardano: CardanoSettings? = nil) {
        self.ethereum = ethereum
        self.cardano = cardano
    }
}

/// NTX as an ERC-20: the node to talk to, the gateway's hot key (sends withdrawals, signs channel vouchers), the
/// token and channel contracts, and how cautious to be.
public struct EthereumSettings: Sendable {
    public var rpc: URL
    public var key: Secp256k1PrivateKey
    public var token: EthereumAddress
    /// The payment-channel contract; nil disables channel escrows.
    public var channels: EthereumAddress?
    /// Blocks on top of a transaction's before it counts (1 = mined).
    public var confirmations: UInt64
    public var pollInterval: Duration
    /// A broadcast transaction not mined after this long is replaced (same nonce, fees raised by 12.5 % or to the
    /// market, whichever is higher).
    public var replaceAfter: Duration
    /// Gas limit of an ERC-20 transfer.
    public var transferGas: UInt64
    /// The first block the deposit watcher scans when it has no cursor yet (nil: the head at first start).
    public var startBlock: UInt64?

    public init(
        rpc: URL, key: Secp256k1PrivateKey, token: EthereumAddress, channels: EthereumAddress?,
        confirmations: UInt64 = 2, pollInterval: Duration = .seconds(2), replaceAfter: Duration = .seconds(60),
        transferGas: UInt64 = 120_000, startBlock: UInt64? = nil
    ) {
        self.rpc = rpc
        self.key = key
        self.token = token
        self.channels = channels
        self.confirmations = min(max(1, confirmations), 10_000)
        self.pollInterval = pollInterval
        self.replaceAfter = replaceAfter
        self.transferGas = transferGas
        self.startBlock = startBlock
    }
}

/// NTX as a Cardano native asset: the gateway's payment key, the network, the asset and an optional
/// cardano-submit-api endpoint.
public struct CardanoSettings: Sendable {
    public var key: Curve25519.Signing.PrivateKey
    public var network: CardanoNetwork
    public var asset: CardanoAsset
    public var submitAPI: URL?

    public init(
        key: Curve25519.Signing.PrivateKey, network: CardanoNetwork, asset: CardanoAsset, submitAPI: URL?
    ) {
        self.key = key
        self.network = network
        self.asset = asset
        self.submitAPI = submitAPI
    }

    public var address: CardanoAddress { CardanoAddress(paymentKey: key.publicKey, network: network) }
}
