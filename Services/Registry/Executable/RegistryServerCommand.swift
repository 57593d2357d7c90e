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

    @OptionGroup(title: "Settings of every service") var runtime: RuntimeOptions
    @OptionGroup(title: "Settings of the registry") var own: RegistrySettings.Options

    func run() async throws {
        try await ServiceRunner.run(
            RegistryServer.description, options: runtime, own: own, service: RegistryServer.service)
    }
}
