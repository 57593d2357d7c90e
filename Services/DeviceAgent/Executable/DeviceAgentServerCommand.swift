import ArgumentParser
import OrreryRuntime
import DeviceAgent

/// `device-agent`: Orrery device agent: joins an edge host to the network and runs workloads isolated.
@main
struct DeviceAgentServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device-agent",
        abstract: "Orrery device agent: joins an edge host to the network and runs workloads isolated.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(DeviceAgentServer.service, options: runtime)
    }
}
