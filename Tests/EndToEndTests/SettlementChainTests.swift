import Crypto
import Foundation
import GRPCCore
import OrreryAuth
import OrreryCardano
import OrreryDatabase
import OrreryAddressBinding
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
        nonce: String = UUID().uuidString, sendIssuedAt: Int64? = nil
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
                    $0.issuedAt = sendIssuedAt ?? issuedAt
                    $0.nonce = nonce
                    $0.signature = Data(signature)
                })
        }
    }

    @Test("BindAddress takes only a fresh signature of the address over the challenge naming the caller's DID")
    func binding() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-bind") { directory in
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
                await NotaryTests.expectStatus(.invalidArgument, "10 minutes") {
                    _ = try await Self.bindEthereum(
                        parties, gateway, key: parties.consumer, wallet: wallet, sendIssuedAt: Int64.min)
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

                // The same through the CLI, as the operator (its own root): bind, list, deposit, payouts.
                let cli = TestEnvironment.executable("orrery")
                let connection = [
                    "--settlement", "127.0.0.1:\(gateway.ready.grpcPort)", "--key",
                    directory.appendingPathComponent("network/operator.key").path,
                ]
                let ethKey = directory.appendingPathComponent("operator-eth.key").path
                let operatorWallet = Secp256k1PrivateKey.generate()
                try KeyFile.writeBytes(operatorWallet.rawRepresentation, to: ethKey)
                let cardanoKey = directory.appendingPathComponent("operator-ada.key").path
                try KeyFile.writeBytes(Array(Curve25519.Signing.PrivateKey().rawRepresentation), to: cardanoKey)
                let (bindStatus, boundByCLI) = try await ChildProcess.run(
                    cli, arguments: ["address", "bind", "--chain", "ethereum", "--chain-key", ethKey] + connection)
                #expect(
                    bindStatus == 0 && boundByCLI.contains(Hex.prefixed(operatorWallet.address.bytes)), "\(boundByCLI)")
                let (adaStatus, adaBound) = try await ChildProcess.run(
                    cli,
                    arguments: ["address", "bind", "--chain", "cardano", "--chain-key", cardanoKey, "--testnet"]
                        + connection)
                #expect(adaStatus == 0 && adaBound.contains("addr_test1"), "\(adaBound)")
                let (_, addresses) = try await ChildProcess.run(cli, arguments: ["address", "list"] + connection)
                #expect(addresses.contains("ethereum\t0x") && addresses.contains("cardano\taddr_test1"), "\(addresses)")
                let operatorDID = network.operatorKey.did.string
                let (depositStatus, credited) = try await ChildProcess.run(
                    cli, arguments: ["deposit", operatorDID, "250", "--reference", "wire 7"] + connection)
                #expect(depositStatus == 0 && credited.contains("250 credited"), "\(credited)")
                let (payoutStatus, payouts) = try await ChildProcess.run(
                    cli, arguments: ["payout", "list"] + connection)
                #expect(payoutStatus == 0 && payouts.isEmpty, "\(payouts)")
                let (refusedStatus, refused) = try await ChildProcess.run(
                    cli, arguments: ["payout", "request", "10", "--from", "available"] + connection)
                #expect(refusedStatus != 0 && refused.contains("no Ethereum adapter"), "\(refused)")

                // Read calls as JSON over HTTP, authorised like gRPC calls.
                let catalog = try MethodCatalog(
                    descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
                let method = "orrery.settlement.v1.Settlement/GetBalance"
                let request = Orrery_Settlement_V1_GetBalanceRequest.with { $0.did = operatorDID }
                let header = try InvocationSigner.authorization(
                    for: request, method: method, key: network.operatorKey, subject: network.operatorKey.did,
                    audience: try DID(gateway.ready.did), proofs: [], catalog: catalog)
                let (curlStatus, answer) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/curl"),
                    arguments: [
                        "-s", "-X", "POST", "http://127.0.0.1:\(gateway.ready.httpPort)/\(method)", "-H",
                        "authorization: \(header)", "-H", "content-type: application/json", "-d",
                        try request.jsonString(),
                    ])
                #expect(curlStatus == 0 && answer.contains("\"available\":\"250\""), "\(answer)")
                let (_, unauthorised) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/curl"),
                    arguments: [
                        "-s", "-X", "POST", "http://127.0.0.1:\(gateway.ready.httpPort)/\(method)", "-d",
                        try request.jsonString(),
                    ])
                #expect(!unauthorised.contains("available"), "\(unauthorised)")
            }
        }
    }

    /// Starts a gateway with the Ethereum adapter on `chain`.
    static func startEthereumGateway(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, notary: RunningService,
        chain: EthereumTestChain, keyFile: String
    ) async throws -> RunningService {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var environment = database.serviceEnvironment.merging(network.environment(for: "settlement-gateway")) { $1 }
        environment["ORRERY_NOTARY_DID"] = notary.ready.did
        return try await RunningService.start(
            "settlement-gateway",
            extraArguments: [
                "--eth-rpc", chain.rpc.endpoint.absoluteString, "--eth-key", keyFile, "--eth-token",
                chain.token.checksummed, "--eth-channels", chain.channels.checksummed, "--eth-confirmations", "1",
                "--eth-poll-ms", "200", "--eth-replace-after", "2", "--eth-start-block", "0",
            ], environment: environment, directory: directory)
    }

    @Test(
        "Ethereum: deposits credited once (held until the sender binds), withdrawals confirmed (a stuck one replaced and paid once), a channel paid by vouchers the owner redeems and the rest reclaimed"
    )
    func ethereum() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-eth") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let contracts = try ContractParties(network: network)
                let parties = try Parties(network: network, consumer: contracts.consumer)
                let (gatewayWallet, consumerWallet, ownerWallet, strangerWallet) = (
                    Secp256k1PrivateKey.generate(), Secp256k1PrivateKey.generate(), Secp256k1PrivateKey.generate(),
                    Secp256k1PrivateKey.generate()
                )
                let ether = "10000000000000000000"
                let chain = try await EthereumTestChain.start(
                    funding: [
                        (gatewayWallet.address, ether, "0"), (consumerWallet.address, ether, "10000"),
                        (ownerWallet.address, ether, "0"), (strangerWallet.address, ether, "100"),
                    ], directory: directory)
                defer { chain.child.signal(SIGKILL) }
                let keyFile = directory.appendingPathComponent("gateway-eth.key").path
                try KeyFile.writeBytes(gatewayWallet.rawRepresentation, to: keyFile)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                var gateway = try await Self.startEthereumGateway(
                    database, network, directory.appendingPathComponent("gateway"), notary: notary, chain: chain,
                    keyFile: keyFile)
                defer { gateway.child.signal(SIGKILL) }
                let consumer = contracts.consumer.did.string
                func balance(_ did: String) async throws -> Orrery_Settlement_V1_Balance {
                    try await parties.asOperator(gateway) { try await $0.getBalance(.with { $0.did = did }) }
                }
                func transfer(_ from: Secp256k1PrivateKey, _ amount: UInt64) async throws {
                    let receipt = try await chain.send(
                        from: from, to: chain.token,
                        data: ABI.call(
                            "transfer(address,uint256)", [.address(gatewayWallet.address), .uint(UInt256(amount))]))
                    #expect(receipt.succeeded)
                }

                // Deposits: the consumer's (bound first) is credited; the stranger's waits until it binds.
                _ = try await Self.bindEthereum(parties, gateway, key: contracts.consumer, wallet: consumerWallet)
                try await transfer(consumerWallet, 3000)
                #expect(try await eventually { try await balance(consumer).available == "3000" })
                try await transfer(strangerWallet, 100)
                let heldBack = try await database.withClient(schema: "settlement") { client in
                    try await eventually {
                        try await client.query("SELECT 1 FROM chain_deposits WHERE credited_to IS NULL").collected()
                            .count
                            == 1
                    }
                }
                #expect(heldBack, "the unbound sender's deposit is recorded, not credited")
                let stranger = SigningKey()
                let strangerBinding = try await Self.bindEthereum(
                    parties, gateway, key: stranger, wallet: strangerWallet)
                #expect(strangerBinding.depositsCredited == 1)
                #expect(try await balance(stranger.did.string).available == "100")
                // A crash and restart rescans nothing twice.
                gateway.child.signal(SIGKILL)
                _ = await gateway.child.waitForExit()
                gateway = try await Self.startEthereumGateway(
                    database, network, directory.appendingPathComponent("gateway2"), notary: notary, chain: chain,
                    keyFile: keyFile)
                try await transfer(consumerWallet, 1000)
                #expect(try await eventually { try await balance(consumer).available == "4000" })
                let statement = try await parties.asOperator(gateway) {
                    try await $0.getStatement(.with { $0.did = consumer })
                }
                #expect(statement.entries.filter { $0.kind == "deposit" }.count == 2)

                // Ledger mode: escrow, release to the owner, withdrawal to the owner's bound address.
                let owner = contracts.owner.did.string
                _ = try await Self.bindEthereum(parties, gateway, key: contracts.owner, wallet: ownerWallet)
                let (ledgerContract, ledgerRecord) = try await contracts.activate(
                    notary, contract: try contracts.contract(maxCost: 500))
                _ = try await parties.escrow(
                    gateway, contract: ledgerContract.id, amount: 500, key: "hold-ledger",
                    delegation: try parties.escrowDelegation(budget: 500))
                func release(_ contract: String, entry: UInt64, receipt: Orrery_Common_V1_Signed, key: String)
                    async throws
                    -> Orrery_Settlement_V1_JournalEntry
                {
                    let index = try await contracts.record(receipt, key: key, notary: notary)
                    var request = try await contracts.releaseRequest(
                        contract, receipt: index, notary: notary, contractEntry: entry)
                    request.idempotencyKey = key
                    return try await parties.with(gateway, key: parties.orchestrator, proofs: parties.orchestratorChain)
                    {
                        try await $0.release(request)
                    }
                }
                func completion(_ contract: String, sequence: UInt64, wall: Double) throws -> Orrery_Common_V1_Signed {
                    try contracts.sign(
                        Orrery_Notary_V1_CompletionReceipt.with {
                            $0.contractID = contract
                            $0.sequence = sequence
                            $0.usage = .with {
                                $0.contractID = contract
                                $0.sequence = sequence
                                $0.wallSeconds = wall
                            }
                        }, by: contracts.device)
                }
                _ = try await release(
                    ledgerContract.id, entry: ledgerRecord.entryIndexes[0],
                    receipt: try completion(ledgerContract.id, sequence: 1, wall: 7200), key: "rel-ledger")
                #expect(try await balance(owner).receivable == "196")
                func payout(_ amount: String, key: String) async throws -> Orrery_Settlement_V1_Payout {
                    try await parties.with(
                        gateway, key: contracts.owner, proofs: try parties.reader(contracts.owner, "request-payout")
                    ) {
                        try await $0.requestPayout(
                            .with {
                                $0.did = owner
                                $0.chain = "ethereum"
                                $0.amount = amount
                                $0.idempotencyKey = key
                            })
                    }
                }
                func state(_ id: String) async throws -> Orrery_Settlement_V1_Payout {
                    try await parties.asOperator(gateway) { try await $0.getPayout(.with { $0.id = id }) }
                }
                let first = try await payout("96", key: "w1")
                #expect(first.state == "intent" && first.address == Hex.prefixed(ownerWallet.address.bytes))
                #expect(try await payout("96", key: "w1").id == first.id, "a retry returns the first payout")
                await NotaryTests.expectStatus(.failedPrecondition, "does not cover") {
                    _ = try await payout("1000", key: "too-much")
                }
                #expect(try await eventually { try await state(first.id).state == "confirmed" })
                #expect(try await chain.balance(of: ownerWallet.address) == UInt256(96))

                // A stuck withdrawal: the node stops mining; the broadcaster replaces it (same nonce, higher fees);
                // once blocks come again exactly one of them is mined.
                try await chain.setAutoMine(false)
                let stuck = try await payout("100", key: "w2")
                #expect(try await eventually { try await state(stuck.id).transactions.count >= 2 })
                try await chain.setAutoMine(true)
                try await chain.mine(2)
                #expect(try await eventually { try await state(stuck.id).state == "confirmed" })
                #expect(try await chain.balance(of: ownerWallet.address) == UInt256(196))
                #expect(try await balance(owner).receivable == "0")

                // A payment channel for another contract: opened on chain by the consumer, escrowed after the gateway
                // checked it, released as vouchers, redeemed by the owner; the rest reclaimed after expiry.
                let (channelContract, channelRecord) = try await contracts.activate(
                    notary, contract: try contracts.contract(maxCost: 400))
                let channelID = ChannelVoucher.channelID(forContract: channelContract.id)
                let head = try await chain.rpc.head()
                try #require(
                    try await chain.send(
                        from: consumerWallet, to: chain.token,
                        data: ABI.call("approve(address,uint256)", [.address(chain.channels), .uint(UInt256(400))])
                    )
                    .succeeded)
                try #require(
                    try await chain.send(
                        from: consumerWallet, to: chain.channels,
                        data: ABI.call(
                            "open(bytes32,address,address,uint256,uint256)",
                            [
                                .bytes32(channelID), .address(ownerWallet.address), .address(gatewayWallet.address),
                                .uint(UInt256(400)), .uint(UInt256(head.timestamp + 3600)),
                            ])
                    ).succeeded)
                let held = try await parties.with(
                    gateway, key: parties.orchestrator, subject: contracts.consumer.did,
                    proofs: [try parties.escrowDelegation(budget: 400)], alsoCarrying: parties.orchestratorChain
                ) { client in
                    try await client.escrow(
                        .with {
                            $0.contractID = channelContract.id
                            $0.consumerDid = consumer
                            $0.amount = 400
                            $0.chain = "ethereum"
                            $0.idempotencyKey = "hold-channel"
                        })
                }
                #expect(held.lines.contains { $0.account == "clearing/ethereum" && $0.amount == "-400" })
                _ = try await release(
                    channelContract.id, entry: channelRecord.entryIndexes[0],
                    receipt: try contracts.usage(channelContract.id, sequence: 1, cpu: 1800), key: "rel-ch-1")
                _ = try await release(
                    channelContract.id, entry: channelRecord.entryIndexes[0],
                    receipt: try completion(channelContract.id, sequence: 2, wall: 7200), key: "rel-ch-2")
                let vouchers = try await parties.asOperator(gateway) {
                    try await $0.listPayouts(.with { $0.did = owner })
                }.payouts.filter { $0.kind == "voucher" }
                try #require(vouchers.count == 1)
                let voucher = vouchers[0]
                #expect(voucher.amount == "200" && voucher.contractID == channelContract.id)
                // A voucher someone else signed is refused by the contract; the gateway's is paid.
                let forged = ChannelVoucher(
                    chainID: chain.chainID, contract: chain.channels, channel: channelID, amount: UInt256(400)
                ).sign(with: ownerWallet)
                let refused = try await chain.send(
                    from: ownerWallet, to: chain.channels,
                    data: ABI.call(
                        "redeem(bytes32,uint256,bytes)", [.bytes32(channelID), .uint(UInt256(400)), .bytes(forged)]))
                #expect(!refused.succeeded)
                let redeemed = try await chain.send(
                    from: ownerWallet, to: chain.channels,
                    data: ABI.call(
                        "redeem(bytes32,uint256,bytes)",
                        [.bytes32(channelID), .uint(UInt256(200)), .bytes([UInt8](voucher.voucherSignature))]))
                #expect(redeemed.succeeded)
                #expect(try await chain.balance(of: ownerWallet.address) == UInt256(396))
                #expect(try await eventually { try await state(voucher.id).state == "confirmed" })
                _ = try await parties.refund(gateway, contract: channelContract.id, key: "refund-channel")
                try await chain.timeTravel(to: head.timestamp + 7200)
                let before = try await chain.balance(of: consumerWallet.address)
                #expect(
                    try await chain.send(
                        from: consumerWallet, to: chain.channels,
                        data: ABI.call("reclaim(bytes32)", [.bytes32(channelID)])
                    ).succeeded)
                #expect(try await chain.balance(of: consumerWallet.address) == before.adding(UInt256(200)))
            }
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
