import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrrerySettlementClient
import SwiftProtobuf

/// `orrery-bench settlement`: escrow + release operations per second against a real settlement gateway, each release
/// proven by a real notary's inclusion proofs, under many concurrent clients with authorisation on.
struct SettlementBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement", abstract: "Escrow + release operations per second (releases proven by the notary).")

    @Option(help: "The notary, host:port.") var notary: String
    @Option(help: "The settlement gateway, host:port (trusting the notary's DID).") var settlement: String
    @Option(help: "The operator's key file.") var key: String
    @Option(help: "Contracts to escrow and release (a third in each measurement).") var contracts = 6000
    @Option(help: "Concurrent clients.") var clients = 64
    @Option(help: "pgbench's single-row INSERT rate on the same PostgreSQL, for the report.") var pgbenchTps = 0
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/settlement.md"

    func run() async throws {
        guard let notaryTarget = ServiceAddress(notary), let gatewayTarget = ServiceAddress(settlement) else {
            throw ValidationError("not host:port")
        }
        let operatorKey = try KeyFile.read(key)
        let notaryDID = try await ServiceProbe.withClient(notaryTarget) { try DID(try await ServiceProbe.info($0).did) }
        let gatewayDID = try await ServiceProbe.withClient(gatewayTarget) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let parties = try NotaryBenchCommand.Parties(orchestrator: operatorKey)
        @Sendable func authorization(
            _ request: some SwiftProtobuf.Message, _ method: String, audience: DID, subject: DID? = nil,
            proofs: [Delegation] = []
        ) throws -> Metadata {
            var metadata = Metadata()
            metadata.addString(
                try InvocationSigner.authorization(
                    for: request, method: method, key: operatorKey, subject: subject ?? operatorKey.did,
                    audience: audience, proofs: proofs, catalog: catalog),
                forKey: "authorization")
            return metadata
        }

        // Set-up (not measured): contracts logged by the notary, a receipt each, their inclusion proofs.
        let proposals = try (0..<contracts).map { _ in try parties.proposal() }
        var entries: [String: (contract: UInt64, receipt: UInt64)] = [:]
        for batch in stride(from: 0, to: proposals.count, by: 100).map({
            Array(proposals[$0..<min($0 + 100, proposals.count)])
        }) {
            try await Self.withClient(notaryTarget) { grpc in
                let client = Orrery_Notary_V1_Notary.Client(wrapping: grpc)
                for (contract, signed) in batch {
                    let request = Orrery_Notary_V1_ProposeContractRequest.with {
                        $0.proposal = signed
                        $0.amount = contract.price.maxCost
                        $0.idempotencyKey = "propose/\(contract.id)"
                    }
                    _ = try await client.proposeContract(
                        request,
                        metadata: try authorization(
                            request, "orrery.notary.v1.Notary/ProposeContract", audience: notaryDID,
                            subject: parties.consumer.did, proofs: [parties.consumerDelegation]))
                }
                let accept = Orrery_Notary_V1_AcceptContractsRequest.with {
                    $0.acceptances = batch.map { parties.acceptance(of: $0.1, id: $0.0.id) }
                    $0.idempotencyKey = "accept/\(batch[0].0.id)"
                }
                let accepted = try await client.acceptContracts(
                    accept,
                    metadata: try authorization(accept, "orrery.notary.v1.Notary/AcceptContracts", audience: notaryDID))
                for ((contract, _), result) in zip(batch, accepted.results) {
                    let receipt = Orrery_Notary_V1_RecordReceiptRequest.with {
                        $0.receipt = SignedMessage.make(
                            type: Orrery_Notary_V1_UsageReceipt.protoMessageName,
                            payload: (try? Orrery_Notary_V1_UsageReceipt.with {
                                $0.contractID = contract.id
                                $0.sequence = 1
                                $0.wallSeconds = 1800
                            }.serializedData()) ?? Data(), signers: [parties.device])
                        $0.idempotencyKey = "receipt/\(contract.id)"
                    }
                    let recorded = try await client.recordReceipt(
                        receipt,
                        metadata: try authorization(
                            receipt, "orrery.notary.v1.Notary/RecordReceipt", audience: notaryDID))
                    entries[contract.id] = (result.record.entryIndexes.first ?? 0, recorded.entryIndex)
                }
            }
        }
        let releases = try await Self.withClient(notaryTarget) { grpc in
            let client = Orrery_Notary_V1_Notary.Client(wrapping: grpc)
            let headRequest = Orrery_Notary_V1_GetTreeHeadRequest()
            let head = try await client.getTreeHead(
                headRequest,
                metadata: try authorization(headRequest, "orrery.notary.v1.Notary/GetTreeHead", audience: notaryDID))
            var releases: [Orrery_Settlement_V1_ReleaseRequest] = []
            for (contract, _) in proposals {
                guard let indexes = entries[contract.id] else { continue }
                func proven(_ index: UInt64) async throws -> Orrery_Settlement_V1_ProvenEntry {
                    let request = Orrery_Notary_V1_GetInclusionProofRequest.with {
                        $0.index = index
                        $0.treeSize = head.head.treeSize
                    }
                    let proof = try await client.getInclusionProof(
                        request,
                        metadata: try authorization(
                            request, "orrery.notary.v1.Notary/GetInclusionProof", audience: notaryDID))
                    return .with {
                        $0.index = index
                        $0.leaf = proof.leaf
                        $0.path = proof.path
                    }
                }
                let (contractEntry, receiptEntry) = (
                    try await proven(indexes.contract), try await proven(indexes.receipt)
                )
                releases.append(
                    .with {
                        $0.contractID = contract.id
                        $0.treeHead = head
                        $0.contract = contractEntry
                        $0.receipt = receiptEntry
                        $0.idempotencyKey = "release/\(contract.id)"
                    })
            }
            return releases
        }
        let escrowDelegation = Delegation.issue(
            by: parties.consumer, to: operatorKey.did, subject: parties.consumer.did,
            command: try Command("/orrery/settlement/escrow"), expiration: Int64(Date().timeIntervalSince1970) + 7200)
        try await Self.withClient(gatewayTarget) { grpc in
            let deposit = Orrery_Settlement_V1_DepositRequest.with {
                $0.did = parties.consumer.did.string
                $0.amount = String(contracts * 100)
                $0.source = "ledger"
                $0.idempotencyKey = "bench-deposit-\(UUID().uuidString)"
            }
            _ = try await Orrery_Settlement_V1_Settlement.Client(wrapping: grpc).deposit(
                deposit,
                metadata: try authorization(deposit, "orrery.settlement.v1.Settlement/Deposit", audience: gatewayDID))
        }

        // Measured: escrow then release for each contract, spread over the clients.
        // Each operation as its client sends it: the escrow request, its signed invocation (with the consumer's
        // delegation) and the release's.
        @Sendable func signed(_ release: Orrery_Settlement_V1_ReleaseRequest) throws -> (
            Orrery_Settlement_V1_EscrowRequest, Metadata, Metadata
        ) {
            let escrow = Orrery_Settlement_V1_EscrowRequest.with {
                $0.contractID = release.contractID
                $0.consumerDid = parties.consumer.did.string
                $0.amount = 100
                $0.idempotencyKey = "escrow/\(release.contractID)"
            }
            return (
                escrow,
                try authorization(
                    escrow, "orrery.settlement.v1.Settlement/Escrow", audience: gatewayDID,
                    subject: parties.consumer.did, proofs: [escrowDelegation]),
                try authorization(release, "orrery.settlement.v1.Settlement/Release", audience: gatewayDID)
            )
        }
        // Timed three times, over three thirds of the contracts: unary calls, then the Operate stream (one per client),
        // with invocations signed before the clock started (as when the 64 clients are other machines); then the
        // stream with each client signing its invocations as it goes (on this one machine its signing shares the
        // gateway's two cores). The gateway's work — decoding, signature and chain checks, replay guard, proofs,
        // ledger — is inside the window each time.
        let third = releases.count / 3
        let (unaryPart, streamPart, signingPart) = (
            Array(releases[..<third]), Array(releases[third..<(2 * third)]), Array(releases[(2 * third)...])
        )
        let presignedUnary = try unaryPart.map(signed)
        Self.progress("measuring unary calls (\(unaryPart.count) contracts)")
        let unaryRate = try await Self.run(unaryPart, clients: clients, gateway: gatewayTarget, over: .unary) {
            position, _ in presignedUnary[position]
        }
        let presignedStream = try streamPart.map(signed)
        Self.progress("measuring the Operate stream (\(streamPart.count) contracts)")
        let rate = try await Self.run(streamPart, clients: clients, gateway: gatewayTarget, over: .stream) {
            position, _ in presignedStream[position]
        }
        Self.progress("measuring the Operate stream, signing as it goes (\(signingPart.count) contracts)")
        let signingRate = try await Self.run(signingPart, clients: clients, gateway: gatewayTarget, over: .stream) {
            _, release in try signed(release)
        }
        let lines = [
            "",
            "## Settlement",
            "",
            "| measurement | result |",
            "|---|---|",
            "| escrow + release operations over the `Operate` stream (one per client; each operation with its own capability, checked as its unary call's: signature, chain, replay guard, args; each release proven by 2 inclusion proofs under a notary-signed tree head; row locks, balanced entries, idempotency keys), \(streamPart.count) contracts, \(clients) concurrent clients, PostgreSQL fsync on; invocations signed before the clock starts (clients on other machines) | **\(Int(rate)) /s** |",
            "| the same as unary `Escrow` and `Release` calls (a capability in each call's metadata), \(unaryPart.count) other contracts | \(Int(unaryRate)) /s |",
            "| over the stream, \(signingPart.count) other contracts, each client signing its invocations as it goes on this machine (its Ed25519 signing shares the gateway's 2 cores) | \(Int(signingRate)) /s |",
            "| pgbench single-row INSERT rate on the same PostgreSQL, same run | \(pgbenchTps) /s |",
            "",
            "Goal: ≥ 2,000 escrow + release operations/s.",
        ]
        for line in lines { print(line) }
        let existing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    /// A progress line on stderr (a profiler started alongside can wait for the measurement it wants).
    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("settlement bench: \(line)\n".utf8))
    }

    /// How the clients call the gateway.
    enum Calls { case unary, stream }

    /// Escrows and releases every contract of `releases` through `clients` concurrent connections, `over` unary
    /// calls or one `Operate` stream each; `operation` gives the escrow request and both authorisations for a
    /// position. Returns operations per second.
    static func run(
        _ releases: [Orrery_Settlement_V1_ReleaseRequest], clients: Int, gateway: ServiceAddress, over calls: Calls,
        operation:
            @escaping @Sendable (Int, Orrery_Settlement_V1_ReleaseRequest) throws -> (
                Orrery_Settlement_V1_EscrowRequest, Metadata, Metadata
            )
    ) async throws -> Double {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<clients {
                let positions = Array(stride(from: index, to: releases.count, by: clients))
                group.addTask {
                    try await Self.withClient(gateway) { grpc in
                        switch calls {
                        case .unary:
                            let client = Orrery_Settlement_V1_Settlement.Client(wrapping: grpc)
                            for position in positions {
                                let release = releases[position]
                                let (escrow, escrowAuth, releaseAuth) = try operation(position, release)
                                _ = try await client.escrow(escrow, metadata: escrowAuth)
                                try check(try await client.release(release, metadata: releaseAuth), release)
                            }
                        case .stream:
                            let stream = SettlementOperations()
                            try await withThrowingTaskGroup(of: Void.self) { running in
                                running.addTask { await stream.run(on: grpc) }
                                for position in positions {
                                    let release = releases[position]
                                    let (escrow, escrowAuth, releaseAuth) = try operation(position, release)
                                    _ = try await stream.perform(.escrow(escrow), metadata: escrowAuth)
                                    try check(
                                        try await stream.perform(.release(release), metadata: releaseAuth),
                                        release)
                                }
                                stream.finish()
                                try await running.waitForAll()
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(releases.count * 2) / NotaryBenchCommand.seconds(ContinuousClock.now - start)
    }

    private static func check(
        _ paid: Orrery_Settlement_V1_JournalEntry, _ release: Orrery_Settlement_V1_ReleaseRequest
    ) throws {
        guard paid.kind == "release" else { throw ValidationError("release \(release.contractID) failed") }
    }

    static func withClient<Result: Sendable>(
        _ target: ServiceAddress, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext)
        ) { client in try await body(client) }
    }
}
