import Crypto
import Foundation
import GRPCCore
import OrreryCardano
import OrreryEthereum
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// The settlement gateway's chain adapters against real chains' rules: address binding (EIP-712 and CIP-8 proofs),
/// and on an offline Ethereum (eth-tester + py-evm, contracts compiled by vyper) deposits, withdrawals through the
/// broadcaster and a payment channel redeemed by the owner.
@Suite(
    "Settlement: chain adapters", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SettlementChainTests {
    typealias Parties = SettlementLedgerTests.Parties

    /// Binds `wallet`'s address to `key`'s DID through the gateway.
    static func bindEthereum(
        _ parties: Parties, _ gateway: RunningService, key: SigningKey, wallet: Secp256k1PrivateKey,
        signer: Secp256k1PrivateKey? = nil, issuedAt: Int64 = Int64(Date().timeIntervalSince1970),
        nonce: String = UUID().uuidString
    ) async throws -> Orrery_Settlement_V1_AddressBinding {
        let challenge = AddressBindingChallengeText.ethereum(
            did: key.did.string, address: wallet.address.checksummed, gateway: gateway.ready.did, issuedAt: issuedAt,
            nonce: nonce)
        let signature = (signer ?? wallet).sign(digest: try challenge.digest()).rsv
        return try await parties.with(gateway, key: key, proofs: try parties.reader(key, "bind-address")) {
            try await $0.bindAddress(
                .with {
                    $0.chain = "ethereum"
                    $0.address = wallet.address.checksummed
                    $0.issuedAt = issuedAt
                    $0.nonce = nonce
                    $0.signature = Data(signature)
                })
        }
    }

    @Test("BindAddress takes only a fresh signature of the address over the challenge naming the caller's DID")
    func binding() async throws {
        try await TestDatabase.withDatabase { database in
            let directory = try TestEnvironment.temporaryDirectory("settlement-bind")
            defer { try? FileManager.default.removeItem(at: directory) }
            let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
            let parties = try Parties(network: network)
            let gateway = try await SettlementLedgerTests.startGateway(
                database, network, directory.appendingPathComponent("gateway"))
            defer { gateway.child.signal(SIGKILL) }
            let wallet = Secp256k1PrivateKey.generate()

            let bound = try await Self.bindEthereum(parties, gateway, key: parties.consumer, wallet: wallet)
            #expect(bound.did == parties.consumer.did.string && bound.address == Hex.prefixed(wallet.address.bytes))
            await NotaryTests.expectStatus(.permissionDenied, "not by") {
                _ = try await Self.bindEthereum(
                    parties, gateway, key: parties.consumer, wallet: wallet, signer: Secp256k1PrivateKey.generate())
            }
            await NotaryTests.expectStatus(.invalidArgument, "10 minutes") {
                _ = try await Self.bindEthereum(
                    parties, gateway, key: parties.consumer, wallet: wallet,
                    issuedAt: Int64(Date().timeIntervalSince1970) - 3600)
            }
            await NotaryTests.expectStatus(.alreadyExists, "nonce") {
                _ = try await Self.bindEthereum(
                    parties, gateway, key: parties.consumer, wallet: Secp256k1PrivateKey.generate(),
                    nonce: "fixed-nonce-0001")
                _ = try await Self.bindEthereum(
                    parties, gateway, key: parties.consumer, wallet: Secp256k1PrivateKey.generate(),
                    nonce: "fixed-nonce-0001")
            }
            await NotaryTests.expectStatus(.alreadyExists, "another DID") {
                _ = try await Self.bindEthereum(parties, gateway, key: SigningKey(), wallet: wallet)
            }

            // Cardano: a CIP-8 COSE_Sign1 over the challenge text.
            let payment = Curve25519.Signing.PrivateKey()
            let address = CardanoAddress(paymentKey: payment.publicKey, network: .testnet)
            func bindCardano(payload: String? = nil) async throws -> Orrery_Settlement_V1_AddressBinding {
                let now = Int64(Date().timeIntervalSince1970)
                let nonce = UUID().uuidString
                let text = AddressBindingChallengeText.cardano(
                    did: parties.consumer.did.string, address: address.bech32, gateway: gateway.ready.did,
                    issuedAt: now, nonce: nonce)
                let signed = try COSESign1.sign(
                    payload: Array((payload ?? text).utf8), address: address, signingKey: payment)
                return try await parties.with(
                    gateway, key: parties.consumer, proofs: try parties.reader(parties.consumer, "bind-address")
                ) {
                    try await $0.bindAddress(
                        .with {
                            $0.chain = "cardano"
                            $0.address = address.bech32
                            $0.issuedAt = now
                            $0.nonce = nonce
                            $0.signature = Data(signed.signature)
                            $0.coseKey = Data(signed.key)
                        })
                }
            }
            #expect(try await bindCardano().address == address.bech32)
            await NotaryTests.expectStatus(.permissionDenied, "not the challenge") {
                _ = try await bindCardano(payload: "something else")
            }
            let listed = try await parties.with(
                gateway, key: parties.consumer, proofs: try parties.reader(parties.consumer, "list-addresses")
            ) { try await $0.listAddresses(.with { $0.did = parties.consumer.did.string }) }
            #expect(Set(listed.bindings.map(\.chain)) == ["ethereum", "cardano"])
        }
    }
}

/// The challenges as the gateway defines them (SettlementService.AddressBindingChallenge), rebuilt here from the
/// documented shapes so the test checks the wire contract, not the gateway's own code.
enum AddressBindingChallengeText {
    static func ethereum(did: String, address: String, gateway: String, issuedAt: Int64, nonce: String) -> TypedData {
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

    static func cardano(did: String, address: String, gateway: String, issuedAt: Int64, nonce: String) -> String {
        "Orrery address binding\ndid: \(did)\naddress: \(address)\ngateway: \(gateway)\nissued_at: \(issuedAt)\nnonce: \(nonce)"
    }
}
