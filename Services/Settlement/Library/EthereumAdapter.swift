internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryEthereum
internal import OrreryIdentity
internal import PostgresNIO

/// The Ethereum side of the gateway: reads the NTX token and channel contracts, signs withdrawals and vouchers with
/// the gateway's key.
struct EthereumAdapter: Sendable {
    let settings: EthereumSettings
    let rpc: EthereumRPC

    init(settings: EthereumSettings) {
        self.settings = settings
        rpc = EthereumRPC(endpoint: settings.rpc)
    }

    var gatewayAddress: EthereumAddress { settings.key.address }

    static let transferTopic = Keccak256.hash("Transfer(address,address,uint256)")
    static let redeemedTopic = Keccak256.hash("Redeemed(bytes32,uint256,uint256)")

    /// A channel as the contract holds it.
    struct Channel: Sendable {
        var payer: EthereumAddress
        var payee: EthereumAddress
        var signer: EthereumAddress
        var deposit: UInt256
        var paid: UInt256
        var expiry: UInt64
        var closed: Bool
    }

    /// Reads `channels(id)`; nil when no channel has that id.
    func channel(_ id: [UInt8]) async throws -> Channel? {
        guard let contract = settings.channels else { return nil }
        let words = try await rpc.call(to: contract, data: ABI.call("channels(bytes32)", [.bytes32(id)]))
        guard words.count >= 7 * 32 else {
            throw EthereumRPCError.unexpected("channels() answered \(words.count) bytes")
        }
        func address(_ index: Int) -> EthereumAddress? {
            EthereumAddress(bytes: Array(words[(index * 32 + 12)..<((index + 1) * 32)]))
        }
        guard let payer = address(0), let payee = address(1), let signer = address(2),
            let deposit = ABI.decodeUInt(words, word: 3), let paid = ABI.decodeUInt(words, word: 4),
            let expiry = ABI.decodeUInt(words, word: 5)?.uint64, let closed = ABI.decodeUInt(words, word: 6)
        else { throw EthereumRPCError.unexpected("channels() answered malformed words") }
        guard payer.bytes != [UInt8](repeating: 0, count: 20) else { return nil }
        return Channel(
            payer: payer, payee: payee, signer: signer, deposit: deposit, paid: paid, expiry: expiry,
            closed: closed != .zero)
    }

    /// A cumulative voucher for `channel`, signed by the gateway.
    func voucher(channel: [UInt8], amount: UInt256, chainID: UInt64) -> [UInt8]? {
        guard let contract = settings.channels else { return nil }
        return ChannelVoucher(chainID: chainID, contract: contract, channel: channel, amount: amount)
            .sign(with: settings.key)
    }

    /// Fees for a new transaction: the node's suggested tip, and twice the base fee plus the tip as the cap.
    func marketFees() async throws -> (maxFee: UInt256, tip: UInt256) {
        let head = try await rpc.head()
        let tip = try await rpc.maxPriorityFeePerGas()
        return (head.baseFeePerGas.multiplied(by: 2).adding(tip), tip)
    }

    /// A signed ERC-20 `transfer(to, amount)` from the gateway.
    func transfer(to: EthereumAddress, amount: UInt256, nonce: UInt64, chainID: UInt64, maxFee: UInt256, tip: UInt256)
        -> SignedTransaction
    {
        EIP1559Transaction(
            chainID: chainID, nonce: nonce, maxPriorityFeePerGas: tip, maxFeePerGas: maxFee,
            gasLimit: settings.transferGas, to: settings.token,
            data: ABI.call("transfer(address,uint256)", [.address(to), .uint(amount)])
        ).signed(by: settings.key)
    }
}

extension UInt256 {
    /// ⌈a × 9 / 8⌉ + 1: the smallest fee a node accepts for a replacement is 12.5 % above the old one.
    var bumpedForReplacement: UInt256 {
        multiplied(by: 9).adding(UInt256(7)).divided(by: 8).adding(UInt256(1))
    }
}
