import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Synchronization
import OrreryDatabase
import Testing

/// The ledger's properties while the gateway is killed (-9) at random points under 64 concurrent clients that retry
/// with their idempotency keys: every entry sums to zero, no balance goes negative, nothing is released twice, no
/// acknowledged deposit is lost, nothing is made or lost in total.
@Suite(
    "Settlement under kill -9", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SettlementCrashTests {
    /// A value the clients and the killer share.
    final class Box<Value: Sendable>: Sendable {
        private let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
        func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
    }

    /// The gateway currently running (replaced after each kill).
    final class Current: Sendable {
        let service: Mutex<RunningService>
        init(_ service: RunningService) { self.service = Mutex(service) }
        var value: RunningService { service.withLock { $0 } }
    }

    @Test(
        "64 retrying clients while the gateway is killed -9 five times: balanced, never negative, no double release, no lost deposit"
    )
    func killNine() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("settlement-kill") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let contracts = try ContractParties(network: network)
                let parties = try SettlementLedgerTests.Parties(network: network, consumer: contracts.consumer)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                let start: @Sendable (Int) async throws -> RunningService = { generation in
                    try await SettlementLedgerTests.startGateway(
                        database, network, directory.appendingPathComponent("gateway-\(generation)"), notary: notary)
                }
                let current = Current(try await start(0))
                defer { current.value.child.signal(SIGKILL) }
                let consumer = contracts.consumer.did.string
                let seed = 32 * 500
                _ = try await parties.asOperator(current.value) { client in
                    try await client.deposit(
                        .with {
                            $0.did = consumer
                            $0.amount = String(seed)
                            $0.source = "ledger"
                            $0.idempotencyKey = "seed"
                        })
                }
                // 32 contracts at 100 an hour (at most 500), each completed after two hours: 200 due.
                var releases: [Orrery_Settlement_V1_ReleaseRequest] = []
                for index in 0..<32 {
                    let (contract, record) = try await contracts.activate(
                        notary, contract: try contracts.contract(maxCost: 500))
                    let completion = try contracts.sign(
                        Orrery_Notary_V1_CompletionReceipt.with {
                            $0.contractID = contract.id
                            $0.sequence = 1
                            $0.usage = .with {
                                $0.contractID = contract.id
                                $0.sequence = 1
                                $0.wallSeconds = 7200
                            }
                        }, by: contracts.device)
                    let entry = try await contracts.record(completion, key: "c-\(index)", notary: notary)
                    releases.append(
                        try await contracts.releaseRequest(
                            contract.id, receipt: entry, notary: notary, contractEntry: record.entryIndexes[0]))
                }
                let delegation = try parties.escrowDelegation(budget: 500)
                let prepared = releases
                let rounds = Box(0)

                /// Retries `body` (same idempotency key inside) through crashes until the gateway answers.
                func retrying<T: Sendable>(_ body: (RunningService) async throws -> T) async throws -> T {
                    for _ in 0..<600 {
                        do {
                            return try await body(current.value)
                        } catch let error as RPCError
                            where [.unavailable, .unknown, .cancelled, .deadlineExceeded, .internalError].contains(
                                error.code)
                        {
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }
                    throw CheckFailure(text: "the gateway did not come back")
                }

                let killing = Box(true)
                let killer = Task {
                    defer { killing.withLock { $0 = false } }
                    for generation in 1...5 {
                        try await Task.sleep(for: .milliseconds(Int.random(in: 300...900)))
                        let old = current.value
                        old.child.signal(SIGKILL)
                        _ = await old.child.waitForExit()
                        let replacement = try await start(generation)
                        current.service.withLock { $0 = replacement }
                    }
                }
                let deposited = try await withThrowingTaskGroup(of: Int.self) { group in
                    for client in 0..<64 {
                        group.addTask {
                            var acknowledged = 0
                            if client < 32 {
                                // Deposits until the last restart, so that kills land in the middle of them.
                                var round = 0
                                while killing.withLock({ $0 }) {
                                    round += 1
                                    let amount = Int.random(in: 1...100)
                                    _ = try await retrying { gateway in
                                        try await parties.asOperator(gateway) {
                                            try await $0.deposit(
                                                .with {
                                                    $0.did = consumer
                                                    $0.amount = String(amount)
                                                    $0.source = "ledger"
                                                    $0.idempotencyKey = "dep-\(client)-\(round)"
                                                })
                                        }
                                    }
                                    acknowledged += amount
                                    rounds.withLock { $0 += 1 }
                                    try await Task.sleep(for: .milliseconds(20))
                                }
                            } else {
                                var release = prepared[client - 32]
                                release.idempotencyKey = "rel-\(client)"
                                let contract = release.contractID
                                // Spread over the kills: escrow, release and refund each after a random pause.
                                try await Task.sleep(for: .milliseconds(Int.random(in: 0...1500)))
                                _ = try await retrying { gateway in
                                    try await parties.escrow(
                                        gateway, contract: contract, amount: 500, key: "esc-\(client)",
                                        delegation: delegation)
                                }
                                try await Task.sleep(for: .milliseconds(Int.random(in: 0...1500)))
                                _ = try await retrying { gateway in
                                    try await parties.with(
                                        gateway, key: parties.orchestrator, proofs: parties.orchestratorChain
                                    ) { try await $0.release(release) }
                                }
                                try await Task.sleep(for: .milliseconds(Int.random(in: 0...1500)))
                                _ = try await retrying { gateway in
                                    try await parties.refund(gateway, contract: contract, key: "ref-\(client)")
                                }
                            }
                            return acknowledged
                        }
                    }
                    return try await group.reduce(0, +)
                }
                try await killer.value

                let owner = contracts.owner.did.string
                let balances = try await parties.asOperator(current.value) { client in
                    (
                        try await client.getBalance(.with { $0.did = consumer }),
                        try await client.getBalance(.with { $0.did = owner })
                    )
                }
                // Each contract: 200 released (196 to the owner, 4 fee), 300 refunded.
                #expect(balances.0.escrow == "0")
                #expect(Int(balances.0.available) == seed + deposited - 32 * 200)
                #expect(balances.1.receivable == String(32 * 196))
                try await database.withClient(schema: "settlement") { client in
                    let negative = try await client.query(
                        "SELECT count(*) FROM accounts WHERE kind <> 'clearing' AND balance < 0"
                    ).decode(Int64.self).collected()
                    #expect(negative == [0])
                    let sum = try await client.query("SELECT coalesce(sum(balance), 0)::text FROM accounts")
                        .decode(String.self).collected()
                    #expect(sum == ["0"])
                    let unbalanced = try await client.query(
                        "SELECT count(*) FROM (SELECT entry_id FROM journal_lines GROUP BY entry_id HAVING sum(amount) <> 0) u"
                    ).decode(Int64.self).collected()
                    #expect(unbalanced == [0])
                    let perContract = try await client.query(
                        """
                        SELECT kind, count(*) FROM journal_entries WHERE contract_id IS NOT NULL
                        GROUP BY kind, contract_id HAVING count(*) <> 1
                        """
                    ).decode((String, Int64).self).collected()
                    #expect(perContract.isEmpty, "one escrow, one release and one refund per contract: \(perContract)")
                    let deposits = try await client.query(
                        "SELECT count(*) FROM journal_entries WHERE kind = 'deposit' AND idempotency_key LIKE 'dep-%'"
                    ).decode(Int64.self).collected()
                    #expect(deposits == [Int64(rounds.withLock { $0 })], "every acknowledged deposit, once")
                }
                // The journal's chain survived the kills: every entry sealed once, every checkpoint signed over it, every
                // release proven by its kept request.
                let arguments = [
                    "settlement", "verify", "--settlement", "127.0.0.1:\(current.value.ready.grpcPort)", "--key",
                    directory.appendingPathComponent("network/operator.key").path, "--witness",
                    directory.appendingPathComponent("witness").path,
                ]
                var (status, output) = (Int32(-1), "")
                let sealed = ContinuousClock.now + .seconds(20)
                repeat {
                    try await Task.sleep(for: .milliseconds(500))
                    (status, output) = try await ChildProcess.run(
                        TestEnvironment.executable("orrery"), arguments: arguments)
                } while status == 0 && output.contains("not sealed yet") && ContinuousClock.now < sealed
                #expect(status == 0 && output.contains("releases: 32 proven"), "\(output)")
            }
        }
    }
}
