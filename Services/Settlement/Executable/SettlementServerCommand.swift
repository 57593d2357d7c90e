import ArgumentParser
import OrreryRuntime
import SettlementService

/// `settlement-gateway`: Orrery settlement gateway: NTX escrow in a double-entry ledger and chain adapters.
@main
struct SettlementServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement-gateway",
        abstract: "Orrery settlement gateway: NTX escrow in a double-entry ledger and chain adapters.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(SettlementServer.service, options: runtime)
    }
}
