import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import Logging
import PostgresNIO
import SwiftProtobuf
import Testing

/// The settlement gateway's double-entry ledger on a real PostgreSQL: deposits, escrow under the consumer's own
/// delegation, refunds, balances and statements; the database's invariants; 64 concurrent clients.
@Suite(
    "Settlement: the double-entry ledger", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SettlementLedgerTests {
    struct Parties {
        let network: TestNetwork
        let consumer: SigningKey
        let orchestrator = SigningKey()
        let orchestratorChain: [Delegation]

        init(network: TestNetwork, consumer: SigningKey = SigningKey()) throws {
            self.network = network
            self.consumer = consumer
            orchestratorChain = [
                Delegation.issue(
                    by: network.operatorKey, to: orchestrator.did, subject: network.operatorKey.did,
                    command: try Command("/orrery/settlement"), expiration: Int64(Date().timeIntervalSince1970) + 3600)
            ]
        }

        /// consumer → orchestrator `/orrery/settlement/escrow`, amount ≤ budget.
        func escrowDelegation(budget: Int) throws -> Delegation {
            Delegation.issue(
                by: consumer, to: orchestrator.did, subject: consumer.did,
                command: try Command("/orrery/settlement/escrow"),
                policy: try Policy(try IPLDJSON.parse(#"[["<=", ".amount", \#(budget)]]"#)),
                expiration: Int64(Date().timeIntervalSince1970) + 3600)
        }

        /// A client calling as `key` with `proofs` (none: as the key's own subject), for `subject`.
        func with<Result: Sendable>(
            _ gateway: RunningService, key: SigningKey, subject: DID? = nil, proofs: [Delegation] = [],
            alsoCarrying: [Delegation] = [],
            _ body: (Orrery_Settlement_V1_Settlement.Client<HTTP2ClientTransport.Posix>) async throws -> Result
        ) async throws -> Result {
            let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
            let signer = InvocationSigner(
                key: key, subject: subject ?? proofs.first?.subject ?? key.did, audience: try DID(gateway.ready.did),
                proofs: proofs, catalog: catalog, alsoCarrying: alsoCarrying)
            return try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: .ipv4(address: "127.0.0.1", port: gateway.ready.grpcPort), transportSecurity: .plaintext),
                interceptors: [signer]
            ) { client in try await body(Orrery_Settlement_V1_Settlement.Client(wrapping: client)) }
        }

        /// operator → `key`, for one read command.
        func reader(_ key: SigningKey, _ command: String) throws -> [Delegation] {
            [
                Delegation.issue(
                    by: network.operatorKey, to: key.did, subject: network.operatorKey.did,
                    command: try Command("/orrery/settlement/\(command)"),
                    expiration: Int64(Date().timeIntervalSince1970) + 3600)
            ]
        }

        /// The operator credits the consumer `amount` (ledger mode).
        func fund(_ gateway: RunningService, amount: String, key: String = "fund") async throws {
            _ = try await asOperator(gateway) { client in
                try await client.deposit(
                    .with {
                        $0.did = consumer.did.string
                        $0.amount = amount
                        $0.source = "ledger"
                        $0.idempotencyKey = key
                    })
            }
        }

        func asOperator<Result: Sendable>(
            _ gateway: RunningService,
            _ body: (Orrery_Settlement_V1_Settlement.Client<HTTP2ClientTransport.Posix>) async throws -> Result
        ) async throws -> Result {
            try await with(gateway, key: network.operatorKey, body)
        }

        /// The orchestrator escrowing for the consumer under `delegation`, its own operator chain along.
        func escrow(
            _ gateway: RunningService, contract: String, amount: UInt64, key: String, delegation: Delegation,
            vouched: Bool = true
        ) async throws -> Orrery_Settlement_V1_JournalEntry {
            try await with(
                gateway, key: orchestrator, subject: consumer.did, proofs: [delegation],
                alsoCarrying: vouched ? orchestratorChain : []
            ) { client in
                try await client.escrow(
                    .with {
                        $0.contractID = contract
                        $0.consumerDid = consumer.did.string
                        $0.amount = amount
                        $0.idempotencyKey = key
                    })
            }
        }

        func refund(_ gateway: RunningService, contract: String, key: String) async throws
            -> Orrery_Settlement_V1_JournalEntry
        {
            try await with(gateway, key: orchestrator, proofs: orchestratorChain) { client in
                try await client.refund(
                    .with {
                        $0.contractID = contract
                        $0.idempotencyKey = key
                    })
            }
        }
    }

    static func startGateway(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, notary: RunningService? = nil
    ) async throws -> RunningService {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var environment = database.serviceEnvironment.merging(network.environment(for: "settlement-gateway")) { $1 }
        if let notary { environment["ORRERY_NOTARY_DID"] = notary.ready.did }
        return try await RunningService.start("settlement-gateway", environment: environment, directory: directory)
    }

    static func contractID() -> String {
        "ctr_" + String((0..<26).map { _ in Array("abcdefghijklmnopqrstuvwxyz234567").randomElement()! })
    }

    @Test(
        "deposit, escrow under the consumer's delegation, refund; each refusal precise; retries return the first entry"
    )
    func flow() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-flow") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try Parties(network: network)
                let gateway = try await Self.startGateway(
                    database, network, directory.appendingPathComponent("gateway"))
                defer { gateway.child.signal(SIGKILL) }
                let consumer = parties.consumer.did.string

                let deposit = try await parties.asOperator(gateway) { client in
                    try await client.deposit(
                        .with {
                            $0.did = consumer
                            $0.amount = "1000"
                            $0.source = "ledger"
                            $0.reference = "invoice 7"
                            $0.idempotencyKey = "d1"
                        })
                }
                #expect(deposit.kind == "deposit")
                #expect(Set(deposit.lines.map(\.amount)) == ["-1000", "1000"])
                await NotaryTests.expectStatus(.permissionDenied, "only the operator") {
                    _ = try await parties.with(gateway, key: parties.orchestrator, proofs: parties.orchestratorChain) {
                        try await $0.deposit(
                            .with {
                                $0.did = consumer
                                $0.amount = "5"
                                $0.source = "ledger"
                                $0.idempotencyKey = "d-x"
                            })
                    }
                }
                await NotaryTests.expectStatus(.invalidArgument, "amount") {
                    _ = try await parties.asOperator(gateway) {
                        try await $0.deposit(
                            .with {
                                $0.did = consumer
                                $0.amount = "-3"
                                $0.source = "ledger"
                                $0.idempotencyKey = "d-neg"
                            })
                    }
                }

                let delegation = try parties.escrowDelegation(budget: 700)
                let contract = Self.contractID()
                let held = try await parties.escrow(
                    gateway, contract: contract, amount: 600, key: "e1", delegation: delegation)
                #expect(held.kind == "escrow" && held.contractID == contract)
                let retried = try await parties.escrow(
                    gateway, contract: contract, amount: 600, key: "e1", delegation: delegation)
                #expect(retried.id == held.id, "a retry returns the first entry")
                await NotaryTests.expectStatus(.alreadyExists, "already escrowed") {
                    _ = try await parties.escrow(
                        gateway, contract: contract, amount: 600, key: "e2", delegation: delegation)
                }
                await NotaryTests.expectStatus(.permissionDenied, "violate") {
                    _ = try await parties.escrow(
                        gateway, contract: Self.contractID(), amount: 800, key: "e3", delegation: delegation)
                }
                await NotaryTests.expectStatus(.failedPrecondition, "does not cover") {
                    _ = try await parties.escrow(
                        gateway, contract: Self.contractID(), amount: 500, key: "e4", delegation: delegation)
                }
                await NotaryTests.expectStatus(.permissionDenied, "not an orchestrator the operator vouches for") {
                    _ = try await parties.escrow(
                        gateway, contract: Self.contractID(), amount: 10, key: "e5", delegation: delegation,
                        vouched: false)
                }
                var balance = try await parties.with(
                    gateway, key: parties.consumer, proofs: try parties.reader(parties.consumer, "get-balance")
                ) {
                    try await $0.getBalance(.with { $0.did = consumer })
                }
                #expect(balance.available == "400" && balance.escrow == "600")
                await NotaryTests.expectStatus(.permissionDenied, "may read it") {
                    let stranger = SigningKey()
                    _ = try await parties.with(
                        gateway, key: stranger, proofs: try parties.reader(stranger, "get-balance")
                    ) {
                        try await $0.getBalance(.with { $0.did = consumer })
                    }
                }

                let refunded = try await parties.refund(gateway, contract: contract, key: "r1")
                #expect(Set(refunded.lines.map(\.amount)) == ["-600", "600"])
                await NotaryTests.expectStatus(.failedPrecondition, "nothing is left") {
                    _ = try await parties.refund(gateway, contract: contract, key: "r2")
                }
                balance = try await parties.with(
                    gateway, key: parties.consumer, proofs: try parties.reader(parties.consumer, "get-balance")
                ) {
                    try await $0.getBalance(.with { $0.did = consumer })
                }
                #expect(balance.available == "1000" && balance.escrow == "0")
                let statement = try await parties.with(
                    gateway, key: parties.consumer, proofs: try parties.reader(parties.consumer, "get-statement")
                ) {
                    try await $0.getStatement(.with { $0.did = consumer })
                }
                #expect(statement.entries.map(\.kind) == ["deposit", "escrow", "refund"])
                // The same through the CLI, as the operator.
                let cli = TestEnvironment.executable("orrery")
                let connection = [
                    "--settlement", "127.0.0.1:\(gateway.ready.grpcPort)", "--key",
                    directory.appendingPathComponent("network/operator.key").path,
                ]
                let (balanceStatus, shown) = try await ChildProcess.run(
                    cli, arguments: ["balance", consumer] + connection)
                #expect(
                    balanceStatus == 0 && shown.contains("available   1000") && shown.contains("escrow      0"),
                    "\(shown)")
                let (statementStatus, listed) = try await ChildProcess.run(
                    cli, arguments: ["statement", consumer] + connection)
                #expect(statementStatus == 0, "\(listed)")
                #expect(
                    listed.contains("\tdeposit") && listed.contains("\tescrow \(contract)")
                        && listed.contains("\trefund"))
                // The same as JSON: the messages themselves.
                let (_, balanceJSON) = try await ChildProcess.run(
                    cli, arguments: ["balance", consumer, "--json"] + connection)
                #expect(try Orrery_Settlement_V1_Balance(jsonString: balanceJSON).available == "1000", "\(balanceJSON)")
                let (_, statementJSON) = try await ChildProcess.run(
                    cli, arguments: ["statement", consumer, "--json"] + connection)
                let entries = try Orrery_Settlement_V1_Statement(jsonString: statementJSON).entries
                #expect(entries.map(\.kind).contains("refund") && entries.contains { $0.contractID == contract })

                // The database itself refuses an unbalanced entry and any change to the journal.
                try await database.withClient(schema: "settlement") { client in
                    var unbalanced: (any Error)?
                    do {
                        try await client.withTransaction(logger: Logger(label: "test")) { connection in
                            let entry: PostgresQuery = """
                                INSERT INTO journal_entries (kind, invoker, idempotency_key, request_sha256)
                                VALUES ('forged', 'x', 'y', '\\x00')
                                """
                            try await connection.query(entry, logger: Logger(label: "test"))
                            // Read to the end: the refusal comes with the statement's result.
                            let lines: PostgresQuery = """
                                INSERT INTO journal_lines (entry_id, account_id, amount)
                                SELECT max(id), 'clearing/ledger', 5 FROM journal_entries
                                """
                            for try await _ in try await connection.query(lines, logger: Logger(label: "test")) {}
                        }
                    } catch {
                        unbalanced = error
                    }
                    let refusal =
                        unbalanced.map { String(reflecting: $0) } ?? "no error: the unbalanced entry was stored"
                    #expect(refusal.contains("does not balance"), "\(refusal)")
                    let changed = await #expect(throws: (any Error).self) {
                        try await client.query("UPDATE journal_lines SET amount = amount + 1")
                    }
                    #expect(String(reflecting: changed).contains("append-only"))
                }
            }
        }
    }

    @Test(
        "release pays the owner what the latest receipt makes due, less the fee, only against entries proven in the notary's log; never twice"
    )
    func release() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-release") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let contracts = try ContractParties(network: network)
                let parties = try Parties(network: network, consumer: contracts.consumer)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                let gateway = try await Self.startGateway(
                    database, network, directory.appendingPathComponent("gateway"), notary: notary)
                defer { gateway.child.signal(SIGKILL) }

                // A contract at 100 NTX an hour, at most 500; the consumer funded and its maximum held.
                let (contract, _) = try await contracts.activate(notary, contract: try contracts.contract(maxCost: 500))
                try await parties.fund(gateway, amount: "1000")
                _ = try await parties.escrow(
                    gateway, contract: contract.id, amount: 500, key: "hold",
                    delegation: try parties.escrowDelegation(budget: 500))

                func record(_ receipt: Orrery_Common_V1_Signed, _ key: String) async throws -> UInt64 {
                    try await contracts.record(receipt, key: key, notary: notary)
                }
                func proven(receipt index: UInt64) async throws -> Orrery_Settlement_V1_ReleaseRequest {
                    try await contracts.releaseRequest(contract.id, receipt: index, notary: notary)
                }
                func release(_ request: Orrery_Settlement_V1_ReleaseRequest, key: String) async throws
                    -> Orrery_Settlement_V1_JournalEntry
                {
                    var request = request
                    request.idempotencyKey = key
                    return try await parties.with(gateway, key: parties.orchestrator, proofs: parties.orchestratorChain)
                    {
                        try await $0.release(request)
                    }
                }

                // Half an hour of use: 50 due; the owner receives 49, the fee is 1.
                let first = try await proven(
                    receipt: try await record(try contracts.usage(contract.id, sequence: 1, cpu: 1800), "u1"))
                let paid = try await release(first, key: "rel-1")
                #expect(Set(paid.lines.map(\.amount)) == ["-50", "49", "1"], "\(paid.lines)")
                await NotaryTests.expectStatus(.failedPrecondition, "nothing more is due") {
                    _ = try await release(first, key: "rel-1-again")
                }
                // A proof that does not hold, and a head the notary did not sign, release nothing.
                var bent = first
                bent.receipt.path[0][0] ^= 1
                await NotaryTests.expectStatus(.invalidArgument, "not proven included") {
                    _ = try await release(bent, key: "bent")
                }
                var forged = first
                forged.treeHead.signed = SignedMessage.make(
                    type: forged.treeHead.signed.type, payload: forged.treeHead.signed.payload, signers: [SigningKey()])
                await NotaryTests.expectStatus(.invalidArgument, "tree_head") {
                    _ = try await release(forged, key: "forged")
                }

                // Completed after two hours: 200 due in all, 150 more released.
                let completion = try contracts.sign(
                    Orrery_Notary_V1_CompletionReceipt.with {
                        $0.contractID = contract.id
                        $0.sequence = 2
                        $0.usage = .with {
                            $0.contractID = contract.id
                            $0.sequence = 2
                            $0.wallSeconds = 7200
                        }
                    }, by: contracts.device)
                let last = try await proven(receipt: try await record(completion, "c2"))
                let rest = try await release(last, key: "rel-2")
                #expect(Set(rest.lines.map(\.amount)) == ["-150", "147", "3"], "\(rest.lines)")
                _ = try await parties.refund(gateway, contract: contract.id, key: "refund")
                let owner = try await parties.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = contracts.owner.did.string })
                }
                #expect(owner.receivable == "196")
                let consumer = try await parties.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = contracts.consumer.did.string })
                }
                #expect(consumer.available == "800" && consumer.escrow == "0")
            }
        }
    }

    @Test("64 concurrent clients escrowing and refunding: no negative balance, every entry balanced, nothing lost")
    func concurrency() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-concurrency") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try Parties(network: network)
                let gateway = try await Self.startGateway(
                    database, network, directory.appendingPathComponent("gateway"))
                defer { gateway.child.signal(SIGKILL) }
                try await parties.fund(gateway, amount: "5000", key: "seed")
                let delegation = try parties.escrowDelegation(budget: 1000)
                let outcomes = try await withThrowingTaskGroup(of: (held: Int, refused: Int).self) { group in
                    for client in 0..<64 {
                        group.addTask {
                            var held = 0
                            var refused = 0
                            for round in 0..<3 {
                                let contract = Self.contractID()
                                let amount = UInt64.random(in: 50...400)
                                do {
                                    _ = try await parties.escrow(
                                        gateway, contract: contract, amount: amount, key: "\(client)-\(round)",
                                        delegation: delegation)
                                    if Bool.random() {
                                        _ = try await parties.refund(
                                            gateway, contract: contract, key: "r-\(client)-\(round)")
                                    } else {
                                        held += Int(amount)
                                    }
                                } catch let error as RPCError where error.code == .failedPrecondition {
                                    refused += 1
                                }
                            }
                            return (held, refused)
                        }
                    }
                    var total = (held: 0, refused: 0)
                    for try await outcome in group {
                        total.held += outcome.held
                        total.refused += outcome.refused
                    }
                    return total
                }
                #expect(outcomes.refused > 0, "the consumer's 5,000 cannot cover 192 escrows of up to 400")
                let balance = try await parties.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = parties.consumer.did.string })
                }
                #expect(Int(balance.escrow) == outcomes.held)
                #expect(Int(balance.available)! + Int(balance.escrow)! == 5000, "nothing lost, nothing made")
                try await database.withClient(schema: "settlement") { client in
                    let negative = try await client.query(
                        "SELECT count(*) FROM accounts WHERE kind <> 'clearing' AND balance < 0")
                    for try await count in negative.decode(Int64.self) { #expect(count == 0) }
                    let total = try await client.query("SELECT coalesce(sum(balance), 0)::text FROM accounts")
                    for try await sum in total.decode(String.self) { #expect(sum == "0") }
                    let unbalanced = try await client.query(
                        "SELECT count(*) FROM (SELECT entry_id FROM journal_lines GROUP BY entry_id HAVING sum(amount) <> 0) u"
                    )
                    for try await count in unbalanced.decode(Int64.self) { #expect(count == 0) }
                }
            }
        }
    }
}

extension ContractParties {
    /// Records a signed receipt with the notary; returns its log index.
    func record(_ receipt: Orrery_Common_V1_Signed, key: String, notary: RunningService) async throws -> UInt64 {
        try await withNotary(notary) { client in
            try await client.recordReceipt(
                .with {
                    $0.receipt = receipt
                    $0.idempotencyKey = key
                })
        }.entryIndex
    }

    /// The release request for a contract (its first entry) and one receipt's entry, proven against the newest
    /// signed tree head.
    func releaseRequest(_ contract: String, receipt index: UInt64, notary: RunningService, contractEntry: UInt64 = 0)
        async throws -> Orrery_Settlement_V1_ReleaseRequest
    {
        try await withNotary(notary) { client in
            let head = try await client.getTreeHead(.init())
            func entry(_ index: UInt64) async throws -> Orrery_Settlement_V1_ProvenEntry {
                let proof = try await client.getInclusionProof(
                    .with {
                        $0.index = index
                        $0.treeSize = head.head.treeSize
                    })
                return .with {
                    $0.index = index
                    $0.leaf = proof.leaf
                    $0.path = proof.path
                }
            }
            let (contractProof, receiptProof) = (try await entry(contractEntry), try await entry(index))
            return .with {
                $0.contractID = contract
                $0.treeHead = head
                $0.contract = contractProof
                $0.receipt = receiptProof
            }
        }
    }
}
