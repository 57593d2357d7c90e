internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import OrreryCardano
internal import OrreryAddressBinding
internal import OrreryEthereum
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import Synchronization
internal import SwiftProtobuf

/// The chain an Ethereum node reports, asked once.
final class ChainIDCache: Sendable {
    private let value = Mutex<UInt64?>(nil)

    func get(_ rpc: EthereumRPC) async throws -> UInt64 {
        if let known = value.withLock({ $0 }) { return known }
        let fetched = try await rpc.chainID()
        value.withLock { $0 = fetched }
        return fetched
    }
}

extension SettlementAPI {
    /// How far a binding challenge's issue time may be from the gateway's clock.
    static let challengeWindow: Int64 = 600

    func bindAddress(_ request: Orrery_Settlement_V1_BindAddressRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_AddressBinding
    {
        let did = authorization.invoker.string
        let now = Int64(Date().timeIntervalSince1970)
        guard request.issuedAt >= now - Self.challengeWindow, request.issuedAt <= now + Self.challengeWindow else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "issued_at: \(request.issuedAt) is more than 10 minutes from now (\(now)): sign a fresh challenge")
        }
        guard (16...64).contains(request.nonce.count),
            request.nonce.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { throw RPCError(code: .invalidArgument, message: "nonce: 16…64 letters, digits, '-' or '_'") }
        let canonical: String
        switch request.chain {
        case "ethereum":
            guard let address = EthereumAddress(request.address) else {
                throw RPCError(
                    code: .invalidArgument, message: "address: '\(request.address)' is not an Ethereum address (EIP-55)"
                )
            }
            canonical = Hex.prefixed(address.bytes)
            let challenge = AddressBindingChallenge(
                did: did, chain: "ethereum", address: address.checksummed, gateway: gatewayDID.string,
                issuedAt: request.issuedAt, nonce: request.nonce)
            let signer: EthereumAddress
            do {
                signer = try RecoverableSignature(rsv: [UInt8](request.signature))
                    .recoverAddress(digest: try challenge.typedData.digest())
            } catch {
                throw RPCError(code: .invalidArgument, message: "signature: \(error)")
            }
            guard signer == address else {
                throw RPCError(
                    code: .permissionDenied,
                    message:
                        "signature: signed by \(signer), not by \(address.checksummed), over the challenge for \(did)")
            }
        case "cardano":
            guard let address = CardanoAddress(request.address) else {
                throw RPCError(
                    code: .invalidArgument, message: "address: '\(request.address)' is not a bech32 enterprise address")
            }
            canonical = address.bech32
            let challenge = AddressBindingChallenge(
                did: did, chain: "cardano", address: address.bech32, gateway: gatewayDID.string,
                issuedAt: request.issuedAt, nonce: request.nonce)
            let verified: (payload: [UInt8], address: CardanoAddress)
            do {
                verified = try COSESign1(signature: [UInt8](request.signature), key: [UInt8](request.coseKey)).verify()
            } catch {
                throw RPCError(code: .permissionDenied, message: "signature: not a valid CIP-8 COSE_Sign1: \(error)")
            }
            guard verified.address == address else {
                throw RPCError(
                    code: .permissionDenied, message: "signature: made for \(verified.address), not \(address)")
            }
            guard verified.payload == Array(challenge.text.utf8) else {
                throw RPCError(
                    code: .permissionDenied, message: "signature: the signed payload is not the challenge for \(did)")
            }
        default:
            throw RPCError(code: .invalidArgument, message: "chain: 'ethereum' or 'cardano'")
        }
        return try await addresses.bind(
            did: did, chain: request.chain, address: canonical, nonce: request.nonce, issuedAt: request.issuedAt,
            proof: [UInt8](request.signature) + [UInt8](request.coseKey))
    }

    func listAddresses(_ request: Orrery_Settlement_V1_ListAddressesRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_ListAddressesResponse
    {
        try mayRead(request.did, authorization)
        let bindings = try await addresses.bindings(did: request.did)
        return .with { $0.bindings = bindings }
    }

    func requestPayout(_ request: Orrery_Settlement_V1_RequestPayoutRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_Payout
    {
        let retry = try Self.retry(request, key: request.idempotencyKey, authorization)
        guard authorization.invoker.string == request.did else {
            throw RPCError(code: .permissionDenied, message: "only \(request.did) itself requests its payouts")
        }
        guard let amount = Amount.positive(request.amount) else {
            throw RPCError(code: .invalidArgument, message: "amount: a positive integer of base units, up to 78 digits")
        }
        let source = request.from.isEmpty ? "receivable" : request.from
        guard source == "receivable" || source == "available" else {
            throw RPCError(code: .invalidArgument, message: "from: 'receivable' or 'available'")
        }
        switch request.chain {
        case "ethereum":
            guard ethereum != nil else {
                throw RPCError(code: .failedPrecondition, message: "this gateway has no Ethereum adapter configured")
            }
        case "cardano":
            throw RPCError(
                code: .unimplemented,
                message:
                    "Cardano withdrawals are not sent by this gateway yet (it signs Cardano transactions offline only)")
        default:
            throw RPCError(code: .invalidArgument, message: "chain: 'ethereum' or 'cardano'")
        }
        guard let address = try await addresses.payoutAddress(did: request.did, chain: request.chain) else {
            throw RPCError(
                code: .failedPrecondition,
                message: "\(request.did) has no \(request.chain) address bound: BindAddress first")
        }
        return try await payouts.requestWithdrawal(
            did: request.did, chain: request.chain, address: address, amount: amount, source: source, retry: retry)
    }

    func listPayouts(_ request: Orrery_Settlement_V1_ListPayoutsRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_ListPayoutsResponse
    {
        try mayRead(request.did, authorization)
        guard request.limit <= 1000 else { throw RPCError(code: .invalidArgument, message: "limit: 1…1000") }
        let list = try await payouts.list(did: request.did, limit: request.limit == 0 ? 100 : Int(request.limit))
        return .with { $0.payouts = list }
    }

    func getPayout(_ request: Orrery_Settlement_V1_GetPayoutRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_Payout
    {
        guard request.id.hasPrefix("pay_"), request.id.count == 30 else {
            throw RPCError(code: .invalidArgument, message: "id: \"pay_\" and 26 base32 characters")
        }
        guard let payout = try await payouts.payout(id: request.id) else {
            throw RPCError(code: .notFound, message: "no payout \(request.id)")
        }
        try mayRead(payout.did, authorization)
        return payout
    }

    /// Checks the consumer's payment channel for `contract` on chain: it exists, is open, names this gateway as
    /// its signer, is paid for by an address bound to the consumer, holds at least `amount` and has not expired.
    func verifiedChannel(contract: String, consumer: String, amount: UInt64) async throws -> (
        channel: [UInt8], state: EthereumAdapter.Channel
    ) {
        guard let ethereum, ethereum.settings.channels != nil else {
            throw RPCError(
                code: .failedPrecondition, message: "this gateway has no Ethereum channel contract configured")
        }
        let id = ChannelVoucher.channelID(forContract: contract)
        let channel: EthereumAdapter.Channel?
        do {
            channel = try await ethereum.channel(id)
        } catch {
            throw RPCError(code: .unavailable, message: "the Ethereum node could not be asked: \(error)")
        }
        guard let channel else {
            throw RPCError(
                code: .failedPrecondition,
                message: "no payment channel \(Hex.prefixed(id)) (keccak256 of \(contract)) is open on chain")
        }
        guard !channel.closed, channel.expiry > UInt64(Date().timeIntervalSince1970) else {
            throw RPCError(
                code: .failedPrecondition, message: "the payment channel for \(contract) is closed or expired")
        }
        guard channel.signer == ethereum.gatewayAddress else {
            throw RPCError(
                code: .failedPrecondition,
                message: "the channel's signer is \(channel.signer), not this gateway (\(ethereum.gatewayAddress))")
        }
        guard try await addresses.owner(chain: "ethereum", address: Hex.prefixed(channel.payer.bytes)) == consumer
        else {
            throw RPCError(
                code: .permissionDenied, message: "the channel's payer \(channel.payer) is not bound to \(consumer)")
        }
        guard !(channel.deposit < UInt256(amount)) else {
            throw RPCError(
                code: .failedPrecondition,
                message: "the channel holds \(channel.deposit), less than the contract's maximum cost \(amount)")
        }
        return (id, channel)
    }
}
