import ArgumentParser
import Foundation
import OrreryProto
import SwiftProtobuf

/// `orrery incidents`: settlement steps held for the operator because the gateway refused their proofs.
struct IncidentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incidents",
        abstract:
            "List releases and refunds held because the settlement gateway refused their proofs (a notary log entry that does not verify); their escrow stays held until you resolve them.",
        subcommands: [List.self, Resolve.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List held releases and refunds.")

        @OptionGroup var options: OrchestratorOptions
        @Flag(help: "Also those already resolved.") var all = false
        @Flag(help: "Print JSON.") var json = false

        /// "release of receipt entry 7" or "refund".
        static func step(_ incident: Orrery_Orchestrator_V1_SettlementIncident) -> String {
            incident.step == "refund" ? "refund" : "release of receipt entry \(incident.receiptEntry)"
        }

        func run() async throws {
            let response = try await options.call { client in
                try await client.listSettlementIncidents(.with { $0.includeResolved = all })
            }
            if json {
                print(try response.jsonString())
                return
            }
            if response.incidents.isEmpty { print("no settlement incidents") }
            for incident in response.incidents {
                let state = incident.resolution.isEmpty ? "held" : incident.resolution
                print(
                    "\(incident.contractID) \(Self.step(incident)): \(state) since \(timeText(incident.heldAt)) — \(incident.reason)"
                )
            }
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resolve",
            abstract:
                "Retry a held step (the log was repaired) or forgo it (a release: the contract's rest is refunded; a refund: made without the breaches' penalties)."
        )

        @Argument(help: "The contract id.") var contract: String
        @Option(help: "The held release's receipt log entry.") var entry: UInt64?
        @Flag(help: "The contract's held refund.") var refund = false
        @Flag(help: "Try the step again.") var retry = false
        @Flag(help: "Give it up: a release's amount is refunded with the rest; a refund is made without penalties.")
        var forgo = false
        @Option(help: "Why, for the record.") var note = ""
        @OptionGroup var options: OrchestratorOptions

        func validate() throws {
            guard retry != forgo else { throw ValidationError("say --retry or --forgo") }
            guard (entry != nil) != refund else { throw ValidationError("say --entry N (a release) or --refund") }
        }

        func run() async throws {
            let incident = try await options.call { client in
                try await client.resolveSettlementIncident(
                    .with {
                        $0.contractID = contract
                        $0.receiptEntry = entry ?? 0
                        $0.refund = refund
                        $0.resolution = retry ? .retry : .forgo
                        $0.note = note
                    })
            }
            print("\(incident.contractID) \(List.step(incident)): \(incident.resolution)")
        }
    }
}
