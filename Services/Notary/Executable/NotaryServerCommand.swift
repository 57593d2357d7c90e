import ArgumentParser
import OrreryRuntime
import NotaryService

/// `contract-notary`: Orrery contract notary: signed contracts in an append-only Merkle tree log.
@main
struct NotaryServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contract-notary",
        abstract: "Orrery contract notary: signed contracts in an append-only Merkle tree log.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup(title: "Settings of every service") var runtime: RuntimeOptions
    @OptionGroup(title: "Settings of the contract notary") var own: NotarySettings.Options

    func run() async throws {
        try await ServiceRunner.run(NotaryServer.description, options: runtime, own: own, service: NotaryServer.service)
    }
}
