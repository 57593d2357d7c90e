import Foundation
import GRPCCore
import OrreryProto
import Logging
import OrreryDatabase
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// Settlement as data: which queued release or refund is due, what each gateway answer makes of it, when a contract
/// has ended; a model of the gateway's escrow driven by random events checks that every escrow ends released and
/// refunded, and the SQL that selects ended contracts is compared with the rule row by row.
@Suite("Settlement planner")
struct SettlementPlannerTests {
    typealias Task = SettlementPlanner.Task
    typealias Queued = SettlementPlanner.Queued

    // MARK: - Tables

    @Test("due: releases oldest first, then refunds of contracts with no release outstanding; a held step waits")
    func due() {
        let cases: [([Queued], [Task])] = [
            ([], []),
            // A refund queued before a later release of another contract still comes after every release.
            (
                [.init(task: .refund(contract: "a")), .init(task: .release(contract: "b", entry: 4))],
                [.release(contract: "b", entry: 4), .refund(contract: "a")]
            ),
            // A refund waits for its own contract's releases.
            (
                [.init(task: .release(contract: "a", entry: 3)), .init(task: .refund(contract: "a"))],
                [.release(contract: "a", entry: 3)]
            ),
            // A held release is not sent, and holds its contract's refund; other contracts go on.
            (
                [
                    .init(task: .release(contract: "a", entry: 3), held: true), .init(task: .refund(contract: "a")),
                    .init(task: .release(contract: "b", entry: 5)), .init(task: .refund(contract: "c")),
                ],
                [.release(contract: "b", entry: 5), .refund(contract: "c")]
            ),
            // A held refund waits; one the operator forwent the penalties of is due, without them.
            ([.init(task: .refund(contract: "a"), held: true)], []),
            ([.init(task: .refund(contract: "a", penalties: false))], [.refund(contract: "a", penalties: false)]),
            // Releases keep their order.
            (
                [.init(task: .release(contract: "a", entry: 9)), .init(task: .release(contract: "a", entry: 2))],
                [.release(contract: "a", entry: 9), .release(contract: "a", entry: 2)]
            ),
        ]
        for (queued, expected) in cases {
            #expect(SettlementPlanner.due(queued) == expected, "\(queued.map(\.task))")
        }
    }

    @Test("outcome: every gateway answer for a release and a refund, with and without proofs")
    func outcomes() {
        let release = Task.release(contract: "a", entry: 3)
        let refund = Task.refund(contract: "a")
        let codes: [RPCError.Code] = [
            .invalidArgument, .permissionDenied, .unauthenticated, .failedPrecondition, .alreadyExists, .notFound,
            .unavailable, .deadlineExceeded, .internalError, .resourceExhausted, .unknown,
        ]
        for task in [release, refund] {
            for proved in [true, false] {
                #expect(SettlementPlanner.outcome(of: task, proved: proved, .done) == .finished(note: ""))
                #expect(
                    SettlementPlanner.outcome(of: task, proved: proved, .failed(description: "down"))
                        == .retryLater(error: "down"))
                for code in codes {
                    let outcome = SettlementPlanner.outcome(of: task, proved: proved, .refused(code, message: "m"))
                    let expected: SettlementPlanner.Outcome =
                        if proved && [.invalidArgument, .permissionDenied].contains(code) {
                            // Proofs refused: neither the provider's pay nor the consumer's rest is given up silently.
                            .hold(reason: "m")
                        } else if ContractClerk.isRefusal(code) {
                            .finished(note: "m")
                        } else {
                            .retryLater(error: "\(code): m")
                        }
                    #expect(outcome == expected, "\(task) proved \(proved) \(code)")
                }
            }
        }
    }

    @Test("contractEnded: every offer state, with no grace, a grace running and a grace over")
    func contractEnded() {
        for state in OfferState.allCases {
            for grace in [nil, false, true] as [Bool?] {
                let ended = SettlementPlanner.contractEnded(state: state, graceEnded: grace)
                let expected: Bool =
                    switch state {
                    case .withdrawn, .failedToStart: true
                    case .relocated: grace != false
                    case .exited, .stopping, .movedAway: grace == true
                    case .pending, .accepted, .declined, .expired, .deploying, .running: false
                    }
                #expect(ended == expected, "\(state) grace \(String(describing: grace))")
            }
        }
    }

    // MARK: - A model of the gateway's escrows

    /// Contracts with their escrow at the gateway, the orchestrator's task queue, and the operator.
    struct Model {
        struct Contract {
            var escrow: UInt64 = 1000
            var released: UInt64 = 0
            var paidEntries: Set<UInt64> = []
            var refunded: UInt64? = nil
            var ended = false
            var breach = false
            /// Proofs the gateway refuses (a tampered log entry): receipt entries, and the breach's.
            var tampered: Set<UInt64> = []
            var breachTampered = false
            /// Receipts recorded, each worth 100.
            var receipts: [UInt64] = []
            var forgone: Set<UInt64> = []
        }
        struct Row {
            var task: Task
            var held = false
            var resolution = ""
            var done = false
        }
        var contracts: [String: Contract] = [:]
        var queue: [Row] = []
        var gatewayUp = true
        var nextEntry: UInt64 = 1
        var history: [String] = []

        func index(of task: Task) -> Int? {
            queue.firstIndex { row in
                switch (row.task, task) {
                case (.release(let a, let x), .release(let b, let y)): a == b && x == y
                case (.refund(let a, _), .refund(let b, _)): a == b
                default: false
                }
            }
        }

        /// `SettlementClerk.enqueueRelease` / `enqueueRefund`: ON CONFLICT DO NOTHING.
        mutating func enqueue(_ task: Task) {
            if index(of: task) == nil { queue.append(Row(task: task)) }
        }

        /// The gateway's answer, as `SettlementService` gives it.
        mutating func gateway(_ task: Task) -> SettlementPlanner.Answer {
            guard gatewayUp else { return .failed(description: "unavailable") }
            switch task {
            case .release(let id, let entry):
                guard var contract = contracts[id] else { return .refused(.notFound, message: "no escrow") }
                // Money before anything else: a release always comes before its contract's refund.
                #expect(contract.refunded == nil, "a release after the refund (the provider's pay lost): \(history)")
                if contract.tampered.contains(entry) { return .refused(.invalidArgument, message: "proof") }
                if contract.paidEntries.contains(entry) { return .refused(.alreadyExists, message: "paid") }
                let amount = min(100, contract.escrow - contract.released)
                contract.released += amount
                contract.paidEntries.insert(entry)
                contracts[id] = contract
                return .done
            case .refund(let id, let penalties):
                guard var contract = contracts[id] else { return .refused(.notFound, message: "no escrow") }
                if contract.refunded != nil { return .refused(.alreadyExists, message: "refunded") }
                if penalties && contract.breach && contract.breachTampered {
                    return .refused(.permissionDenied, message: "breach proof")
                }
                contract.refunded = contract.escrow - contract.released
                contracts[id] = contract
                return .done
            }
        }

        /// One `SettlementClerk.work` pass.
        mutating func clerkPass() {
            let queued = queue.filter { !$0.done }.map {
                Queued(task: $0.task, held: $0.held && $0.resolution.isEmpty)
            }
            for task in SettlementPlanner.due(queued) {
                guard let row = index(of: task) else {
                    Issue.record("due a task that is not queued: \(task)")
                    return
                }
                if case .refund(let id, _) = task {
                    // Never a refund while a release of its contract is outstanding.
                    let outstanding = queue.filter {
                        if case .release(id, _) = $0.task { return !$0.done }
                        return false
                    }
                    #expect(outstanding.isEmpty, "refund of \(id) before \(outstanding.map(\.task)): \(history)")
                }
                let proved: Bool =
                    switch task {
                    case .release: true
                    case .refund(let id, let penalties): penalties && contracts[id]?.breach == true
                    }
                let answer = gateway(task)
                history.append("\(task) → \(answer)")
                switch SettlementPlanner.outcome(of: task, proved: proved, answer) {
                case .finished:
                    queue[row].done = true
                case .hold:
                    queue[row].held = true
                    queue[row].resolution = ""
                case .retryLater:
                    return
                }
            }
        }

        /// The operator's decision on a held step (`SettlementIncidents.resolve`).
        mutating func resolve(_ row: Int, retry: Bool) {
            guard queue[row].held, queue[row].resolution.isEmpty else { return }
            switch (queue[row].task, retry) {
            case (.release(let id, let entry), true):
                contracts[id]?.tampered.remove(entry)  // the log was repaired
                queue[row].resolution = "retry"
            case (.release(let id, let entry), false):
                contracts[id]?.forgone.insert(entry)
                queue[row].resolution = "forgo"
                queue[row].done = true
            case (.refund(let id, _), true):
                contracts[id]?.breachTampered = false
                queue[row].resolution = "retry"
            case (.refund(let id, _), false):
                queue[row].resolution = "forgo"
                queue[row].task = .refund(contract: id, penalties: false)
            }
            history.append("operator: \(retry ? "retry" : "forgo") \(queue[row].task)")
        }

        /// Something happens: a contract escrowed, a receipt recorded, a contract ended, the gateway down or up, the
        /// operator decides, or the clerk makes a pass.
        mutating func step(using generator: inout some RandomNumberGenerator) {
            let open = contracts.filter { !$0.value.ended }.map(\.key).sorted()
            switch Int.random(in: 0..<10, using: &generator) {
            case 0 where contracts.count < 6:
                let id = "ctr_\(contracts.count)"
                contracts[id] = Contract(breach: Int.random(in: 0..<3, using: &generator) == 0)
                if contracts[id]?.breach == true, Int.random(in: 0..<3, using: &generator) == 0 {
                    contracts[id]?.breachTampered = true
                }
            case 1, 2:
                guard let id = open.randomElement(using: &generator) else { return }
                let entry = nextEntry
                nextEntry += 1
                contracts[id]?.receipts.append(entry)
                if Int.random(in: 0..<8, using: &generator) == 0 { contracts[id]?.tampered.insert(entry) }
                enqueue(.release(contract: id, entry: entry))
            case 3:
                guard let id = open.randomElement(using: &generator) else { return }
                contracts[id]?.ended = true
                enqueue(.refund(contract: id))
            case 4:
                gatewayUp.toggle()
            case 5:
                let held = queue.indices.filter { queue[$0].held && queue[$0].resolution.isEmpty }
                if let row = held.randomElement(using: &generator) {
                    resolve(row, retry: Bool.random(using: &generator))
                }
            default:
                clerkPass()
            }
        }
    }

    @Test(
        "random settlement histories: no refund before its contract's releases, every escrow ends paid and refunded once the gateway is up and the operator decided"
    )
    func randomHistories() {
        var generator = SystemRandomNumberGenerator()
        var incidents = 0
        var forgone = 0
        for _ in 0..<2000 {
            var model = Model()
            for _ in 0..<Int.random(in: 1..<80, using: &generator) { model.step(using: &generator) }
            // Then every contract ends, the gateway is up, the operator decides every incident; the clerk goes on.
            for id in model.contracts.keys {
                model.contracts[id]?.ended = true
                model.enqueue(.refund(contract: id))
            }
            model.gatewayUp = true
            for _ in 0..<20 {
                model.clerkPass()
                for row in model.queue.indices where model.queue[row].held && model.queue[row].resolution.isEmpty {
                    incidents += 1
                    model.resolve(row, retry: Bool.random(using: &generator))
                }
            }
            let undone = model.queue.filter { !$0.done }
            #expect(undone.isEmpty, "left undone: \(undone.map(\.task))")
            for (id, contract) in model.contracts {
                forgone += contract.forgone.count
                // Every receipt not forgone was paid, once; the rest came back to the consumer; nothing is held.
                let paid = contract.receipts.filter { !contract.forgone.contains($0) }
                #expect(contract.paidEntries == Set(paid), "\(id): \(model.history)")
                #expect(contract.released == min(UInt64(paid.count) * 100, contract.escrow))
                #expect(
                    contract.refunded.map { $0 + contract.released } == contract.escrow,
                    "\(id)'s escrow is not settled: \(contract) \(model.history)")
            }
        }
        // The histories held incidents and the operator forwent some: the holds were exercised.
        #expect(incidents > 100 && forgone > 10, "\(incidents) incidents, \(forgone) forgone")
    }

    // MARK: - The SQL against the rule

    /// A fresh database with the orchestrator's schema migrated.
    static func withOrchestratorSchema(_ body: @escaping @Sendable (PostgresClient, Logger) async throws -> Void)
        async throws
    {
        try await TestDatabase.withDatabase { database in
            try await database.withClient(schema: "orchestrator") { client in
                let logger = Logger(label: "test.settlement-planner")
                try await SchemaMigrator(schema: SchemaName("orchestrator"), migrations: OrchestratorMigrations.all)
                    .migrate(using: client, logger: logger)
                try await body(client, logger)
            }
        }
    }

    @Test(
        "the contracts OfferStore selects to terminate are exactly those SettlementPlanner.contractEnded names: every state, with no grace, one running, one over, closed or not",
        .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
    func selectionMatchesTheRule() async throws {
        try await Self.withOrchestratorSchema { client, logger in
            try await client.query(
                """
                INSERT INTO deployments (id, consumer_did, idempotency_key, state, record, revision)
                VALUES ('dep_rule', 'did:key:z6MkConsumer', 'k', 1, ''::bytea, 1)
                """, logger: logger)
            var expected: Set<String> = []
            let graces: [(String, Bool?)] = [("none", nil), ("running", false), ("over", true)]
            for state in OfferState.allCases {
                for (name, grace) in graces {
                    for closed in [false, true] {
                        let id = "off_\(state.rawValue)_\(name)_\(closed)"
                        let seconds: Double? = grace.map { $0 ? -60 : 600 }
                        let terminateAfter = seconds.map { Date().addingTimeInterval($0) }
                        try await client.query(
                            """
                            INSERT INTO offers (id, deployment_id, allocation, replica, device_did, state, record,
                                                expires_at, contract_id, contract_closed, terminate_after)
                            VALUES (\(id), 'dep_rule', 'a', 0, 'did:key:z6MkDevice', \(state.rawValue),
                                    ''::bytea, now(), \("ctr_" + id), \(closed), \(terminateAfter))
                            """, logger: logger)
                        if !closed, SettlementPlanner.contractEnded(state: state, graceEnded: grace) {
                            expected.insert(id)
                        }
                    }
                }
            }
            let selected = try await OfferStore(client: client, logger: logger).contractsToTerminate(limit: 1000)
            #expect(Set(selected.map(\.offerID)) == expected)
            #expect(selected.allSatisfy { $0.contractID == "ctr_" + $0.offerID })
            #expect(expected.count > 10)
        }
    }

    @Test(
        "incidents: a held release and a held refund are listed with their step; retry queues either again, forgo ends a release and queues the refund without penalties; a repeat answers the same, another decision is refused",
        .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
    func incidents() async throws {
        try await Self.withOrchestratorSchema { client, logger in
            for (contract, kind, entry) in [
                ("ctr_a", "release", Int64(7)), ("ctr_b", "refund", -1), ("ctr_c", "refund", -1),
            ] {
                try await client.query(
                    """
                    INSERT INTO settlement_tasks (contract_id, kind, receipt_entry, held_at, last_error)
                    VALUES (\(contract), \(kind), \(entry), now(), 'proof refused')
                    """, logger: logger)
            }
            let incidents = SettlementIncidents(client: client, logger: logger)
            let held = try await incidents.list(includeResolved: false)
            #expect(
                Set(held.map { "\($0.contractID) \($0.step) \($0.receiptEntry)" }) == [
                    "ctr_a release 7", "ctr_b refund 0", "ctr_c refund 0",
                ])
            func resolve(
                _ contract: String, refund: Bool, entry: UInt64 = 0,
                _ resolution: Orrery_Orchestrator_V1_ResolveSettlementIncidentRequest.Resolution
            ) async throws -> Orrery_Orchestrator_V1_SettlementIncident {
                try await incidents.resolve(
                    .with {
                        $0.contractID = contract
                        $0.refund = refund
                        $0.receiptEntry = entry
                        $0.resolution = resolution
                    })
            }
            #expect(try await resolve("ctr_a", refund: false, entry: 7, .forgo).resolution == "forgo")
            #expect(try await resolve("ctr_b", refund: true, .forgo).resolution == "forgo")
            #expect(try await resolve("ctr_c", refund: true, .retry).resolution == "retry")
            // The same decision again answers the same; another one is refused; an unknown one is not found.
            #expect(try await resolve("ctr_b", refund: true, .forgo).resolution == "forgo")
            await #expect(throws: RPCError.self) { try await resolve("ctr_b", refund: true, .retry) }
            do {
                _ = try await resolve("ctr_a", refund: true, .retry)
                Issue.record("resolved a refund that was never held")
            } catch let error as RPCError {
                #expect(error.code == .notFound, "\(error)")
            }
            #expect(try await incidents.list(includeResolved: false).isEmpty)
            // What the clerk reads next: the release is done; both refunds are queued again, one without penalties.
            var rows: [String: (Bool, String)] = [:]
            for try await (contract, done, resolution) in try await client.query(
                "SELECT contract_id, done_at IS NOT NULL, resolution FROM settlement_tasks", logger: logger
            ).decode((String, Bool, String).self) {
                rows[contract] = (done, resolution)
            }
            #expect(rows["ctr_a"]?.0 == true && rows["ctr_b"]?.0 == false && rows["ctr_c"]?.0 == false)
            #expect(rows["ctr_b"]?.1 == "forgo" && rows["ctr_c"]?.1 == "retry")
        }
    }
}
