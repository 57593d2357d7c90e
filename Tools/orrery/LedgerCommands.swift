import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryLedger
import OrreryProto
import SwiftProtobuf

/// Where the notary is, who calls it, and where this client remembers the last tree head it verified.
struct NotaryOptions: ParsableArguments {
    @Option(
        name: .customLong("notary"),
        help:
            "The contract notary, host:port (default: the context's, else the one the orchestrator names, else 127.0.0.1:7404)."
    )
    var notaryFlag: String?
    @OptionGroup var caller: CallerOptions
    var notary: String {
        get async {
            await CLISettings.discoveredAddress(notaryFlag, service: "contract-notary", trustRoots: caller.trustRoots)
        }
    }

    @Option(
        help:
            "Where the last verified tree head is kept; each new one must be proven consistent with it (default: one file per notary under $XDG_STATE_HOME/orrery/notary-tree-heads, or ~/.local/state/orrery/notary-tree-heads)."
    )
    var witness: String?

    /// The file remembering the last head verified of the log `logDID`: `--witness`, or one per notary under the
    /// XDG state directory (so verifying one network's notary never stands in the way of another's).
    func witnessFile(for logDID: String) -> String {
        if let witness { return witness }
        let environment = ProcessInfo.processInfo.environment
        let state =
            environment["XDG_STATE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.local/state")
        let name = String(logDID.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" })
        return "\(state)/orrery/notary-tree-heads/\(name).pb"
    }

    func call<Result: Sendable>(
        _ body: (Orrery_Notary_V1_Notary.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await AuthorizedCall.withClient(await notary, service: "contract-notary", caller: caller) { client in
            try await body(Orrery_Notary_V1_Notary.Client(wrapping: client))
        }
    }

    /// The notary's newest tree head, checked against the one this client saw before (a consistency proof), then
    /// remembered. Exits 1 when the notary rewrote history.
    func freshHead(_ client: Orrery_Notary_V1_Notary.Client<HTTP2ClientTransport.Posix>) async throws
        -> Orrery_Notary_V1_TreeHead
    {
        let head = try await client.getTreeHead(.init())
        let logDID: String
        do {
            logDID = try TreeHeadWitness.verify(head).logDid
        } catch {
            print("✘ \(error)")
            throw ExitCode(1)
        }
        let witness = TreeHeadWitness(file: witnessFile(for: logDID))
        var consistency: Orrery_Notary_V1_ConsistencyProof?
        if let last = witness.last(), last.head.treeSize > 0, last.head.treeSize <= head.head.treeSize {
            consistency = try await client.getConsistencyProof(
                .with {
                    $0.oldSize = last.head.treeSize
                    $0.newSize = head.head.treeSize
                })
        }
        do {
            return try witness.observe(head, consistency: consistency)
        } catch let error as TreeHeadError {
            print("✘ \(error)")
            throw ExitCode(1)
        }
    }
}

/// `orrery ledger verify`: recompute the notary's log from its entries and check every signature.
struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Audit the contract notary's append-only log.",
        subcommands: [LedgerVerifyCommand.self])
}

struct LedgerVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract:
            "Fetch every entry and the signed tree head, recompute the Merkle tree, check the notary's and each party's signatures and the inclusion proof the notary serves for every entry, and name the first tampered entry or corrupted proof (exit 1).",
        discussion:
            "The tree head is also checked for consistency with the last one this client verified (--witness), so a log that was rewritten after you saw it is reported even when it is internally coherent."
    )

    @OptionGroup var options: NotaryOptions
    @Flag(
        help:
            "Print one JSON object: verified, entries, tree_size, log_did, root (hex), kinds (entries by kind) and, when not verified, problem {entry, reason}; the exit status is the same."
    )
    var json = false

    func run() async throws {
        let (head, leaves, broken) = try await options.call { client in
            let head = try await options.freshHead(client)
            var leaves: [Data] = []
            while UInt64(leaves.count) < head.treeSize {
                let page = try await client.getEntries(
                    .with {
                        $0.start = UInt64(leaves.count)
                        $0.end = head.treeSize
                    })
                if page.leaves.isEmpty { break }
                leaves += page.leaves
            }
            // The proofs the notary serves come from the node hashes it stored, not from the entries: every entry's
            // is checked, so a corrupted stored node (which would make releases proven through it fail) is named.
            var broken: UInt64?
            if UInt64(leaves.count) == head.treeSize {
                for index in 0..<head.treeSize {
                    let proof = try await client.getInclusionProof(
                        .with {
                            $0.index = index
                            $0.treeSize = head.treeSize
                        })
                    let verifies = MerkleTree.verifyInclusion(
                        leafHash: MerkleTree.leafHash(leaves[Int(index)]), index: index, size: head.treeSize,
                        proof: proof.path.map { [UInt8]($0) }, root: [UInt8](head.rootHash))
                    if !verifies || proof.leaf != leaves[Int(index)] {
                        broken = index
                        break
                    }
                }
            }
            return (head, leaves, broken)
        }
        let log = try DID(head.logDid)
        let report = LogAudit.audit(leaves: leaves, log: log)
        let problem: LedgerVerification.Problem?
        if let tampered = report.firstProblem {
            problem = .init(
                entry: UInt64(tampered.index), reason: "entry \(tampered.index) is tampered: \(tampered.reason)")
        } else if UInt64(leaves.count) != head.treeSize {
            problem = .init(
                entry: UInt64(leaves.count),
                reason: "entry \(leaves.count) is missing: the signed tree head has \(head.treeSize) entries")
        } else if report.root != [UInt8](head.rootHash) {
            problem = .init(
                entry: nil,
                reason: "the \(leaves.count) entries do not hash to the signed tree head's root: the log was rewritten")
        } else if let broken {
            problem = .init(
                entry: broken,
                reason:
                    "the notary's inclusion proof of entry \(broken) does not verify against the signed tree head: a stored proof node is corrupted (every release proven through it is refused)"
            )
        } else {
            problem = nil
        }
        let verification = LedgerVerification(
            verified: problem == nil, entries: leaves.count, treeSize: head.treeSize, logDid: head.logDid,
            root: Hex.encode(head.rootHash), kinds: report.kinds, problem: problem)
        if json {
            print(try verification.snakeCaseJSON())
        } else if let problem {
            print("✘ \(problem.reason)")
        } else {
            print(
                "✔ \(leaves.count) entries verified against the tree head signed by \(head.logDid) (root \(Hex.encode(head.rootHash)))"
            )
            for (kind, count) in report.kinds.sorted(by: { $0.key < $1.key }) { print("    \(kind): \(count)") }
        }
        if problem != nil { throw ExitCode(1) }
    }
}

/// What `orrery ledger verify --json` prints: one stable shape, keys in snake_case.
struct LedgerVerification: Encodable {
    struct Problem: Encodable {
        /// The first entry found wrong (nil when the log as a whole does not hash to the signed root).
        let entry: UInt64?
        let reason: String
    }
    let verified: Bool
    let entries: Int
    let treeSize: UInt64
    let logDid: String
    let root: String
    let kinds: [String: Int]
    let problem: Problem?

}

/// `orrery contract show|proof ID`.
struct ContractCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contract", abstract: "A contract in the notary's log.",
        subcommands: [ContractShowCommand.self, ContractProofCommand.self])
}

struct ContractShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "A contract's terms, state and log entries.")

    @Argument(help: "The contract id (ctr_…).") var id: String
    @OptionGroup var options: NotaryOptions
    @Flag(help: "Print the record as JSON.") var json = false

    func run() async throws {
        let record = try await options.call { try await $0.getContract(.with { $0.id = id }) }
        if json {
            print(try record.jsonString())
            return
        }
        let contract = record.contract
        print("==> \(contract.id): \(record.state.name)")
        print("    consumer      \(contract.consumerDid)")
        print("    device        \(contract.deviceDid) (owner \(contract.ownerDid))")
        print("    orchestrator  \(contract.orchestratorDid)")
        print("    replica       \(contract.allocation)[\(contract.replica)] of \(contract.deploymentID)")
        print(
            "    price         \(contract.price.model), \(contract.price.hourlyPrice) NTX/h, at most \(contract.price.maxCost) NTX"
        )
        print(
            "    settlement    \(contract.settlementChain)\(contract.payoutAddress.isEmpty ? "" : " to \(contract.payoutAddress)")"
        )
        if !contract.replaces.isEmpty { print("    replaces      \(contract.replaces)") }
        print("    entries       \(record.entryIndexes.map(String.init).joined(separator: ", "))")
        print("    receipts      \(record.lastReceiptSequence)")
        print("    SLA           \(ContractsCommand.breaches(record))")
    }
}

struct ContractProofCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proof",
        abstract: "Prove each of a contract's entries included in the notary's signed tree head (exit 1 if one is not)."
    )

    @Argument(help: "The contract id (ctr_…).") var id: String
    @OptionGroup var options: NotaryOptions
    @Flag(
        help:
            "Print one JSON object: contract_id, verified, tree_size, log_did, root (hex) and entries [{index, kind, included}]; the exit status is the same."
    )
    var json = false

    func run() async throws {
        let proof = try await options.call { client in
            let head = try await options.freshHead(client)
            let record = try await client.getContract(.with { $0.id = id })
            var entries: [ContractProof.Entry] = []
            for index in record.entryIndexes where index < head.treeSize {
                let proof = try await client.getInclusionProof(
                    .with {
                        $0.index = index
                        $0.treeSize = head.treeSize
                    })
                let included = MerkleTree.verifyInclusion(
                    leafHash: MerkleTree.leafHash(proof.leaf), index: index, size: head.treeSize,
                    proof: proof.path.map { [UInt8]($0) }, root: [UInt8](head.rootHash))
                let kind = LogAudit.entry(proof.leaf).map { "\($0.kind)" } ?? "unreadable"
                entries.append(.init(index: index, kind: kind, included: included))
            }
            return ContractProof(
                contractId: id, verified: entries.allSatisfy(\.included), treeSize: head.treeSize,
                logDid: head.logDid, root: Hex.encode(head.rootHash), entries: entries)
        }
        if json {
            print(try proof.snakeCaseJSON())
        } else {
            for entry in proof.entries {
                print(
                    "\(entry.included ? "✔" : "✘") entry \(entry.index) (\(entry.kind)) \(entry.included ? "is included in" : "is NOT included in") the tree of \(proof.treeSize) entries, root \(proof.root)"
                )
            }
        }
        if !proof.verified { throw ExitCode(1) }
    }
}

/// What `orrery contract proof --json` prints: one stable shape, keys in snake_case.
struct ContractProof: Encodable {
    struct Entry: Encodable {
        let index: UInt64
        /// The log entry's kind (`contract`, `receipt`, …), or `unreadable`.
        let kind: String
        /// Whether its inclusion proof verifies against the signed tree head.
        let included: Bool
    }
    let contractId: String
    /// Every entry of the contract that the signed tree head covers is included.
    let verified: Bool
    let treeSize: UInt64
    let logDid: String
    let root: String
    let entries: [Entry]
}

/// Checks a log's entries one by one: the notary's signature, the index each claims, and the signatures of the
/// acts inside; and recomputes the root.
enum LogAudit {
    struct Report {
        var firstProblem: (index: Int, reason: String)?
        var root: [UInt8]
        var kinds: [String: Int]
    }

    static func entry(_ leaf: Data) -> Orrery_Notary_V1_LogEntry? {
        (try? Orrery_Common_V1_Signed(serializedBytes: leaf)).flatMap {
            try? Orrery_Notary_V1_LogEntry(serializedBytes: $0.payload)
        }
    }

    static func audit(leaves: [Data], log: DID) -> Report {
        var accumulator = RootAccumulator()
        var problem: (Int, String)?
        var kinds: [String: Int] = [:]
        for (index, leaf) in leaves.enumerated() {
            accumulator.append(leafHash: MerkleTree.leafHash(leaf))
            guard problem == nil else { continue }
            do {
                let signed = try Orrery_Common_V1_Signed(serializedBytes: leaf)
                try SignedMessage.verify(
                    signed, type: Orrery_Notary_V1_LogEntry.protoMessageName, requiring: [log])
                let entry = try Orrery_Notary_V1_LogEntry(serializedBytes: signed.payload)
                guard entry.index == UInt64(index) else {
                    problem = (index, "it claims index \(entry.index)")
                    continue
                }
                try SignedMessage.verify(entry.act)
                if entry.kind == .contract { try SignedMessage.verify(entry.acceptance) }
                kinds["\(entry.kind)", default: 0] += 1
            } catch {
                problem = (index, "\(error)")
            }
        }
        return Report(firstProblem: problem, root: accumulator.root, kinds: kinds)
    }
}
