import ArgumentParser
import Foundation
import GRPCCore
import OrreryIdentity
import OrreryLedger
import OrreryProto
import SwiftProtobuf

/// `orrery settlement verify`: the operator's audit of the settlement journal.
struct SettlementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement", abstract: "Audit the settlement gateway's journal.",
        subcommands: [SettlementVerifyCommand.self])
}

struct SettlementVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract:
            "Fetch the whole journal (the operator only), recompute its hash chain, check every checkpoint the gateway signed, that every entry balances and every account holds the sum of its lines, and that every release's kept proof verifies; name each problem (exit 1).",
        discussion:
            "The last checkpoint verified is remembered per gateway (--witness), and the chain must still pass through it next time: a journal rewritten since, even with its chain recomputed, is reported."
    )

    @OptionGroup var options: SettlementOptions
    @Option(
        help:
            "Directory of the checkpoints this client verified, one file per gateway DID (default: $XDG_STATE_HOME/orrery/settlement-journal, else ~/.local/state/orrery/settlement-journal)."
    )
    var witness: String?
    @Flag(
        help:
            "Print one JSON object: verified, gateway_did, sealed, unsealed, accounts, proven_releases, legacy_releases, kinds, head {position, chain_digest} and problems (empty when verified); the exit status is the same."
    )
    var json = false

    func run() async throws {
        let gateway = try await options.gatewayDID()
        let items = try await options.call { client in
            try await client.auditJournal(.init()) { response in
                var items: [Orrery_Settlement_V1_AuditJournalItem] = []
                for try await item in response.messages { items.append(item) }
                return items
            }
        }
        let file = witnessDirectory + "/" + gateway.replacingOccurrences(of: ":", with: "_") + ".pb"
        let remembered = FileManager.default.contents(atPath: file).flatMap {
            try? Orrery_Settlement_V1_JournalCheckpoint(serializedBytes: $0)
        }
        let report = JournalAudit(gateway: gateway).audit(items, remembered: remembered)
        if json {
            print(try SettlementVerification(report, gateway: gateway).snakeCaseJSON())
        }
        guard report.problems.isEmpty else {
            if !json {
                for problem in report.problems { print("✘ \(problem)") }
            }
            throw ExitCode(1)
        }
        if let head = report.head {
            try FileManager.default.createDirectory(atPath: witnessDirectory, withIntermediateDirectories: true)
            try Data(try head.serializedBytes() as [UInt8]).write(to: URL(fileURLWithPath: file), options: .atomic)
        }
        if json { return }
        let headText = report.head.map { "position \($0.position), digest \(Hex.encode($0.chainDigest))" } ?? "empty"
        print(
            "✔ \(report.sealed) \(report.sealed == 1 ? "entry" : "entries") verified against the chain the gateway \(gateway) signed (\(headText)); \(report.accounts) \(report.accounts == 1 ? "account holds" : "accounts hold") the sums of their lines"
        )
        if report.unsealed > 0 { print("    \(report.unsealed) newer entries balance but are not sealed yet") }
        print(
            "    releases: \(report.provenReleases) proven\(report.legacyReleases > 0 ? ", \(report.legacyReleases) posted before proofs were kept" : "")"
        )
        for (kind, count) in report.kinds.sorted(by: { $0.key < $1.key }) { print("    \(kind): \(count)") }
    }

    private var witnessDirectory: String {
        if let witness { return witness }
        let environment = ProcessInfo.processInfo.environment
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return state + "/orrery/settlement-journal"
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(
            ".local/state/orrery/settlement-journal"
        ).path
    }
}

/// What `orrery settlement verify --json` prints: one stable shape, keys in snake_case.
struct SettlementVerification: Encodable {
    struct Head: Encodable {
        let position: UInt64
        /// Hex.
        let chainDigest: String
    }
    let verified: Bool
    let gatewayDid: String
    let sealed: Int
    let unsealed: Int
    let accounts: Int
    let provenReleases: Int
    let legacyReleases: Int
    let kinds: [String: Int]
    let head: Head?
    let problems: [String]

    init(_ report: JournalAudit.Report, gateway: String) {
        verified = report.problems.isEmpty
        gatewayDid = gateway
        sealed = report.sealed
        unsealed = report.unsealed
        accounts = report.accounts
        provenReleases = report.provenReleases
        legacyReleases = report.legacyReleases
        kinds = report.kinds
        head = report.head.map { Head(position: $0.position, chainDigest: Hex.encode($0.chainDigest)) }
        problems = report.problems
    }

}
