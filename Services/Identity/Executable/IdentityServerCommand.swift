import ArgumentParser
import OrreryRuntime
import IdentityService

/// `identity`: Orrery identity service: DIDs, capability delegations and revocations.
@main
struct IdentityServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Orrery identity service: DIDs, capability delegations and revocations.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup(title: "Settings of every service") var runtime: RuntimeOptions
    @OptionGroup(title: "Settings of the identity service") var own: IdentitySettings.Options

    func run() async throws {
        try await ServiceRunner.run(
            IdentityServer.description, options: runtime, own: own, service: IdentityServer.service)
    }
}
