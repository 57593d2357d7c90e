import Foundation
import OrreryTestSupport
import Testing

/// The `device-agent` executable as an edge host runs it: what it links, what it reads, how it ends.
@Suite("Device agent process: lean, its own settings, failing for good")
struct AgentProcessTests {
    @Test("the agent links Foundation's essentials only (no ICU), and neither PostgreSQL's client nor Hummingbird")
    func linksOnlyWhatItUses() async throws {
        let binary = TestEnvironment.executable("device-agent").path
        // Debug builds link Foundation dynamically, so ldd shows which Foundation the agent loads.
        let (status, libraries) = try await ChildProcess.run(URL(fileURLWithPath: "/usr/bin/ldd"), arguments: [binary])
        #expect(status == 0, "\(libraries)")
        #expect(libraries.contains("libFoundationEssentials"), "\(libraries)")
        #expect(!libraries.contains("libFoundation.so"), "\(libraries)")
        #expect(!libraries.contains("FoundationICU"), "\(libraries)")
        #expect(!libraries.contains("FoundationInternationalization"), "\(libraries)")
        // Swift's mangled names carry each module's name: present for what it links, absent for what it must not.
        let image = try Data(contentsOf: URL(fileURLWithPath: binary))
        #expect(image.range(of: Data("GRPCCore".utf8)) != nil)
        #expect(image.range(of: Data("PostgresNIO".utf8)) == nil)
        #expect(image.range(of: Data("Hummingbird".utf8)) == nil)
    }

    @Test("the agent takes only its own options: a database or operator option is a usage error")
    func ownSettingsOnly() async throws {
        let binary = TestEnvironment.executable("device-agent")
        for option in [["--db-host", "127.0.0.1"], ["--trust-operator", "did:key:z6MkExample"]] {
            let (status, output) = try await ChildProcess.run(binary, arguments: option)
            #expect(status == 64, "\(option): \(output)")
            #expect(output.contains("Unknown option"), "\(output)")
        }
        let (_, help) = try await ChildProcess.run(binary, arguments: ["serve", "--help"])
        #expect(help.contains("--liveness-interval-ms") && help.contains("--state-dir"), "\(help)")
        #expect(!help.contains("--db-") && !help.contains("--identity-key"), "\(help)")
    }

    @Test("work that fails for good (an unreadable enrollment) ends the agent with exit 1 and says why")
    func workFailingForGoodEndsTheProcess() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-agent-fails") { directory in
            let state = directory.appendingPathComponent("state")
            try FileManager.default.createDirectory(
                at: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try Data("not an enrollment".utf8).write(to: state.appendingPathComponent("enrollment.json"))
            let config = directory.appendingPathComponent("agent.json")
            try Data("{}".utf8).write(to: config)
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.executable("device-agent"),
                arguments: [
                    "--state-dir", state.path, "--config", config.path, "--grpc-port", "0", "--http-port", "0",
                    "--log-format", "json",
                ])
            #expect(status == 1, "\(output)")
            #expect(output.contains("the agent's work failed"), "\(output)")
        }
    }
}
