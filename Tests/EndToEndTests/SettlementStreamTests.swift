import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrrerySettlementClient
import OrreryTestSupport
@testable import SettlementService
import SwiftProtobuf
import Testing

/// The gateway's `Operate` stream on a real gateway, notary and PostgreSQL: each streamed operation authorised on its
/// own exactly as its unary call is, refusals answered per operation while the stream goes on.
@Suite(
    "Settlement: ledger operations over one stream", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SettlementStreamTests {
    /// Signs streamed operations as the parties of a test would.
    struct Signer {
        let parties: SettlementLedgerTests.Parties
        let audience: DID
        let catalog: MethodCatalog

        /// The orchestrator's capability for `request` under the consumer's escrow delegation.
        func escrow(_ request: Orrery_Settlement_V1_EscrowRequest, delegation: Delegation) throws -> String {
            try InvocationSigner.authorization(
                for: request, method: "orrery.settlement.v1.Settlement/Escrow", key: parties.orchestrator,
                subject: parties.consumer.did, audience: audience, proofs: [delegation], catalog: catalog,
                alsoCarrying: parties.orchestratorChain)
        }

        /// The orchestrator's capability for `method` under its operator chain.
        func orchestrator(_ request: some SwiftProtobuf.Message, _ method: String) throws -> String {
            try InvocationSigner.authorization(
                for: request, method: "orrery.settlement.v1.Settlement/\(method)", key: parties.orchestrator,
                subject: parties.network.operatorKey.did, audience: audience, proofs: parties.orchestratorChain,
                catalog: catalog)
        }

        func escrowRequest(_ contract: String, amount: UInt64, key: String) -> Orrery_Settlement_V1_EscrowRequest {
            .with {
                $0.contractID = contract
                $0.consumerDid = parties.consumer.did.string
                $0.amount = amount
                $0.idempotencyKey = key
            }
        }
    }

    /// Runs `body` with an `Operate` stream to `gateway`, closing it afterwards.
    static func withStream<Result: Sendable>(
        _ gateway: RunningService, _ body: (SettlementOperations) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: gateway.ready.grpcPort), transportSecurity: .plaintext)
        ) { client in
            let stream = SettlementOperations()
            async let running: Void = stream.run(on: client)
            let result = try await body(stream)
            stream.finish()
            await running
            return result
        }
    }

    @Test(
        "operations in flight together on one stream, each checked as its unary call (no capability, replay, other method, other args, policy): refusals are per operation, the stream goes on"
    )
    func authorisedPerOperation() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-stream") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try SettlementLedgerTests.Parties(network: network)
                let gateway = try await SettlementLedgerTests.startGateway(
                    database, network, directory.appendingPathComponent("gateway"))
                defer { gateway.child.signal(SIGKILL) }
                let signer = Signer(
                    parties: parties, audience: try DID(gateway.ready.did),
                    catalog: try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
                )
                let delegation = try parties.escrowDelegation(budget: 100)
                try await Self.withStream(gateway) { stream in
                    // The operator's deposit over the stream, then 40 escrows in flight at once.
                    let deposit = Orrery_Settlement_V1_DepositRequest.with {
                        $0.did = parties.consumer.did.string
                        $0.amount = "10000"
                        $0.source = "ledger"
                        $0.idempotencyKey = "fund"
                    }
                    let funded = try await stream.perform(
                        .deposit(deposit),
                        authorization: try InvocationSigner.authorization(
                            for: deposit, method: "orrery.settlement.v1.Settlement/Deposit", key: network.operatorKey,
                            subject: network.operatorKey.did, audience: signer.audience, proofs: [],
                            catalog: signer.catalog))
                    #expect(funded.kind == "deposit")
                    let contracts = (0..<40).map { _ in SettlementLedgerTests.contractID() }
                    let held = try await withThrowingTaskGroup(of: String.self) { group in
                        for (position, contract) in contracts.enumerated() {
                            let request = signer.escrowRequest(contract, amount: 10, key: "hold-\(position)")
                            let authorization = try signer.escrow(request, delegation: delegation)
                            group.addTask {
                                try await stream.perform(.escrow(request), authorization: authorization).contractID
                            }
                        }
                        var held: Set<String> = []
                        for try await contract in group { held.insert(contract) }
                        return held
                    }
                    #expect(held == Set(contracts), "every escrow answered with its own entry")

                    // Each refusal is the one its unary call would get.
                    let fresh = signer.escrowRequest(SettlementLedgerTests.contractID(), amount: 10, key: "fresh")
                    await NotaryTests.expectStatus(.unauthenticated, "no capability") {
                        _ = try await stream.perform(.escrow(fresh), authorization: "")
                    }
                    let used = signer.escrowRequest(contracts[0], amount: 10, key: "hold-0")
                    let replayed = try signer.escrow(used, delegation: delegation)
                    let retried = try await stream.perform(.escrow(used), authorization: replayed)
                    #expect(retried.contractID == contracts[0], "a retry under its key returns the first entry")
                    await NotaryTests.expectStatus(.permissionDenied, "already used") {
                        _ = try await stream.perform(.escrow(used), authorization: replayed)
                    }
                    let refund = Orrery_Settlement_V1_RefundRequest.with {
                        $0.contractID = contracts[1]
                        $0.idempotencyKey = "refund-1"
                    }
                    await NotaryTests.expectStatus(.permissionDenied, "needs /orrery/settlement/refund") {
                        _ = try await stream.perform(
                            .refund(refund), authorization: try signer.escrow(fresh, delegation: delegation))
                    }
                    var larger = fresh
                    larger.amount = 20
                    await NotaryTests.expectStatus(.permissionDenied, "differs from the invocation's args") {
                        _ = try await stream.perform(
                            .escrow(larger), authorization: try signer.escrow(fresh, delegation: delegation))
                    }
                    let overBudget = signer.escrowRequest(SettlementLedgerTests.contractID(), amount: 500, key: "big")
                    await NotaryTests.expectStatus(.permissionDenied, "violate") {
                        _ = try await stream.perform(
                            .escrow(overBudget), authorization: try signer.escrow(overBudget, delegation: delegation))
                    }
                    // Refused by the ledger, not the capability check: the contract is escrowed already.
                    let again = signer.escrowRequest(contracts[2], amount: 10, key: "twice")
                    await NotaryTests.expectStatus(.alreadyExists, "already escrowed") {
                        _ = try await stream.perform(
                            .escrow(again), authorization: try signer.escrow(again, delegation: delegation))
                    }

                    // The stream went on: a refund with its own capability.
                    let refunded = try await stream.perform(
                        .refund(refund), authorization: try signer.orchestrator(refund, "Refund"))
                    #expect(Set(refunded.lines.map(\.amount)) == ["-10", "10"], "\(refunded.lines)")
                }
                let balance = try await parties.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = parties.consumer.did.string })
                }
                #expect(balance.escrow == "390" && balance.available == "9610", "\(balance)")
                // Each streamed operation is counted by method and code, as a unary call is.
                let url = try #require(URL(string: "http://127.0.0.1:\(gateway.ready.httpPort)/metrics"))
                let metrics = String(decoding: try await URLSession.shared.data(from: url).0, as: UTF8.self)
                let counted = metrics.split(separator: "\n").filter { $0.hasPrefix("settlement_operations_total") }
                #expect(
                    counted.contains { $0.contains(#"method="Escrow""#) && $0.contains(#"code="ok""#) }, "\(counted)")
                #expect(
                    counted.contains { $0.contains(#"method="Escrow""#) && $0.contains(#"code="permissionDenied""#) },
                    "\(counted)")
                // The NTX moved, by kind: 40 escrows of 10 (the retry answered with the first entry counts nothing),
                // the deposit, the refund; and what escrow holds now, as the ledger says.
                @Sendable func value(_ series: String, in text: String) -> Double? {
                    text.split(separator: "\n").first { $0.hasPrefix(series + " ") }
                        .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
                }
                #expect(value(#"orrery_settlement_ntx_total{kind="escrow"}"#, in: metrics) == 400, "\(metrics)")
                #expect(value(#"orrery_settlement_ntx_total{kind="refund"}"#, in: metrics) == 10)
                #expect(value(#"orrery_settlement_ntx_total{kind="deposit"}"#, in: metrics) == 10_000)
                let held = try await eventually(timeout: .seconds(60)) {
                    let text = String(decoding: try await URLSession.shared.data(from: url).0, as: UTF8.self)
                    return value("orrery_settlement_escrow_held_ntx", in: text) == 390
                }
                #expect(held, "the escrow gauge never read 390")
            }
        }
    }

    @Test("a release over the stream is proven against the notary's log like a unary one")
    func releaseOverTheStream() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-stream-release") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let contracts = try ContractParties(network: network)
                let parties = try SettlementLedgerTests.Parties(network: network, consumer: contracts.consumer)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                let gateway = try await SettlementLedgerTests.startGateway(
                    database, network, directory.appendingPathComponent("gateway"), notary: notary)
                defer { gateway.child.signal(SIGKILL) }
                let signer = Signer(
                    parties: parties, audience: try DID(gateway.ready.did),
                    catalog: try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
                )

                let (contract, _) = try await contracts.activate(notary, contract: try contracts.contract(maxCost: 500))
                try await parties.fund(gateway, amount: "1000")
                let receipt = try await contracts.record(
                    try contracts.usage(contract.id, sequence: 1, cpu: 1800), key: "u1", notary: notary)
                var release = try await contracts.releaseRequest(contract.id, receipt: receipt, notary: notary)
                release.idempotencyKey = "rel-1"
                try await Self.withStream(gateway) { stream in
                    let hold = signer.escrowRequest(contract.id, amount: 500, key: "hold")
                    _ = try await stream.perform(
                        .escrow(hold),
                        authorization: try signer.escrow(hold, delegation: try parties.escrowDelegation(budget: 500)))
                    var bent = release
                    bent.idempotencyKey = "bent"
                    bent.receipt.path[0][0] ^= 1
                    await NotaryTests.expectStatus(.invalidArgument, "not proven included") {
                        _ = try await stream.perform(
                            .release(bent), authorization: try signer.orchestrator(bent, "Release"))
                    }
                    let paid = try await stream.perform(
                        .release(release), authorization: try signer.orchestrator(release, "Release"))
                    #expect(Set(paid.lines.map(\.amount)) == ["-50", "49", "1"], "\(paid.lines)")
                }
                let owner = try await parties.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = contracts.owner.did.string })
                }
                #expect(owner.receivable == "49")
            }
        }
    }

    @Test(
        "Python's grpcio, with the message types learned through reflection, gets each refusal on the stream by its tag"
    )
    func independentClient() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-stream-python") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let gateway = try await SettlementLedgerTests.startGateway(
                    database, network, directory.appendingPathComponent("gateway"))
                defer { gateway.child.signal(SIGKILL) }
                let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/grpc_probe.py").path
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.python, arguments: [script, "operate", "127.0.0.1:\(gateway.ready.grpcPort)"])
                #expect(status == 0, "\(output)")
                let line = try #require(output.split(separator: "\n").last.map(String.init))
                let answers = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [[Any]])
                var byTag: [Int: (code: Int, message: String)] = [:]
                for answer in answers {
                    guard answer.count == 3, let tag = answer[0] as? Int, let code = answer[1] as? Int,
                        let message = answer[2] as? String
                    else { continue }
                    byTag[tag] = (code, message)
                }
                #expect(byTag.count == 3, "\(output)")
                #expect(byTag[7]?.code == RPCError.Code.unauthenticated.rawValue)
                #expect(byTag[7]?.message.contains("no capability") == true, "\(byTag)")
                #expect(byTag[8]?.code == RPCError.Code.unauthenticated.rawValue)
                #expect(byTag[8]?.message.contains("malformed capability") == true, "\(byTag)")
                #expect(byTag[9]?.code == RPCError.Code.invalidArgument.rawValue)
                #expect(byTag[9]?.message.contains("one of deposit, escrow, release or refund") == true, "\(byTag)")
            }
        }
    }

    @Test("a stream's in-flight slots: a full set makes the reader wait until an answer is written; closing wakes it")
    func inFlightSlots() async throws {
        let slots = InFlightSlots(2)
        #expect(await slots.acquire())
        #expect(await slots.acquire())
        let third = Task { await slots.acquire() }
        slots.release()
        #expect(await third.value, "a released slot goes to the waiting reader")
        let fourth = Task { await slots.acquire() }
        slots.close()
        #expect(await fourth.value == false, "closing (the answers cannot be written) stops the reader")
        #expect(await slots.acquire() == false)
    }
}
