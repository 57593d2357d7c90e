import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryLedger
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// The parties of a contract and how each signs (docs/ARCHITECTURE.md §2): the consumer delegates proposing to an orchestrator,
/// the orchestrator signs the proposal, the device (holding its owner's delegation) signs its acceptance and its
/// receipts.
struct ContractParties {
    let network: TestNetwork
    let consumer = SigningKey()
    let orchestrator = SigningKey()
    let owner = SigningKey()
    let device = SigningKey()
    let settlement = SigningKey()
    /// operator → orchestrator `/orrery/notary`: what it calls the notary with.
    let orchestratorChain: [Delegation]
    /// owner → device: the owner's consent the acceptance carries.
    let ownerToDevice: Delegation

    init(network: TestNetwork) throws {
        self.network = network
        let expiry = Int64(Date().timeIntervalSince1970) + 3600
        orchestratorChain = [
            Delegation.issue(
                by: network.operatorKey, to: orchestrator.did, subject: network.operatorKey.did,
                command: try Command("/orrery/notary"), expiration: expiry)
        ]
        ownerToDevice = Delegation.issue(
            by: owner, to: device.did, subject: owner.did, command: try Command("/orrery/device"), expiration: expiry)
    }

    /// consumer → orchestrator `/orrery/notary/propose`, amount ≤ budget.
    func consumerDelegation(budget: Int) throws -> Delegation {
        Delegation.issue(
            by: consumer, to: orchestrator.did, subject: consumer.did, command: try Command("/orrery/notary/propose"),
            policy: try Policy(try IPLDJSON.parse(#"[["<=", ".amount", \#(budget)]]"#)),
            expiration: Int64(Date().timeIntervalSince1970) + 3600)
    }

    func contract(
        _ id: String = ContractParties.newID(), maxCost: UInt64 = 500, replaces: String = "", budget: Int = 1000
    )
        throws -> Orrery_Notary_V1_Contract
    {
        let delegation = try consumerDelegation(budget: budget)
        return .with {
            $0.id = id
            $0.consumerDid = consumer.did.string
            $0.deviceDid = device.did.string
            $0.ownerDid = owner.did.string
            $0.orchestratorDid = orchestrator.did.string
            $0.deploymentID = "dep_test"
            $0.allocation = "train"
            $0.replica = 0
            $0.resources = .with {
                $0.cpuCores = 2
                $0.ramMib = 1024
            }
            $0.price = .with {
                $0.model = .perTime
                $0.hourlyPrice = 100
                $0.maxCost = maxCost
            }
            $0.maxDurationSeconds = 3600
            $0.sla = .with {
                $0.availability = 0.9
                $0.maxRelocations = 0
            }
            $0.penalties = .with { $0.relocationBps = 1000 }
            $0.settlementChain = "ledger"
            $0.replaces = replaces
            $0.proposedAt = .init(date: Date())
            $0.consumerAuthority = Data(try! UCANContainer.encode([delegation.envelope.bytes]))
        }
    }

    static func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        return "ctr_" + String((0..<26).map { _ in alphabet.randomElement()! })
    }

    func sign<Message: SwiftProtobuf.Message>(_ message: Message, by key: SigningKey) throws -> Orrery_Common_V1_Signed
    {
        SignedMessage.make(type: Message.protoMessageName, payload: try message.serializedData(), signers: [key])
    }

    func acceptance(
        of proposal: Orrery_Common_V1_Signed, id: String, by key: SigningKey? = nil, consent: Delegation? = nil
    )
        throws -> Orrery_Common_V1_Signed
    {
        try sign(
            Orrery_Notary_V1_ContractAcceptance.with {
                $0.contractID = id
                $0.contractSha256 = Data(SHA256.hash(data: proposal.payload))
                $0.deviceDid = device.did.string
                $0.acceptedAt = .init(date: Date())
                $0.deviceAuthority = Data(try! UCANContainer.encode([(consent ?? ownerToDevice).envelope.bytes]))
            }, by: key ?? device)
    }

    func usage(_ id: String, sequence: UInt64, cpu: Double = 1) throws -> Orrery_Common_V1_Signed {
        try sign(
            Orrery_Notary_V1_UsageReceipt.with {
                $0.contractID = id
                $0.sequence = sequence
                $0.cpuSeconds = cpu
                $0.wallSeconds = cpu
                $0.at = .init(date: Date())
            }, by: device)
    }

    /// A notary client calling as the orchestrator under the operator's chain; with `actingFor`, as the
    /// orchestrator acting for the consumer under the given delegation (ProposeContract).
    func withNotary<Result: Sendable>(
        _ notary: RunningService, key: SigningKey? = nil, actingFor delegation: Delegation? = nil,
        vouched: Bool = true,
        _ body: (Orrery_Notary_V1_Notary.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: key ?? orchestrator, subject: delegation?.issuer ?? network.operatorKey.did,
            audience: try DID(notary.ready.did), proofs: delegation.map { [$0] } ?? orchestratorChain,
            catalog: catalog, alsoCarrying: delegation != nil && vouched ? orchestratorChain : [])
        return try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: notary.ready.grpcPort), transportSecurity: .plaintext),
            interceptors: [signer]
        ) { client in try await body(Orrery_Notary_V1_Notary.Client(wrapping: client)) }
    }

    /// Proposes and accepts a contract; returns it with its record.
    func activate(
        _ notary: RunningService, contract: Orrery_Notary_V1_Contract? = nil
    ) async throws -> (Orrery_Notary_V1_Contract, Orrery_Notary_V1_ContractRecord) {
        let contract = try contract ?? self.contract()
        return (contract, try await activation(of: contract)(notary))
    }

    /// The proposal and acceptance of `contract`, signed once: the call it returns proposes and accepts it (again, as
    /// it was, under its idempotency keys, when called again) and returns the contract's record.
    func activation(of contract: Orrery_Notary_V1_Contract) throws
        -> @Sendable (RunningService) async throws ->
        Orrery_Notary_V1_ContractRecord
    {
        let proposal = try sign(contract, by: orchestrator)
        let acceptance = try acceptance(of: proposal, id: contract.id)
        let delegation = try Delegation(bytes: try UCANContainer.decode(Array(contract.consumerAuthority))[0])
        return { [self] notary in
            _ = try await withNotary(notary, actingFor: delegation) { client in
                try await client.proposeContract(
                    .with {
                        $0.proposal = proposal
                        $0.amount = contract.price.maxCost
                        $0.idempotencyKey = "propose-\(contract.id)"
                    })
            }
            return try await withNotary(notary) { client in
                try await client.acceptContract(
                    .with {
                        $0.acceptance = acceptance
                        $0.idempotencyKey = "accept-\(contract.id)"
                    })
            }
        }
    }
}

@Suite(
    "Contract notary: contracts, the append-only log, receipts", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct NotaryTests {
    static func expectStatus(_ code: RPCError.Code, _ containing: String, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code) (\(containing)), but the call succeeded")
        } catch let error as RPCError {
            #expect(error.code == code, "\(error)")
            #expect(error.message.contains(containing), "\(error.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test(
        "a contract is logged only with both signatures; wrong signers, missing consent, forbidden transitions, gaps and replays are refused"
    )
    func lifecycle() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-lifecycle") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"), settlement: parties.settlement.did)
                defer { notary.child.signal(SIGKILL) }

                let contract = try parties.contract()
                let proposal = try parties.sign(contract, by: parties.orchestrator)
                let delegation = try parties.consumerDelegation(budget: 1000)
                var withAuthority = contract
                withAuthority.consumerAuthority = Data(try UCANContainer.encode([delegation.envelope.bytes]))
                let signedProposal = try parties.sign(withAuthority, by: parties.orchestrator)

                // Proposing: the consumer's policy bounds the amount; the proposal must be the orchestrator's and embed
                // the chain that authorised it.
                let overBudget = try parties.contract(maxCost: 5000)
                await Self.expectStatus(.permissionDenied, "violate") {
                    _ = try await parties.withNotary(notary, actingFor: delegation) { client in
                        try await client.proposeContract(
                            .with {
                                $0.proposal = try parties.sign(overBudget, by: parties.orchestrator)
                                $0.amount = 5000
                                $0.idempotencyKey = "over"
                            })
                    }
                }
                await Self.expectStatus(.permissionDenied, "must be signed by") {
                    _ = try await parties.withNotary(notary, actingFor: delegation) { client in
                        try await client.proposeContract(
                            .with {
                                $0.proposal = try parties.sign(withAuthority, by: parties.consumer)
                                $0.amount = withAuthority.price.maxCost
                                $0.idempotencyKey = "wrong-signer"
                            })
                    }
                }
                await Self.expectStatus(.invalidArgument, "does not embed") {
                    _ = try await parties.withNotary(notary, actingFor: delegation) { client in
                        try await client.proposeContract(
                            .with {
                                $0.proposal = try parties.sign(contract, by: parties.orchestrator)  // another delegation
                                $0.amount = contract.price.maxCost
                                $0.idempotencyKey = "other-chain"
                            })
                    }
                }
                // The consumer may pick its orchestrator, but the network must know it: a proposer without a chain from the
                // operator is refused.
                await Self.expectStatus(.permissionDenied, "not an orchestrator the operator vouches for") {
                    _ = try await parties.withNotary(notary, actingFor: delegation, vouched: false) { client in
                        try await client.proposeContract(
                            .with {
                                $0.proposal = signedProposal
                                $0.amount = withAuthority.price.maxCost
                                $0.idempotencyKey = "unvouched"
                            })
                    }
                }
                let staged = try await parties.withNotary(notary, actingFor: delegation) { client in
                    try await client.proposeContract(
                        .with {
                            $0.proposal = signedProposal
                            $0.amount = withAuthority.price.maxCost
                            $0.idempotencyKey = "propose-1"
                        })
                }
                #expect(staged.state == .proposed)
                #expect(staged.entryIndexes.isEmpty, "a proposal is staged, not logged")

                // Accepting: only the contract's device, with its owner's consent, for the terms as proposed.
                let intruder = SigningKey()
                await Self.expectStatus(.permissionDenied, "must be signed by") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.acceptContract(
                            .with {
                                $0.acceptance = try parties.acceptance(
                                    of: signedProposal, id: withAuthority.id, by: intruder)
                                $0.idempotencyKey = "intruder"
                            })
                    }
                }
                let strangerConsent = Delegation.issue(
                    by: SigningKey(), to: parties.device.did, subject: nil, command: try Command("/orrery/device"),
                    expiration: Int64(Date().timeIntervalSince1970) + 600)
                await Self.expectStatus(.permissionDenied, "no valid delegation from the owner") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.acceptContract(
                            .with {
                                $0.acceptance = try parties.acceptance(
                                    of: signedProposal, id: withAuthority.id, consent: strangerConsent)
                                $0.idempotencyKey = "no-consent"
                            })
                    }
                }
                await Self.expectStatus(.failedPrecondition, "other terms") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.acceptContract(
                            .with {
                                $0.acceptance = try parties.acceptance(of: proposal, id: withAuthority.id)
                                $0.idempotencyKey = "other-terms"
                            })
                    }
                }
                let acceptance = try parties.acceptance(of: signedProposal, id: withAuthority.id)
                let active = try await parties.withNotary(notary) { client in
                    try await client.acceptContract(
                        .with {
                            $0.acceptance = acceptance
                            $0.idempotencyKey = "accept-1"
                        })
                }
                #expect(active.state == .active)
                #expect(active.entryIndexes == [0], "the contract is the first entry of its life")
                // A retry returns the first result; a second acceptance is refused.
                let retried = try await parties.withNotary(notary) { client in
                    try await client.acceptContract(
                        .with {
                            $0.acceptance = acceptance
                            $0.idempotencyKey = "accept-1"
                        })
                }
                #expect(retried == active)

                // Receipts: in sequence, from the device only; gaps and replays refused.
                let id = withAuthority.id
                let first = try await parties.withNotary(notary) { client in
                    try await client.recordReceipt(
                        .with {
                            $0.receipt = try parties.usage(id, sequence: 1)
                            $0.idempotencyKey = "r1"
                        })
                }
                #expect(first.entryIndex == 1)
                await Self.expectStatus(.failedPrecondition, "gap") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try parties.usage(id, sequence: 3)
                                $0.idempotencyKey = "r3"
                            })
                    }
                }
                await Self.expectStatus(.alreadyExists, "replay") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try parties.usage(id, sequence: 1, cpu: 9)
                                $0.idempotencyKey = "r1-again"
                            })
                    }
                }
                await Self.expectStatus(.permissionDenied, "must be signed by") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try parties.sign(
                                    Orrery_Notary_V1_UsageReceipt.with {
                                        $0.contractID = id
                                        $0.sequence = 2
                                    }, by: parties.consumer)
                                $0.idempotencyKey = "r2-forged"
                            })
                    }
                }
                // Transitions: each by the party the table names, from the states that allow it.
                let transition = { (to: Orrery_Notary_V1_ContractState, key: SigningKey) in
                    try parties.sign(
                        Orrery_Notary_V1_ContractTransition.with {
                            $0.contractID = id
                            $0.to = to
                            $0.reason = "test"
                            $0.at = .init(date: Date())
                        }, by: key)
                }
                await Self.expectStatus(.permissionDenied, "may make contract") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.transitionContract(
                            .with {
                                $0.transition = try transition(.terminated, parties.device)
                                $0.idempotencyKey = "t-device"
                            })
                    }
                }
                await Self.expectStatus(.invalidArgument, "recorded by the notary itself") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.transitionContract(
                            .with {
                                $0.transition = try transition(.completed, parties.orchestrator)
                                $0.idempotencyKey = "t-complete"
                            })
                    }
                }
                await Self.expectStatus(.failedPrecondition, "cannot become settled") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.transitionContract(
                            .with {
                                $0.transition = try transition(.settled, parties.settlement)
                                $0.idempotencyKey = "t-settle-early"
                            })
                    }
                }
                // A completion receipt completes the contract (the notary's own transition follows it in the log).
                let completion = try parties.sign(
                    Orrery_Notary_V1_CompletionReceipt.with {
                        $0.contractID = id
                        $0.sequence = 2
                        $0.exitCode = 0
                        $0.outputs = [
                            .with {
                                $0.path = "result.txt"; $0.sha256 = String(repeating: "a", count: 64)
                            }
                        ]
                    }, by: parties.device)
                let completed = try await parties.withNotary(notary) { client in
                    try await client.recordReceipt(
                        .with {
                            $0.receipt = completion
                            $0.idempotencyKey = "r2"
                        })
                }
                #expect(completed.state == .completed)
                await Self.expectStatus(.failedPrecondition, "not active") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try parties.usage(id, sequence: 3)
                                $0.idempotencyKey = "r3-late"
                            })
                    }
                }
                let settled = try await parties.withNotary(notary) { client in
                    try await client.transitionContract(
                        .with {
                            $0.transition = try transition(.settled, parties.settlement)
                            $0.idempotencyKey = "t-settle"
                        })
                }
                #expect(settled.state == .settled)
                #expect(settled.entryIndexes == [0, 1, 2, 3, 4])

                // A relocation beyond the SLA's maximum is a breach, logged with its penalty.
                let replacement = try parties.contract(replaces: id)
                let (_, relocated) = try await parties.activate(notary, contract: replacement)
                #expect(relocated.entryIndexes.count == 2, "the contract and its relocation breach")
                let leaves = try await parties.withNotary(notary) { client in
                    try await client.getEntries(.with { $0.start = 0 })
                }.leaves
                let breachEntry = try Orrery_Notary_V1_LogEntry(
                    serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaves[6]).payload)
                #expect(breachEntry.kind == .slaBreach)
                let breach = try Orrery_Notary_V1_SlaBreach(serializedBytes: breachEntry.act.payload)
                #expect(breach.kind == .relocations && breach.observed == 1 && breach.penalty == 50)
                // The contract's record names its breach (the answer that activated it, and GetContract); the
                // contract it replaced has none.
                #expect(relocated.breaches == [breach] && relocated.breachIndexes == [6], "\(relocated)")
                let replacementRecord = try await parties.withNotary(notary) {
                    try await $0.getContract(.with { $0.id = replacement.id })
                }
                #expect(replacementRecord.breaches == [breach] && replacementRecord.breachIndexes == [6])
                let replacedRecord = try await parties.withNotary(notary) {
                    try await $0.getContract(.with { $0.id = id })
                }
                #expect(replacedRecord.breaches.isEmpty && replacedRecord.breachIndexes.isEmpty)

                // Nothing in the log can be changed, even by the owner of its tables.
                try await database.withClient(schema: "notary") { client in
                    await #expect(throws: (any Error).self) {
                        try await client.query("UPDATE log_entries SET leaf = '\\x00'::bytea WHERE idx = 0")
                    }
                    await #expect(throws: (any Error).self) {
                        try await client.query("DELETE FROM tree_heads")
                    }
                    // A log whose breaches are not indexed yet, as one logged before the index existed.
                    try await client.query(
                        "ALTER TABLE contract_breaches DISABLE TRIGGER contract_breaches_append_only")
                    try await client.query("DELETE FROM contract_breaches")
                    try await client.query("UPDATE contract_breaches_backfill SET upto = 7, done = 0")
                }
                let unindexed = try await parties.withNotary(notary) {
                    try await $0.getContract(.with { $0.id = replacement.id })
                }
                #expect(unindexed.breaches.isEmpty)
                // A notary started on it indexes them.
                notary.child.signal(SIGKILL)
                let restarted = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"), settlement: parties.settlement.did)
                defer { restarted.child.signal(SIGKILL) }
                let indexed = try await eventually(timeout: .seconds(30)) {
                    try await parties.withNotary(restarted) {
                        try await $0.getContract(.with { $0.id = replacement.id })
                    }.breachIndexes == [6]
                }
                #expect(
                    indexed, "the restarted notary did not index the breach logged before: \(restarted.child.output)")
            }
        }
    }

    @Test(
        "an availability term is checked against the registry's liveness record once the contract ends: a device offline for most of it is a logged breach with its penalty"
    )
    func availabilityBreach() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-sla") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let registry = try await JobConstellation.startRegistry(database, network, directory, interval: 300)
                defer { registry.child.signal(SIGKILL) }
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"), registry: registry)
                defer { notary.child.signal(SIGKILL) }
                // The contract's device joins the registry, then falls silent: offline after 3 missed heartbeats. (A
                // registry just started gives every device a reconnect allowance first: the device joins again once that
                // judged it offline, so the contract sees it online about one of its three seconds.)
                let device = try RegistryJoinTests.DeviceClient(
                    operatorKey: network.operatorKey, owner: parties.owner, key: parties.device)
                _ = try await device.withRegistry(registry) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                #expect(
                    try await eventually(timeout: .seconds(60)) {
                        try await device.withRegistry(registry) {
                            try await $0.getDevice(.with { $0.did = device.key.did.string }).status
                        } == .offline
                    }, "the silent device was never judged offline")
                _ = try await device.withRegistry(registry) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                var terms = try parties.contract(maxCost: 1000)
                terms.sla.availability = 0.9
                terms.penalties.availabilityBps = 2500
                let (contract, _) = try await parties.activate(notary, contract: terms)
                try await Task.sleep(for: .seconds(3))
                let completion = try parties.sign(
                    Orrery_Notary_V1_CompletionReceipt.with {
                        $0.contractID = contract.id
                        $0.sequence = 1
                    }, by: parties.device)
                _ = try await parties.withNotary(notary) { client in
                    try await client.recordReceipt(
                        .with {
                            $0.receipt = completion
                            $0.idempotencyKey = "done"
                        })
                }
                // The checker finds the shortfall and logs it.
                var record = Orrery_Notary_V1_ContractRecord()
                let deadline = ContinuousClock.now + .seconds(15)
                while ContinuousClock.now < deadline {
                    record = try await parties.withNotary(notary) {
                        try await $0.getContract(.with { $0.id = contract.id })
                    }
                    if record.entryIndexes.count == 4 { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(record.entryIndexes.count == 4, "contract, completion receipt, completed, breach")
                let leaves = try await parties.withNotary(notary) { try await $0.getEntries(.with { $0.start = 0 }) }
                    .leaves
                let entry = try Orrery_Notary_V1_LogEntry(
                    serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaves[Int(record.entryIndexes[3])])
                        .payload)
                #expect(entry.kind == .slaBreach)
                #expect(try SignedMessage.verify(entry.act).map(\.string) == [notary.ready.did])
                let breach = try Orrery_Notary_V1_SlaBreach(serializedBytes: entry.act.payload)
                #expect(breach.kind == .availability && breach.required == 0.9)
                #expect(breach.observed < 0.6, "online for about one of three seconds: \(breach.observed)")
                #expect(breach.penalty == 250)
                // Checked once: no second breach.
                try await Task.sleep(for: .seconds(3))
                let later = try await parties.withNotary(notary) {
                    try await $0.getContract(.with { $0.id = contract.id })
                }
                #expect(later.entryIndexes.count == 4)
                #expect(later.breaches == [breach] && later.breachIndexes == [record.entryIndexes[3]], "\(later)")
                // `orrery contract show` names it.
                let (showStatus, shown) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: [
                        "contract", "show", contract.id, "--notary", "127.0.0.1:\(notary.ready.grpcPort)", "--key",
                        directory.appendingPathComponent("network/operator.key").path, "--witness",
                        directory.appendingPathComponent("witness.pb").path,
                    ])
                #expect(
                    showStatus == 0 && shown.contains("SLA           SLA breach: availability ")
                        && shown.contains(" < 90.00% (penalty 250 NTX)"), "\(shown)")
            }
        }
    }

    @Test("AcceptContracts checks and appends each acceptance as AcceptContract does, each with its own result")
    func acceptMany() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-batch") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                var proposals: [(Orrery_Notary_V1_Contract, Orrery_Common_V1_Signed)] = []
                for _ in 0..<3 {
                    let contract = try parties.contract()
                    let proposal = try parties.sign(contract, by: parties.orchestrator)
                    let delegation = try Delegation(
                        bytes: try UCANContainer.decode(Array(contract.consumerAuthority))[0])
                    _ = try await parties.withNotary(notary, actingFor: delegation) { client in
                        try await client.proposeContract(
                            .with {
                                $0.proposal = proposal
                                $0.amount = contract.price.maxCost
                                $0.idempotencyKey = "p-\(contract.id)"
                            })
                    }
                    proposals.append((contract, proposal))
                }
                let acceptances = [
                    try parties.acceptance(of: proposals[0].1, id: proposals[0].0.id),
                    try parties.acceptance(of: proposals[1].1, id: proposals[1].0.id, by: SigningKey()),  // not the device
                    try parties.acceptance(of: proposals[2].1, id: proposals[2].0.id),
                ]
                let request = Orrery_Notary_V1_AcceptContractsRequest.with {
                    $0.acceptances = acceptances
                    $0.idempotencyKey = "batch"
                }
                let response = try await parties.withNotary(notary) { try await $0.acceptContracts(request) }
                #expect(response.results.map(\.code) == [0, Int32(RPCError.Code.permissionDenied.rawValue), 0])
                #expect(response.results[1].message.contains("must be signed by"))
                #expect(response.results[0].record.state == .active && response.results[2].record.state == .active)
                #expect(
                    Set(response.results[0].record.entryIndexes + response.results[2].record.entryIndexes) == [0, 1])
                // A retry changes nothing and answers the same.
                let retried = try await parties.withNotary(notary) {
                    try await $0.acceptContracts(
                        .with {
                            $0.acceptances = acceptances
                            $0.idempotencyKey = "batch-retry"
                        })
                }
                #expect(retried.results.map(\.code) == response.results.map(\.code))
                #expect(try await parties.withNotary(notary) { try await $0.getTreeHead(.init()) }.head.treeSize == 2)
                await Self.expectStatus(.invalidArgument, "1…100") {
                    _ = try await parties.withNotary(notary) {
                        try await $0.acceptContracts(.with { $0.idempotencyKey = "empty" })
                    }
                }
            }
        }
    }

    @Test(
        "one exec session record sent 8 times at once under one idempotency key (a device's resend racing the first) is logged once, every call answered with its entry; the key with another record is refused"
    )
    func execRecordOnce() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-exec-once") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                let (contract, record) = try await parties.activate(notary)
                func session(exitCode: Int32) throws -> Orrery_Common_V1_Signed {
                    try parties.sign(
                        Orrery_Notary_V1_ExecSession.with {
                            $0.contractID = contract.id
                            $0.sessionID = "exe_" + String(repeating: "ab", count: 16)
                            $0.commandSha256 = String(repeating: "0", count: 64)
                            $0.invocationCid = parties.ownerToDevice.cid.description
                            $0.invokerDid = parties.consumer.did.string
                            $0.startedAt = .init(seconds: 1_800_000_000)
                            $0.endedAt = .init(seconds: 1_800_000_010)
                            $0.exitCode = exitCode
                        }, by: parties.device)
                }
                let signed = try session(exitCode: 0)
                let indexes = try await withThrowingTaskGroup(of: UInt64.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            try await parties.withNotary(notary) { client in
                                try await client.recordReceipt(
                                    .with {
                                        $0.receipt = signed
                                        $0.idempotencyKey = "exec-once"
                                    }
                                ).entryIndex
                            }
                        }
                    }
                    return try await group.reduce(into: [UInt64]()) { $0.append($1) }
                }
                #expect(Set(indexes).count == 1, "every call answered with the one entry: \(indexes)")
                let size = try await parties.withNotary(notary) { try await $0.getTreeHead(.init()) }.head.treeSize
                #expect(size == UInt64(record.entryIndexes.count) + 1, "logged once: the tree has \(size) entries")
                await Self.expectStatus(.failedPrecondition, "already used for a different request") {
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try session(exitCode: 1)
                                $0.idempotencyKey = "exec-once"
                            })
                    }
                }
            }
        }
    }

    @Test("inclusion and consistency proofs from the notary match an independent RFC 6962 implementation in Python")
    func proofsAgainstPython() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-proofs") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                var heads: [Orrery_Notary_V1_SignedTreeHead] = []
                for round in 0..<7 {
                    for _ in 0...round { _ = try await parties.activate(notary) }
                    heads.append(try await parties.withNotary(notary) { try await $0.getTreeHead(.init()) })
                }
                let size = heads.last!.head.treeSize
                #expect(size == 28)
                let leaves = try await parties.withNotary(notary) { client in
                    try await client.getEntries(.with { $0.start = 0 })
                }.leaves
                #expect(leaves.count == 28)
                var job: [String: Any] = ["leaves": leaves.map { Self.hex($0) }]
                var roots: [[String: Any]] = []
                var inclusions: [[String: Any]] = []
                var consistencies: [[String: Any]] = []
                try await parties.withNotary(notary) { client in
                    for head in heads {
                        let parsed = try TreeHeadWitness.verify(head)
                        roots.append(["size": parsed.treeSize, "root": Self.hex(parsed.rootHash)])
                        for index in stride(from: 0, to: parsed.treeSize, by: 3) {
                            let proof = try await client.getInclusionProof(
                                .with {
                                    $0.index = index
                                    $0.treeSize = parsed.treeSize
                                })
                            #expect(proof.treeHead.head.treeSize == parsed.treeSize)
                            #expect(
                                MerkleTree.verifyInclusion(
                                    leafHash: MerkleTree.leafHash(proof.leaf), index: index, size: parsed.treeSize,
                                    proof: proof.path.map { [UInt8]($0) }, root: [UInt8](parsed.rootHash)))
                            inclusions.append([
                                "index": index, "size": parsed.treeSize, "path": proof.path.map { Self.hex($0) },
                            ])
                        }
                        for old in heads.map(\.head.treeSize) where old <= parsed.treeSize {
                            let proof = try await client.getConsistencyProof(
                                .with {
                                    $0.oldSize = old
                                    $0.newSize = parsed.treeSize
                                })
                            consistencies.append([
                                "old": old, "new": parsed.treeSize, "path": proof.path.map { Self.hex($0) },
                            ])
                        }
                    }
                }
                job["roots"] = roots
                job["inclusion"] = inclusions
                job["consistency"] = consistencies
                let file = directory.appendingPathComponent("proofs.json")
                try JSONSerialization.data(withJSONObject: job).write(to: file)
                let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/rfc6962_check.py").path
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.python, arguments: [script, file.path])
                #expect(status == 0, "\(output)")
                #expect(output.split(separator: "\n").count == roots.count + inclusions.count + consistencies.count)
                #expect(!output.contains("false"), "\(output)")
            }
        }
    }

    @Test("concurrent appends from 8 clients through two notary replicas make one gap-free, fork-free log")
    func concurrentReplicas() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-replicas") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let parties = try ContractParties(network: network)
                let first = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("a"))
                defer { first.child.signal(SIGKILL) }
                let second = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("b"))
                defer { second.child.signal(SIGKILL) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for client in 0..<8 {
                        group.addTask {
                            for _ in 0..<10 { _ = try await parties.activate(client % 2 == 0 ? first : second) }
                        }
                    }
                    try await group.waitForAll()
                }
                let head = try await parties.withNotary(first) { try await $0.getTreeHead(.init()) }
                #expect(head.head.treeSize == 80)
                let leaves = try await parties.withNotary(second) { client in
                    try await client.getEntries(.with { $0.start = 0 })
                }.leaves
                for (position, leaf) in leaves.enumerated() {
                    let entry = try Orrery_Notary_V1_LogEntry(
                        serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaf).payload)
                    #expect(entry.index == UInt64(position))
                }
                #expect(
                    MerkleTree.root(leafHashes: leaves.map { MerkleTree.leafHash($0) }) == [UInt8](head.head.rootHash))
                // Every batch's head is consistent with the final one: no replica forked the log.
                try await database.withClient(schema: "notary") { client in
                    let rows = try await client.query("SELECT signed FROM tree_heads ORDER BY tree_size")
                    for try await signed in rows.decode(Data.self) {
                        let earlier = try TreeHeadWitness.verify(
                            .with { $0.signed = try Orrery_Common_V1_Signed(serializedBytes: signed) })
                        let proof = try await parties.withNotary(first) { client in
                            try await client.getConsistencyProof(
                                .with {
                                    $0.oldSize = earlier.treeSize
                                    $0.newSize = 80
                                })
                        }
                        #expect(
                            MerkleTree.verifyConsistency(
                                oldSize: earlier.treeSize, oldRoot: [UInt8](earlier.rootHash), newSize: 80,
                                newRoot: [UInt8](head.head.rootHash), proof: proof.path.map { [UInt8]($0) }))
                    }
                }
            }
        }
    }

    @Test(
        "orrery ledger verify names the entry whose stored bytes changed; contract proof proves inclusion; a client catches a rewritten log"
    )
    func tamperedLog() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("notary-tamper") { directory in
                let credentials = directory.appendingPathComponent("network")
                let network = try TestNetwork(directory: credentials)
                let parties = try ContractParties(network: network)
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                var ids: [String] = []
                for _ in 0..<4 {
                    let (contract, _) = try await parties.activate(notary)
                    ids.append(contract.id)
                    _ = try await parties.withNotary(notary) { client in
                        try await client.recordReceipt(
                            .with {
                                $0.receipt = try parties.usage(contract.id, sequence: 1)
                                $0.idempotencyKey = "r-\(contract.id)"
                            })
                    }
                }
                let cli = TestEnvironment.executable("orrery")
                let witness = directory.appendingPathComponent("witness.pb").path
                let connection = [
                    "--notary", "127.0.0.1:\(notary.ready.grpcPort)", "--key",
                    credentials.appendingPathComponent("operator.key").path, "--witness", witness,
                ]
                let (status, output) = try await ChildProcess.run(cli, arguments: ["ledger", "verify"] + connection)
                #expect(status == 0, "\(output)")
                #expect(output.contains("✔ 8 entries verified"), "\(output)")
                // --json: one object, the same verdict and exit status.
                @Sendable func verdict(_ output: String) -> [String: Any] {
                    (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
                }
                let (jsonStatus, jsonOutput) = try await ChildProcess.run(
                    cli, arguments: ["ledger", "verify", "--json"] + connection)
                let verdictJSON = verdict(jsonOutput)
                #expect(jsonStatus == 0 && verdictJSON["verified"] as? Bool == true, "\(jsonOutput)")
                #expect(verdictJSON["entries"] as? Int == 8 && verdictJSON["tree_size"] as? Int == 8, "\(jsonOutput)")
                #expect(
                    verdictJSON["problem"] == nil && (verdictJSON["kinds"] as? [String: Int])?.isEmpty == false,
                    "\(jsonOutput)")
                let (proofStatus, proved) = try await ChildProcess.run(
                    cli, arguments: ["contract", "proof", ids[1]] + connection)
                #expect(proofStatus == 0 && proved.contains("✔ entry 2 (contract) is included"), "\(proved)")
                let (proofJSONStatus, provedJSON) = try await ChildProcess.run(
                    cli, arguments: ["contract", "proof", "--json", ids[1]] + connection)
                let proofVerdict = verdict(provedJSON)
                let provedEntries = proofVerdict["entries"] as? [[String: Any]] ?? []
                #expect(proofJSONStatus == 0 && proofVerdict["verified"] as? Bool == true, "\(provedJSON)")
                #expect(proofVerdict["contract_id"] as? String == ids[1] && proofVerdict["tree_size"] as? Int == 8)
                #expect(
                    provedEntries.map { $0["index"] as? Int } == [2, 3]
                        && provedEntries.first?["kind"] as? String == "contract"
                        && provedEntries.allSatisfy { $0["included"] as? Bool == true }, "\(provedJSON)")
                let (showStatus, shown) = try await ChildProcess.run(
                    cli, arguments: ["contract", "show", ids[1]] + connection)
                #expect(showStatus == 0 && shown.contains("entries       2, 3"), "\(shown)")

                // One byte of one stored row at a time, changed behind the notary's back by the tables' owner.
                try await database.withClient(schema: "notary") { client in
                    try await client.query("ALTER TABLE log_entries DISABLE TRIGGER log_entries_append_only")
                    let rows = try await client.query("SELECT idx, length(leaf) FROM log_entries ORDER BY idx")
                    var lengths: [(Int64, Int32)] = []
                    for try await row in rows.decode((Int64, Int32).self) { lengths.append(row) }
                    for (index, length) in lengths {
                        for position in Set([0, Int32(index * 37) % length, length / 2, length - 1]) {
                            let flip: PostgresQuery =
                                "UPDATE log_entries SET leaf = set_byte(leaf, \(position), get_byte(leaf, \(position)) # 1) WHERE idx = \(index)"
                            try await client.query(flip)
                            let (status, output) = try await ChildProcess.run(
                                cli, arguments: ["ledger", "verify"] + connection)
                            #expect(status == 1, "byte \(position) of entry \(index): \(output)")
                            #expect(
                                output.contains("entry \(index) is tampered"),
                                "byte \(position) of entry \(index): \(output)")
                            try await client.query(flip)  // restored
                        }
                    }
                    try await client.query("ALTER TABLE log_entries ENABLE TRIGGER log_entries_append_only")
                    // The newest tree head's bytes.
                    try await client.query("ALTER TABLE tree_heads DISABLE TRIGGER tree_heads_append_only")
                    let flip: PostgresQuery = """
                        UPDATE tree_heads SET signed = set_byte(signed, length(signed) - 5, get_byte(signed, length(signed) - 5) # 1)
                        WHERE tree_size = (SELECT max(tree_size) FROM tree_heads)
                        """
                    try await client.query(flip)
                    let (status, output) = try await ChildProcess.run(
                        cli, arguments: ["ledger", "verify"] + connection)
                    #expect(status == 1 && output.contains("tree head's signature does not verify"), "\(output)")
                    try await client.query(flip)
                    try await client.query("ALTER TABLE tree_heads ENABLE TRIGGER tree_heads_append_only")
                    // One stored proof node (the entries all intact): the proofs the notary serves through it fail.
                    try await client.query("ALTER TABLE log_nodes DISABLE TRIGGER log_nodes_append_only")
                    let node: PostgresQuery = """
                        UPDATE log_nodes SET hash = set_byte(hash, 7, get_byte(hash, 7) # 1) WHERE level = 1 AND position = 0
                        """
                    try await client.query(node)
                    let (nodeStatus, nodeOutput) = try await ChildProcess.run(
                        cli, arguments: ["ledger", "verify"] + connection)
                    #expect(
                        nodeStatus == 1 && nodeOutput.contains("a stored proof node is corrupted"), "\(nodeOutput)")
                    let (nodeJSONStatus, nodeJSON) = try await ChildProcess.run(
                        cli, arguments: ["ledger", "verify", "--json"] + connection)
                    let refused = verdict(nodeJSON)
                    let problem = refused["problem"] as? [String: Any]
                    #expect(nodeJSONStatus == 1 && refused["verified"] as? Bool == false, "\(nodeJSON)")
                    #expect(
                        (problem?["reason"] as? String)?.contains("a stored proof node is corrupted") == true
                            && problem?["entry"] is Int, "\(nodeJSON)")
                    try await client.query(node)
                    try await client.query("ALTER TABLE log_nodes ENABLE TRIGGER log_nodes_append_only")
                }
                let (again, verified) = try await ChildProcess.run(cli, arguments: ["ledger", "verify"] + connection)
                #expect(again == 0, "restored: \(verified)")

                // Without --witness, the CLI keeps one witness per notary under $XDG_STATE_HOME.
                let state = ["XDG_STATE_HOME": directory.appendingPathComponent("state").path]
                let operatorOnly = [
                    "--notary", "127.0.0.1:\(notary.ready.grpcPort)", "--key",
                    credentials.appendingPathComponent("operator.key").path,
                ]
                let (stateStatus, stateOutput) = try await ChildProcess.run(
                    cli, arguments: ["ledger", "verify"] + operatorOnly, environment: state)
                #expect(stateStatus == 0, "\(stateOutput)")
                let witnesses = directory.appendingPathComponent("state/orrery/notary-tree-heads")
                let notaryFile = notary.ready.did.replacingOccurrences(of: ":", with: "_") + ".pb"
                #expect(try FileManager.default.contentsOfDirectory(atPath: witnesses.path) == [notaryFile])

                // The same notary key over another history (a notary that rewrote its log): the client that saw the
                // first history refuses the second, though each is internally coherent.
                try await TestDatabase.withDatabase { other in
                    let forged = try await JobConstellation.startNotary(
                        other, network, directory.appendingPathComponent("forged"))
                    defer { forged.child.signal(SIGKILL) }
                    for _ in 0..<10 { _ = try await parties.activate(forged) }  // longer than the 8 entries seen
                    let rewritten = [
                        "--notary", "127.0.0.1:\(forged.ready.grpcPort)", "--key",
                        credentials.appendingPathComponent("operator.key").path,
                    ]
                    let (fresh, freshOutput) = try await ChildProcess.run(
                        cli,
                        arguments: ["ledger", "verify", "--witness", directory.appendingPathComponent("new.pb").path]
                            + rewritten)
                    #expect(fresh == 0, "a client new to the forged log finds it coherent: \(freshOutput)")
                    let (status, output) = try await ChildProcess.run(
                        cli, arguments: ["ledger", "verify", "--witness", witness] + rewritten)
                    #expect(
                        status == 1 && output.contains("is not an extension of the 8 entries seen before"), "\(output)")
                    // The default witness of that notary's DID catches it as well.
                    let (stateRewritten, stateRewrittenOutput) = try await ChildProcess.run(
                        cli, arguments: ["ledger", "verify"] + rewritten, environment: state)
                    #expect(
                        stateRewritten == 1 && stateRewrittenOutput.contains("is not an extension of the 8 entries"),
                        "\(stateRewrittenOutput)")
                }
                // Another network's notary (another DID) is verified on its own: the first one's witness is no obstacle.
                try await TestDatabase.withDatabase { other in
                    let otherNetwork = try TestNetwork(directory: directory.appendingPathComponent("other-network"))
                    let otherNotary = try await JobConstellation.startNotary(
                        other, otherNetwork, directory.appendingPathComponent("other-notary"))
                    defer { otherNotary.child.signal(SIGKILL) }
                    _ = try await ContractParties(network: otherNetwork).activate(otherNotary)
                    let (otherStatus, otherOutput) = try await ChildProcess.run(
                        cli,
                        arguments: [
                            "ledger", "verify", "--notary", "127.0.0.1:\(otherNotary.ready.grpcPort)", "--key",
                            directory.appendingPathComponent("other-network/operator.key").path,
                        ], environment: state)
                    #expect(otherStatus == 0, "\(otherOutput)")
                    #expect(try FileManager.default.contentsOfDirectory(atPath: witnesses.path).count == 2)
                }
            }
        }
    }

    static func hex(_ data: some Sequence<UInt8>) -> String { data.map { String(format: "%02x", $0) }.joined() }
}
