import ArgumentParser
import OrreryRuntime
import RegistryService

/// `registry`: Orrery registry: devices, their capabilities, prices, locations and liveness.
@main
struct RegistryServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry",
        abstract: "Orrery registry: devices, their capabilities, prices, locations and liveness.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(RegistryServer.service, options: runtime)
    }
}
