import ArgumentParser
import DeviceAgent
import Foundation
import OrreryRuntime

/// `device-agent`: Orrery device agent: joins an edge host to the network and runs workloads isolated.
@main
struct DeviceAgentServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device-agent",
        abstract: "Orrery device agent: joins an edge host to the network and runs workloads isolated.",
        subcommands: [Serve.self, Inventory.self],
        defaultSubcommand: Serve.self
    )
}

/// `device-agent serve` (the default): runs the agent.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent (the default).",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(DeviceAgentServer.service, options: runtime)
    }
}

/// `device-agent inventory`: what this host would advertise.
struct Inventory: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the detected hardware as JSON.")

    @Option(help: "The work directory whose disk is reported.") var workDir = "."

    func run() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(HostDetector.detect(workDirectory: workDir)), as: UTF8.self))
    }
}
