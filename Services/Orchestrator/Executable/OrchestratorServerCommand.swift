import ArgumentParser
import OrreryRuntime
import OrchestratorService

/// `orchestrator`: Orrery orchestrator: takes workload specs, places them and drives deployments.
@main
struct OrchestratorServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orchestrator",
        abstract: "Orrery orchestrator: takes workload specs, places them and drives deployments.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup(title: "Settings of every service") var runtime: RuntimeOptions
    @OptionGroup(title: "Settings of the orchestrator") var own: OrchestratorSettings.Options

    func run() async throws {
        try await ServiceRunner.run(
            OrchestratorServer.description, options: runtime, own: own, service: OrchestratorServer.service)
    }
}
