public import Foundation
internal import OrreryRuntime

/// The six services running as real processes for a test: identity first (the others follow its revocation
/// log), then the rest in parallel, each with its credentials from a `TestNetwork` and its own database schema.
public struct TestConstellation: Sendable {
    public static let executables = [
        "identity", "registry", "orchestrator", "contract-notary", "settlement-gateway", "device-agent",
    ]

    public let services: [String: RunningService]

    public subscript(name: String) -> RunningService? { services[name] }

    /// Starts `executables` (identity among them) against `database`, each with `environment` added to its own.
    public static func start(
        _ executables: [String] = executables,
        database: TestDatabase,
        network: TestNetwork,
        directory: URL,
        environment added: [String: String] = [:]
    ) async throws -> TestConstellation {
        var services: [String: RunningService] = [:]
        do {
            let identity = try await RunningService.start(
                "identity",
                environment: database.serviceEnvironment.merging(network.environment(for: "identity")) { $1 }
                    .merging(added) { $1 },
                directory: directory)
            services["identity"] = identity
            let identityAddress = "127.0.0.1:\(identity.ready.grpcPort)"
            try await withThrowingTaskGroup(of: (String, RunningService).self) { group in
                for name in executables where name != "identity" {
                    group.addTask {
                        let extra =
                            name == "device-agent"
                            ? ["--state-dir", directory.appendingPathComponent("agent-state").path] : []
                        let environment = database.serviceEnvironment.merging(
                            network.environment(for: name, identityAddress: identityAddress)
                        ) { $1 }.merging(added) { $1 }
                        return (
                            name,
                            try await RunningService.start(
                                name, extraArguments: extra, environment: environment, directory: directory)
                        )
                    }
                }
                for try await (name, service) in group { services[name] = service }
            }
        } catch {
            for service in services.values { await service.child.stop() }
            throw error
        }
        return TestConstellation(services: services)
    }

    /// Kills what still runs (cleanup after a failed test).
    public func kill() {
        for service in services.values where service.child.isRunning { service.child.signal(SIGKILL) }
    }
}
