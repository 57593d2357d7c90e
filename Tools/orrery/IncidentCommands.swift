import ArgumentParser
import Foundation
import OrreryProto
import SwiftProtobuf

/// `orrery incidents`: settlement steps held for the operator because the gateway refused their proof.
struct IncidentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incidents",
        abstract:
            "List releases held because the settlement gateway refused their proof (a notary log entry that does not verify); their escrow stays held until you resolve them.",
        subcommands: [List.self, Resolve.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List held releases.")

        @OptionGroup var options: OrchestratorOptions
        @Flag(help: "Also those already resolved.") var all = false
        @Flag(help: "Print JSON.") var json = false

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
                    "\(incident.contractID) receipt entry \(incident.receiptEntry): \(state) since \(incident.heldAt.date) — \(incident.reason)"
                )
            }
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resolve",
            abstract: "Retry a held release (the log was repaired) or forgo it (the contract's rest is refunded).")

        @Argument(help: "The contract id.") var contract: String
        @Option(help: "The receipt's notary log entry.") var entry: UInt64
        @Flag(help: "Try the release again.") var retry = false
        @Flag(help: "Give the release up; the contract's remaining escrow is refunded.") var forgo = false
        @Option(help: "Why, for the record.") var note = ""
        @OptionGroup var options: OrchestratorOptions

        func validate() throws {
            guard retry != forgo else { throw ValidationError("say --retry or --forgo") }
        }

        func run() async throws {
            let incident = try await options.call { client in
                try await client.resolveSettlementIncident(
                    .with {
                        $0.contractID = contract
                        $0.receiptEntry = entry
                        $0.resolution = retry ? .retry : .forgo
                        $0.note = note
                    })
            }
            print("\(incident.contractID) receipt entry \(incident.receiptEntry): \(incident.resolution)")
        }
    }
}
