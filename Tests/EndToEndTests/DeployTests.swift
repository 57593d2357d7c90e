import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryRuntime
import OrreryTestSupport
import IdentityService
import RegistryService
import OrchestratorService
import NotaryService
import SettlementService
import DeviceAgent
import Testing

/// The shipped systemd units and the install script, checked without a running systemd.
@Suite("Deploy")
struct DeployTests {
    static let services = ["identity", "registry", "orchestrator", "contract-notary", "settlement-gateway"]

    /// `systemd-analyze verify` over `files`; returns what it printed (it exits 0 on some errors, so the output
    /// is what counts).
    func verify(_ files: [URL]) async throws -> String {
        let (_, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/systemd-analyze"), arguments: ["verify"] + files.map(\.path))
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Copies the units into `directory`, pointing ExecStart at the built executables (verify checks they exist).
    func stageUnits(in directory: URL) throws -> [URL] {
        let source = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/systemd")
        let bin = TestEnvironment.binDirectory.path
        return try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().map { name in
            let text = try String(contentsOf: source.appendingPathComponent(name), encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/", with: bin + "/")
            let staged = directory.appendingPathComponent(name)
            try Data(text.utf8).write(to: staged)
            return staged
        }
    }

    @Test("every unit passes systemd-analyze verify with nothing printed")
    func unitsVerify() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-units") { directory in
            let units = try stageUnits(in: directory)
            #expect(units.count == 7)
            let output = try await verify(units)
            #expect(output.isEmpty, "systemd-analyze verify printed:\n\(output)")

            // The check can fail: a unit with an unknown key makes systemd-analyze print.
            let broken = directory.appendingPathComponent("orrery-broken.service")
            let text = try String(contentsOf: units[0], encoding: .utf8).replacingOccurrences(
                of: "[Service]", with: "[Service]\nNoSuchKey=1")
            try Data(text.utf8).write(to: broken)
            #expect(try await verify([broken]).contains("NoSuchKey"))
        }
    }

    @Test("units carry the hardening and lifecycle settings the runtime relies on")
    func unitSettings() throws {
        let directory = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/systemd")
        for name in Self.services + ["device-agent"] {
            let text = try String(
                contentsOf: directory.appendingPathComponent("orrery-\(name).service"), encoding: .utf8)
            for setting in [
                "Type=exec", "Restart=on-failure", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                "StateDirectory=orrery/\(name)", "ConfigurationDirectory=orrery", "TimeoutStopSec=20",
            ] {
                #expect(text.contains(setting + "\n"), "orrery-\(name).service lacks \(setting)")
            }
            let user = name == "device-agent" ? "User=orrery-agent" : "DynamicUser=yes"
            #expect(text.contains(user), "orrery-\(name).service lacks \(user)")
        }
        let agent = try String(
            contentsOf: directory.appendingPathComponent("orrery-device-agent.service"), encoding: .utf8)
        #expect(agent.contains("Delegate=yes"))
        #expect(!agent.contains("RestrictNamespaces=yes"), "workload sandboxes need namespaces")
        let target = try String(contentsOf: directory.appendingPathComponent("orrery.target"), encoding: .utf8)
        for name in Self.services { #expect(target.contains("orrery-\(name).service")) }
    }

    @Test("install.sh puts each role's executables, units and configs in place")
    func installRoles() async throws {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/install.sh")
        for (role, executables, units) in [
            ("cluster", Self.services + ["orrery"], Self.services.map { "orrery-\($0).service" } + ["orrery.target"]),
            ("edge", ["device-agent", "orrery"], ["orrery-device-agent.service"]),
        ] {
            try await TestEnvironment.withTemporaryDirectory("orrery-install") { destination in
                let (status, output) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/bin/bash"),
                    arguments: [
                        script.path, role, "--bin-dir", TestEnvironment.binDirectory.path, "--destdir",
                        destination.path,
                    ])
                #expect(status == 0, "\(output)")
                for executable in executables {
                    #expect(
                        FileManager.default.isExecutableFile(
                            atPath: destination.appendingPathComponent("usr/local/bin/\(executable)").path))
                }
                for unit in units {
                    #expect(
                        FileManager.default.fileExists(
                            atPath: destination.appendingPathComponent("etc/systemd/system/\(unit)").path))
                }
                let configs = try FileManager.default.contentsOfDirectory(
                    atPath: destination.appendingPathComponent("etc/orrery").path)
                #expect(Set(configs) == Set(executables.filter { $0 != "orrery" }.map { "\($0).json" }))
                let installed = try FileManager.default.contentsOfDirectory(
                    atPath: destination.appendingPathComponent("usr/local/bin").path)
                #expect(Set(installed) == Set(executables))
            }
        }
        let (usage, _) = try await ChildProcess.run(
            URL(fileURLWithPath: "/bin/bash"), arguments: [script.path, "moon"])
        #expect(usage == 64)
    }

    @Test("every example config is accepted by its service, and matches the service's default ports")
    func exampleConfigsLoad() async throws {
        let directory = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/config")
        let descriptions = [
            IdentityServer.description, RegistryServer.description, OrchestratorServer.description,
            NotaryServer.description, SettlementServer.description,
        ]
        for description in descriptions {
            let config = directory.appendingPathComponent("\(description.name).json").path
            // Identity comes from the env file `orrery operator init` writes, not from the example config.
            let settings = try await RuntimeSettings.load(
                for: description, options: try RuntimeOptions.parse(["--config", config]),
                environment: [
                    "ORRERY_IDENTITY_KEY": "/etc/orrery/credentials/x/service.key",
                    "ORRERY_TRUST_OPERATOR": SigningKey().did.string,
                ])
            #expect(settings.grpc.port == description.defaultGRPCPort)
            #expect(settings.http.port == description.defaultHTTPPort)
            #expect((settings.database != nil) == (description.schema != nil))
        }
        // The agent reads its own settings (no operator, no database).
        let agentConfig = directory.appendingPathComponent("device-agent.json").path
        let agent = try AgentSettings.load(
            options: try AgentOptions.parse(["--config", agentConfig]), environment: [:])
        #expect(agent.grpc == .init(host: "127.0.0.1", port: 7406))
        #expect(agent.http == .init(host: "127.0.0.1", port: 9406))
        #expect(agent.logFormat == .json)
    }
}
