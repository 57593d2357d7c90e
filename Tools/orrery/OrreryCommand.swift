import ArgumentParser
import Foundation
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf

/// `orrery`: the command-line client of an Orrery network.
@main
struct OrreryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orrery",
        abstract: "The command-line client of an Orrery compute network.",
        subcommands: [
            InfoCommand.self, HealthCommand.self, KeyCommand.self, DIDCommand.self, UCANCommand.self,
            OperatorCommand.self,
            RevokeCommand.self, RevocationsCommand.self, DevicesCommand.self, RunCommand.self, StatusCommand.self,
            CancelCommand.self, RenewCommand.self, PortForwardCommand.self, ExecCommand.self, IngressTokenCommand.self,
            EventsCommand.self, ContractsCommand.self, ExplainCommand.self,
            LogsCommand.self,
            OutputsCommand.self,
            LedgerCommand.self,
            ContractCommand.self, BalanceCommand.self, StatementCommand.self,
            DepositCommand.self, PayoutCommand.self, AddressCommand.self, EthCommand.self, CardanoCommand.self,
            CheckpointCommand.self, MoveCommand.self, ActorsCommand.self, ActorCommand.self, NetworkCommand.self,
            IncidentsCommand.self,
            SettlementCommand.self, ContextCommand.self, VersionCommand.self,
        ]
    )

    /// As ArgumentParser's own, but a service that could not be reached over TLS (or without it) is told as what to
    /// do about it (`ConnectionTrouble`).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: ConnectionTrouble.explaining(error) ?? error)
        }
    }
}

/// `orrery info ADDRESS`: what a service says about itself.
struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a service's name, version, build, uptime, DID and the services it calls (the open Info RPC)."
    )

    @Argument(help: "The service's gRPC address, host:port.")
    var address: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var tls: TLSOptions

    func run() async throws {
        guard let target = ServiceAddress(address) else {
            throw ValidationError("'\(address)' is not host:port")
        }
        let info = try await ServiceProbe.withClient(target, trustRoots: tls.trustRoots) {
            try await ServiceProbe.info($0)
        }
        if json {
            print(try info.jsonString())
        } else {
            print("\(info.name) \(info.version) (build \(info.build))")
            print("  uptime  \(String(format: "%.1f", info.uptimeSeconds)) s")
            print("  did     \(info.did.isEmpty ? "(none yet)" : info.did)")
            for service in info.services { print("  calls   \(service.name) at \(service.address)") }
        }
    }
}

/// `orrery health ADDRESS [--service NAME]`: the standard gRPC health check.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Check a service's health (grpc.health.v1); exits 0 only when it is SERVING."
    )

    @Argument(help: "The service's gRPC address, host:port.")
    var address: String

    @Option(help: "A service name; empty for the server as a whole.")
    var service = ""

    @OptionGroup var tls: TLSOptions

    func run() async throws {
        guard let target = ServiceAddress(address) else {
            throw ValidationError("'\(address)' is not host:port")
        }
        let status = try await ServiceProbe.withClient(target, trustRoots: tls.trustRoots) {
            try await ServiceProbe.health($0, service: service)
        }
        print(status)
        if status != .serving { throw ExitCode.failure }
    }
}
