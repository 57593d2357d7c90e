import ArgumentParser
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryLedger
import OrreryProto
import OrreryRuntime
import SwiftProtobuf

/// `orrery-bench notary`: contract appends per second against a real notary (PostgreSQL fsync on, every signature
/// checked), inclusion-proof latency, and — offline — the tree-recompute and signature-check rates of an audit.
struct NotaryBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notary", abstract: "Contract appends/s, inclusion-proof latency, audit rates.")

    @Option(help: "The notary, host:port.") var notary: String
    @Option(help: "The operator's key file (calls as the orchestrator would).") var key: String
    @Option(help: "Contracts to append.") var contracts = 4000
    @Option(help: "Concurrent clients.") var clients = 64
    @Option(help: "Entries for the offline tree-recompute rate.") var treeEntries = 1_000_000
    @Option(help: "Signed entries for the offline signature-check rate.") var signatures = 50_000
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/notary.md"

    func run() async throws {
        guard let target = ServiceAddress(notary) else { throw ValidationError("not host:port") }
        let operatorKey = try KeyFile.read(key)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let parties = try Parties(orchestrator: operatorKey)

        // Every contract proposed first (staging is not the log), then the appends measured: the device's
        // acceptance checked (its signature, the owner's delegation, the terms' digest), countersigned, logged.
        let proposals = try (0..<(contracts * 2)).map { _ in try parties.proposal() }
        let stagingStart = ContinuousClock.now
        try await withClients(target, count: clients) { client, index in
            for position in stride(from: index, to: proposals.count, by: clients) {
                let (contract, signed) = proposals[position]
                var metadata = Metadata()
                let request = Orrery_Notary_V1_ProposeContractRequest.with {
                    $0.proposal = signed
                    $0.amount = contract.price.maxCost
                    $0.idempotencyKey = "propose/\(contract.id)"
                }
                metadata.addString(
                    try InvocationSigner.authorization(
                        for: request, method: "orrery.notary.v1.Notary/ProposeContract", key: operatorKey,
                        subject: parties.consumer.did, audience: audience, proofs: [parties.consumerDelegation],
                        catalog: catalog), forKey: "authorization")
                _ = try await client.proposeContract(request, metadata: metadata)
            }
        }
        let stagingRate = Double(proposals.count) / Self.seconds(ContinuousClock.now - stagingStart)

        let appendStart = ContinuousClock.now
        try await withClients(target, count: clients) { client, index in
            for position in stride(from: index, to: contracts, by: clients) {
                let (contract, signed) = proposals[position]
                let request = Orrery_Notary_V1_AcceptContractRequest.with {
                    $0.acceptance = parties.acceptance(of: signed, id: contract.id)
                    $0.idempotencyKey = "accept/\(contract.id)"
                }
                var metadata = Metadata()
                metadata.addString(
                    try InvocationSigner.authorization(
                        for: request, method: "orrery.notary.v1.Notary/AcceptContract", key: operatorKey,
                        subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog),
                    forKey: "authorization")
                _ = try await client.acceptContract(request, metadata: metadata)
            }
        }
        let appendRate = Double(contracts) / Self.seconds(ContinuousClock.now - appendStart)

        // The same appends, 100 acceptances per AcceptContracts call (how an ensemble's contracts are recorded).
        let batches = stride(from: contracts, to: proposals.count, by: 100).map { start in
            Array(proposals[start..<min(start + 100, proposals.count)])
        }
        let batchedStart = ContinuousClock.now
        try await withClients(target, count: min(clients, 16)) { client, index in
            for position in stride(from: index, to: batches.count, by: min(clients, 16)) {
                let request = Orrery_Notary_V1_AcceptContractsRequest.with {
                    $0.acceptances = batches[position].map { parties.acceptance(of: $0.1, id: $0.0.id) }
                    $0.idempotencyKey = "accept-batch/\(position)"
                }
                var metadata = Metadata()
                metadata.addString(
                    try InvocationSigner.authorization(
                        for: request, method: "orrery.notary.v1.Notary/AcceptContracts", key: operatorKey,
                        subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog),
                    forKey: "authorization")
                let response = try await client.acceptContracts(request, metadata: metadata)
                if let failed = response.results.first(where: { $0.code != 0 }) {
                    throw ValidationError("an acceptance was refused: \(failed.message)")
                }
            }
        }
        let batchedRate = Double(contracts) / Self.seconds(ContinuousClock.now - batchedStart)

        // Inclusion proofs, one caller at a time, random entries of the whole log.
        var (size, proofLatencies) = try await withClients(target, count: 1) { client, _ in
            var metadata = Metadata()
            metadata.addString(
                try InvocationSigner.authorization(
                    for: Orrery_Notary_V1_GetInclusionProofRequest(),
                    method: "orrery.notary.v1.Notary/GetInclusionProof",
                    key: operatorKey, subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog,
                    lifetime: 290), forKey: "authorization")
            var head = Metadata()
            head.addString(
                try InvocationSigner.authorization(
                    for: Orrery_Notary_V1_GetTreeHeadRequest(), method: "orrery.notary.v1.Notary/GetTreeHead",
                    key: operatorKey, subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog),
                forKey: "authorization")
            let treeHead = try await client.getTreeHead(.init(), metadata: head)
            var proofLatencies: [Duration] = []
            for _ in 0..<500 {
                let index = UInt64.random(in: 0..<treeHead.head.treeSize)
                let start = ContinuousClock.now
                let proof = try await client.getInclusionProof(.with { $0.index = index }, metadata: metadata)
                proofLatencies.append(ContinuousClock.now - start)
                guard
                    MerkleTree.verifyInclusion(
                        leafHash: MerkleTree.leafHash(proof.leaf), index: index, size: proof.treeSize,
                        proof: proof.path.map { [UInt8]($0) }, root: [UInt8](proof.treeHead.head.rootHash))
                else { throw ValidationError("the inclusion proof of entry \(index) does not verify") }
            }
            return (treeHead.head.treeSize, proofLatencies)
        }
        proofLatencies.sort()

        // Offline audit rates: hashing a million entries into the tree, and checking entry signatures.
        let entry = Array(repeating: UInt8(0x5A), count: 420)  // about a contract entry's size
        let treeStart = ContinuousClock.now
        var accumulator = RootAccumulator()
        var leaf = entry
        for index in 0..<treeEntries {
            leaf[0] = UInt8(truncatingIfNeeded: index)
            leaf[1] = UInt8(truncatingIfNeeded: index >> 8)
            leaf[2] = UInt8(truncatingIfNeeded: index >> 16)
            accumulator.append(leafHash: MerkleTree.leafHash(leaf))
        }
        _ = accumulator.root
        let treeRate = Double(treeEntries) / Self.seconds(ContinuousClock.now - treeStart)
        let notaryKey = SigningKey()
        let signed = (0..<1000).map { index in
            SignedMessage.make(
                type: Orrery_Notary_V1_LogEntry.protoMessageName, payload: Data(entry + [UInt8(index & 0xFF)]),
                signers: [notaryKey])
        }
        let signatureStart = ContinuousClock.now
        for index in 0..<signatures {
            try SignedMessage.verify(signed[index % signed.count], requiring: [notaryKey.did])
        }
        let signatureRate = Double(signatures) / Self.seconds(ContinuousClock.now - signatureStart)

        func milliseconds(_ duration: Duration) -> String { String(format: "%.2f ms", Self.seconds(duration) * 1000) }
        let lines = [
            "",
            "## Contract notary",
            "",
            "| measurement | result |",
            "|---|---|",
            "| contract appends (AcceptContract: device signature, owner delegation and terms digest checked, countersigned, logged in batches with one signed tree head each), \(contracts) contracts, \(clients) concurrent clients, PostgreSQL fsync on, authorisation on | **\(Int(appendRate)) /s** |",
            "| contract appends, 100 acceptances per AcceptContracts call (each checked and appended exactly as above), \(contracts) contracts, 16 concurrent clients | **\(Int(batchedRate)) /s** |",
            "| proposals staged (ProposeContract under the consumer's delegation, its policy checked; not a log append), same clients | \(Int(stagingRate)) /s |",
            "| inclusion proof, one caller, random entry of \(size), 500 calls: p50 / p99 | \(milliseconds(proofLatencies[proofLatencies.count / 2])) / \(milliseconds(proofLatencies[proofLatencies.count * 99 / 100])) |",
            "| tree recompute (leaf hash + RFC 6962 tree), \(treeEntries) entries of \(entry.count) bytes, one core | **\(Int(treeRate)) entries/s** |",
            "| entry signature check (Ed25519 over the Signed envelope), \(signatures) checks, one core | \(Int(signatureRate)) /s (\(String(format: "%.0f", 1_000_000 / signatureRate)) s for 1,000,000 entries) |",
            "",
            "Goals: ≥ 2,000 contract appends/s; ≥ 500,000 entries/s recomputed.",
        ]
        for line in lines { print(line) }
        let existing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Runs `body` on `count` concurrent clients (one HTTP/2 connection each).
    func withClients<Result: Sendable>(
        _ target: ServiceAddress, count: Int,
        _ body:
            @escaping @Sendable (Orrery_Notary_V1_Notary.Client<HTTP2ClientTransport.Posix>, Int) async throws
            -> Result
    ) async throws -> Result {
        try await withThrowingTaskGroup(of: Result.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await withGRPCClient(
                        transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext)
                    ) { client in
                        try await body(Orrery_Notary_V1_Notary.Client(wrapping: client), index)
                    }
                }
            }
            var last: Result?
            for try await result in group { last = result }
            guard let last else { throw ValidationError("no clients") }
            return last
        }
    }

    /// The parties of the benchmark's contracts: a consumer, a device and its owner; the operator's key acts as
    /// the orchestrator.
    struct Parties: Sendable {
        let orchestrator: SigningKey
        let consumer = SigningKey()
        let owner = SigningKey()
        let device = SigningKey()
        let consumerDelegation: Delegation
        let ownerToDevice: Delegation

        init(orchestrator: SigningKey) throws {
            self.orchestrator = orchestrator
            let expiry = Int64(Date().timeIntervalSince1970) + 7200
            consumerDelegation = Delegation.issue(
                by: consumer, to: orchestrator.did, subject: consumer.did,
                command: try Command("/orrery/notary/propose"), expiration: expiry)
            ownerToDevice = Delegation.issue(
                by: owner, to: device.did, subject: owner.did, command: try Command("/orrery/device"),
                expiration: expiry)
        }

        func proposal() throws -> (Orrery_Notary_V1_Contract, Orrery_Common_V1_Signed) {
            let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
            let contract = Orrery_Notary_V1_Contract.with {
                $0.id = "ctr_" + String((0..<26).map { _ in alphabet.randomElement() ?? "a" })
                $0.consumerDid = consumer.did.string
                $0.deviceDid = device.did.string
                $0.ownerDid = owner.did.string
                $0.orchestratorDid = orchestrator.did.string
                $0.deploymentID = "dep_bench"
                $0.allocation = "main"
                $0.resources = .with {
                    $0.cpuCores = 1
                    $0.ramMib = 512
                }
                $0.price = .with {
                    $0.model = .perTime
                    $0.hourlyPrice = 100
                    $0.maxCost = 100
                }
                $0.maxDurationSeconds = 3600
                $0.settlementChain = "ledger"
                $0.proposedAt = .init(date: Date())
                $0.consumerAuthority = Data(
                    (try? UCANContainer.encode([consumerDelegation.envelope.bytes], header: .raw)) ?? [])
            }
            return (
                contract,
                SignedMessage.make(
                    type: Orrery_Notary_V1_Contract.protoMessageName, payload: try contract.serializedData(),
                    signers: [orchestrator])
            )
        }

        func acceptance(of proposal: Orrery_Common_V1_Signed, id: String) -> Orrery_Common_V1_Signed {
            let acceptance = Orrery_Notary_V1_ContractAcceptance.with {
                $0.contractID = id
                $0.contractSha256 = Data(SHA256.hash(data: proposal.payload))
                $0.deviceDid = device.did.string
                $0.acceptedAt = .init(date: Date())
                $0.deviceAuthority = Data(
                    (try? UCANContainer.encode([ownerToDevice.envelope.bytes], header: .raw)) ?? [])
            }
            return SignedMessage.make(
                type: Orrery_Notary_V1_ContractAcceptance.protoMessageName,
                payload: (try? acceptance.serializedData()) ?? Data(), signers: [device])
        }
    }
}
