import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryEthereum
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf

/// Where the settlement gateway is and who calls it.
struct SettlementOptions: ParsableArguments {
    @Option(
        name: .customLong("settlement"),
        help:
            "The settlement gateway, host:port (default: the context's, else the one the orchestrator names, else 127.0.0.1:7405)."
    )
    var settlementFlag: String?
    @OptionGroup var caller: CallerOptions
    var settlement: String {
        get async {
            await CLISettings.discoveredAddress(
                settlementFlag, service: "settlement-gateway", trustRoots: caller.trustRoots)
        }
    }

    func call<Result: Sendable>(
        _ body: (Orrery_Settlement_V1_Settlement.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await AuthorizedCall.withClient(await settlement, service: "settlement-gateway", caller: caller) {
            client in
            try await body(Orrery_Settlement_V1_Settlement.Client(wrapping: client))
        }
    }

    /// The gateway's DID (its Info).
    func gatewayDID() async throws -> String {
        let settlement = await settlement
        guard let target = ServiceAddress(settlement) else { throw ValidationError("'\(settlement)' is not host:port") }
        return try await ServiceProbe.withClient(target, trustRoots: caller.trustRoots) {
            try await ServiceProbe.info($0).did
        }
    }

    /// The DID of `key`, when no other participant is named.
    func ownDID() throws -> String { try Inputs.key(caller.key).did.string }
}

/// `orrery balance [DID]`: available, escrow and receivable NTX base units.
struct BalanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "balance", abstract: "A participant's NTX balances in the settlement ledger (default: yours).")

    @Argument(help: "The participant's DID (default: the key's).") var did: String?
    @OptionGroup var options: SettlementOptions
    @Flag(help: "Print JSON (the Balance message; amounts as decimal strings).") var json = false

    func run() async throws {
        let who = try did ?? options.ownDID()
        let balance = try await options.call { try await $0.getBalance(.with { $0.did = who }) }
        if json {
            print(try balance.jsonString())
            return
        }
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
    @Flag(help: "Print JSON (the Statement message).") var json = false

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
        if json {
            print(try statement.jsonString())
            return
        }
        for entry in statement.entries {
            let time = timeText(entry.at)
            print("\(entry.id)\t\(time)\t\(entry.kind)\(entry.contractID.isEmpty ? "" : " \(entry.contractID)")")
            for line in entry.lines { print("    \(line.account)\t\(line.amount)") }
        }
    }
}

/// `orrery deposit DID AMOUNT`: the operator credits a participant in ledger mode (e.g. against a bank transfer).
struct DepositCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deposit", abstract: "Credit a participant's available NTX (the operator, in ledger mode).")

    @Argument(help: "The participant's DID.") var did: String
    @Argument(help: "NTX base units, a positive integer.") var amount: String
    @Option(help: "Where it came from, for people (a payment reference).") var reference = ""
    @Option(help: "Idempotency key: the same key never credits twice (default: a fresh one).")
    var idempotencyKey = UUID().uuidString
    @OptionGroup var options: SettlementOptions

    func run() async throws {
        let entry = try await options.call { client in
            try await client.deposit(
                .with {
                    $0.did = did
                    $0.amount = amount
                    $0.source = "ledger"
                    $0.reference = reference
                    $0.idempotencyKey = idempotencyKey
                })
        }
        print("entry \(entry.id): \(amount) credited to \(did)")
    }
}

/// `orrery payout list|request|show`.
struct PayoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payout", abstract: "Payouts: withdrawals to a bound chain address and channel vouchers.",
        subcommands: [List.self, Request.self, Show.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A participant's payouts, newest first.")
        @Argument(help: "The participant's DID (default: the key's).") var did: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: SettlementOptions

        func run() async throws {
            let who = try did ?? options.ownDID()
            let payouts = try await options.call { try await $0.listPayouts(.with { $0.did = who }) }.payouts
            if json {
                Swift.print(try payouts.map { try $0.jsonString() }.joined(separator: "\n"))
                return
            }
            for payout in payouts { PayoutCommand.print(payout) }
        }
    }

    struct Request: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pay your receivable (or available) balance out to your bound address on a chain.")
        @Argument(help: "NTX base units, a positive integer.") var amount: String
        @Option(help: "ethereum (cardano payouts are not sent by the gateway yet).") var chain = "ethereum"
        @Option(help: "receivable (earnings) or available.") var from = "receivable"
        @Option(help: "Idempotency key (default: a fresh one).") var idempotencyKey = UUID().uuidString
        @OptionGroup var options: SettlementOptions

        func run() async throws {
            let me = try options.ownDID()
            let payout = try await options.call { client in
                try await client.requestPayout(
                    .with {
                        $0.did = me
                        $0.chain = chain
                        $0.amount = amount
                        $0.from = from
                        $0.idempotencyKey = idempotencyKey
                    })
            }
            PayoutCommand.print(payout)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One payout and its transactions.")
        @Argument(help: "The payout id (pay_…).") var id: String
        @OptionGroup var options: SettlementOptions

        func run() async throws {
            let payout = try await options.call { try await $0.getPayout(.with { $0.id = id }) }
            Swift.print(try payout.jsonString())
        }
    }

    static func print(_ payout: Orrery_Settlement_V1_Payout) {
        Swift.print(
            "\(payout.id)\t\(payout.kind)\t\(payout.state)\t\(payout.amount)\t\(payout.chain) \(payout.address)")
        for transaction in payout.transactions { Swift.print("    tx \(transaction)") }
        if !payout.voucherSignature.isEmpty {
            Swift.print("    voucher for \(payout.contractID): \(Hex.prefixed(payout.voucherSignature))")
        }
        if !payout.error.isEmpty { Swift.print("    error: \(payout.error)") }
    }
}
