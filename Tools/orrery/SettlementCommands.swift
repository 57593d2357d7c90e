import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryProto
import SwiftProtobuf

/// Where the settlement gateway is and who calls it.
struct SettlementOptions: ParsableArguments {
    @Option(help: "The settlement gateway, host:port.") var settlement = "127.0.0.1:7405"
    @Option(help: "Your key file.") var key: String
    @Option(help: "Your delegation chain (repeatable; none when you are the operator).") var proof: [String] = []

    func call<Result: Sendable>(
        _ body: (Orrery_Settlement_V1_Settlement.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await AuthorizedCall.withClient(settlement, key: key, proofs: proof) { client in
            try await body(Orrery_Settlement_V1_Settlement.Client(wrapping: client))
        }
    }

    /// The DID of `key`, when no other participant is named.
    func ownDID() throws -> String { try Inputs.key(key).did.string }
}

/// `orrery balance [DID]`: available, escrow and receivable NTX base units.
struct BalanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "balance", abstract: "A participant's NTX balances in the settlement ledger (default: yours).")

    @Argument(help: "The participant's DID (default: the key's).") var did: String?
    @OptionGroup var options: SettlementOptions

    func run() async throws {
        let who = try did ?? options.ownDID()
        let balance = try await options.call { try await $0.getBalance(.with { $0.did = who }) }
        print("\(balance.did)")
        print("    available   \(balance.available)")
        print("    escrow      \(balance.escrow)")
        print("    receivable  \(balance.receivable)")
    }
}

/// `orrery statement [DID]`: the journal entries that touched a participant's accounts.
struct StatementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "statement", abstract: "A participant's journal entries, oldest first (default: yours).")

    @Argument(help: "The participant's DID (default: the key's).") var did: String?
    @Option(help: "Only entries after this id.") var after: Int64 = 0
    @OptionGroup var options: SettlementOptions

    func run() async throws {
        let who = try did ?? options.ownDID()
        let statement = try await options.call {
            try await $0.getStatement(
                .with {
                    $0.did = who
                    $0.afterEntry = after
                    $0.limit = 1000
                })
        }
        for entry in statement.entries {
            let time = ISO8601DateFormatter().string(from: entry.at.date)
            print("\(entry.id)\t\(time)\t\(entry.kind)\(entry.contractID.isEmpty ? "" : " \(entry.contractID)")")
            for line in entry.lines { print("    \(line.account)\t\(line.amount)") }
        }
    }
}
