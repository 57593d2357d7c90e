import ArgumentParser
import Foundation
import Logging
import OrreryAuth
import OrreryDatabase
import OrreryIdentity
import OrreryRuntime
import OrreryTestSupport
import Testing

@Suite("Configuration: defaults < file < environment < flags")
struct RuntimeSettingsTests {
    static let service = ServiceDescription(
        name: "registry", defaultGRPCPort: 7402, defaultHTTPPort: 9402, schema: (name: "registry", migrations: []))
    static let agent = ServiceDescription(
        name: "device-agent", defaultGRPCPort: 7406, defaultHTTPPort: 9406, schema: nil, loopbackOnly: true,
        createsOwnKey: true)

    /// Writes `json` to a temporary config file and returns its path.
    func configFile(_ json: String) throws -> String {
        let directory = try TestEnvironment.temporaryDirectory("orrery-config")
        let path = directory.appendingPathComponent("config.json").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func options(_ arguments: [String]) throws -> RuntimeOptions {
        try RuntimeOptions.parse(arguments)
    }

    static let operatorDID = SigningKey().did.string

    /// The identity settings every service needs, unless a test sets them itself.
    static func withIdentity(_ environment: [String: String]) -> [String: String] {
        var environment = environment
        if environment["ORRERY_IDENTITY_KEY"] == nil {
            environment["ORRERY_IDENTITY_KEY"] = "/etc/orrery/keys/service.key"
        }
        if environment["ORRERY_TRUST_OPERATOR"] == nil { environment["ORRERY_TRUST_OPERATOR"] = operatorDID }
        return environment
    }

    func load(
        _ arguments: [String] = [],
        environment: [String: String] = [:],
        service: ServiceDescription = Self.service
    ) async throws -> RuntimeSettings {
        try await RuntimeSettings.load(
            for: service, options: try options(arguments), environment: Self.withIdentity(environment))
    }

    func expectError(
        key: String,
        containing fragment: String,
        _ arguments: [String] = [],
        environment: [String: String] = [:],
        service: ServiceDescription = Self.service
    ) async throws {
        do {
            _ = try await RuntimeSettings.load(
                for: service, options: try options(arguments),
                environment: environment.merging(Self.withIdentity([:])) { mine, _ in mine })
            Issue.record("expected an invalid \(key)")
        } catch let error as ConfigurationError {
            #expect(error.key == key)
            #expect(error.reason.contains(fragment), "reason: \(error.reason)")
            #expect(!error.description.contains("\n"), "one line")
            #expect(error.description.contains(key))
        }
    }

    @Test("defaults apply when nothing else is set")
    func defaults() async throws {
        let missing = "/nonexistent/orrery-\(UUID().uuidString).json"
        let settings = try await RuntimeSettings.load(
            for: Self.service, options: try options([]), environment: Self.withIdentity(["ORRERY_UNRELATED": missing]))
        #expect(settings.grpc == .init(host: "127.0.0.1", port: 7402))
        #expect(settings.http == .init(host: "127.0.0.1", port: 9402))
        #expect(settings.logLevel == .info)
        #expect(settings.logFormat == .auto)
        #expect(
            settings.database
                == DatabaseSettings(
                    host: "127.0.0.1", port: 5432, user: "orrery", password: nil, database: "orrery", tls: .disable,
                    startupTimeout: .seconds(30)))
        #expect(settings.stateDirectory == "/var/lib/orrery/registry")
        #expect(settings.shutdownGrace == .seconds(10))
        #expect(settings.configFile == "/etc/orrery/registry.json")
        #expect(settings.keyFile == "/etc/orrery/keys/service.key")
        #expect(settings.trustedOperator == Self.operatorDID)
        #expect(settings.identityAddress == nil)
    }

    @Test("identity settings: a key file and the operator DID are required; the address must be host:port")
    func identitySettings() async throws {
        let config = try configFile("{}")
        try await expectError(
            key: "identity.key", containing: "required", ["--config", config], environment: ["ORRERY_IDENTITY_KEY": ""])
        try await expectError(
            key: "trust.operator", containing: "required", ["--config", config],
            environment: ["ORRERY_TRUST_OPERATOR": ""])
        try await expectError(
            key: "trust.operator", containing: "not a did:key", ["--config", config, "--trust-operator", "did:web:x"])
        try await expectError(
            key: "identity.address", containing: "host:port", ["--config", config, "--identity-address", "nowhere"])
        let settings = try await load(["--config", config, "--identity-address", "127.0.0.1:7401"])
        #expect(settings.identityAddress == "127.0.0.1:7401")
        // The agent makes its own key; the identity service keeps the log instead of following one.
        let agent = try await RuntimeSettings.load(
            for: Self.agent, options: try options(["--config", config]),
            environment: ["ORRERY_TRUST_OPERATOR": Self.operatorDID])
        #expect(agent.keyFile == nil)
    }

    @Test("the file overrides defaults, the environment the file, flags the environment")
    func precedence() async throws {
        let path = try configFile(
            """
            {"grpc": {"port": 1001, "host": "10.0.0.1"}, "tls": {"cert": "/tls/c.pem", "key": "/tls/k.pem"},
             "http": {"port": 2001}, "log": {"level": "debug"},
             "db": {"host": "db.file", "port": 6001, "password": "from-file"}}
            """)
        let fileOnly = try await load(["--config", path])
        #expect(fileOnly.grpc == .init(host: "10.0.0.1", port: 1001))
        #expect(fileOnly.http.port == 2001)
        #expect(fileOnly.logLevel == .debug)
        #expect(fileOnly.database?.host == "db.file")
        #expect(fileOnly.database?.password == "from-file")

        let environment = ["ORRERY_GRPC_PORT": "1002", "ORRERY_DB_HOST": "db.env", "ORRERY_DB_PASSWORD": "from-env"]
        let withEnvironment = try await load(["--config", path], environment: environment)
        #expect(withEnvironment.grpc == .init(host: "10.0.0.1", port: 1002))
        #expect(withEnvironment.http.port == 2001)
        #expect(withEnvironment.database?.host == "db.env")
        #expect(withEnvironment.database?.password == "from-env")

        let withFlags = try await load(
            ["--config", path, "--grpc-port", "1003", "--db-host", "db.flag", "--log-level", "warning"],
            environment: environment)
        #expect(withFlags.grpc == .init(host: "10.0.0.1", port: 1003))
        #expect(withFlags.database?.host == "db.flag")
        #expect(withFlags.database?.port == 6001)
        #expect(withFlags.logLevel == .warning)
        #expect(withFlags.database?.password == "from-env")
    }

    @Test("ready file and state directory pass through")
    func passThrough() async throws {
        let settings = try await load(
            ["--config", try configFile("{}"), "--ready-file", "/tmp/ready.json", "--state-dir", "/tmp/state"])
        #expect(settings.readyFile == "/tmp/ready.json")
        #expect(settings.stateDirectory == "/tmp/state")
    }

    @Test("a port that is not a number stops start-up naming the setting")
    func portNotANumber() async throws {
        try await expectError(
            key: "grpc.port", containing: "whole number", ["--config", try configFile("{}")],
            environment: ["ORRERY_GRPC_PORT": "abc"])
    }

    @Test("a port out of range stops start-up")
    func portOutOfRange() async throws {
        try await expectError(
            key: "http.port", containing: "outside", ["--config", try configFile("{}"), "--http-port", "70000"])
        try await expectError(
            key: "db.port", containing: "outside", ["--config", try configFile(#"{"db": {"port": 0}}"#)])
    }

    @Test("a file value of the wrong type stops start-up")
    func wrongTypeInFile() async throws {
        try await expectError(
            key: "grpc.port", containing: "whole number", ["--config", try configFile(#"{"grpc": {"port": "x"}}"#)])
    }

    @Test("an unknown choice names the allowed ones")
    func unknownChoice() async throws {
        try await expectError(
            key: "log.level", containing: "trace, debug", ["--config", try configFile("{}"), "--log-level", "loud"])
        try await expectError(
            key: "log.format", containing: "auto, json, text", ["--config", try configFile("{}")],
            environment: ["ORRERY_LOG_FORMAT": "xml"])
        try await expectError(
            key: "db.tls", containing: "disable, prefer, require",
            ["--config", try configFile(#"{"db": {"tls": "maybe"}}"#)])
    }

    @Test("empty required strings are refused")
    func emptyStrings() async throws {
        try await expectError(
            key: "db.host", containing: "empty", ["--config", try configFile(#"{"db": {"host": " "}}"#)])
        try await expectError(
            key: "state.dir", containing: "empty", ["--config", try configFile("{}"), "--state-dir", ""])
    }

    @Test("the shutdown grace must be 1 to 300 seconds")
    func shutdownGrace() async throws {
        try await expectError(
            key: "shutdown.grace", containing: "outside", ["--config", try configFile("{}"), "--shutdown-grace", "0"])
    }

    @Test("a named config file that is missing or malformed stops start-up")
    func badConfigFile() async throws {
        try await expectError(key: "config", containing: "cannot read", ["--config", "/nonexistent/orrery.json"])
        try await expectError(key: "config", containing: "cannot read", ["--config", try configFile("{not json")])
    }

    @Test("TLS: certificate and key come together, and a non-loopback gRPC listener needs them")
    func tls() async throws {
        let config = try configFile("{}")
        try await expectError(
            key: "grpc.host", containing: "needs tls.cert", ["--config", config, "--grpc-host", "0.0.0.0"])
        try await expectError(
            key: "tls.key", containing: "both or neither", ["--config", config, "--tls-cert", "/c.pem"])
        try await expectError(
            key: "tls.cert", containing: "both or neither", ["--config", config, "--tls-key", "/k.pem"])
        let settings = try await load([
            "--config", config, "--grpc-host", "0.0.0.0", "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--tls-ca",
            "/ca.pem",
        ])
        #expect(settings.tls?.certificate == "/c.pem" && settings.tls?.key == "/k.pem")
        #expect(settings.tlsTrustRoots == "/ca.pem")
        #expect(try await load(["--config", config]).tls == nil)
    }

    @Test("a non-loopback HTTP listener needs TLS: the JSON gateway carries bearer tokens")
    func httpNeedsTLS() async throws {
        let config = try configFile("{}")
        try await expectError(
            key: "http.host", containing: "needs tls.cert", ["--config", config, "--http-host", "0.0.0.0"])
        let settings = try await load([
            "--config", config, "--http-host", "0.0.0.0", "--tls-cert", "/c.pem", "--tls-key", "/k.pem",
        ])
        #expect(settings.http.host == "0.0.0.0" && settings.tls?.certificate == "/c.pem")
    }

    @Test("clock skew (at most 60 s), the connection limit and the idle timeout are settings")
    func connectionAndSkewSettings() async throws {
        let config = try configFile("{}")
        let defaults = try await load(["--config", config])
        #expect(defaults.clockSkew == 30 && defaults.maximumConnections == 4096 && defaults.idleTimeout == .seconds(120))
        #expect(defaults.authenticationFailures == .standard)
        let throttled = try await load(
            ["--config", config, "--auth-failures-per-minute", "30", "--auth-failure-burst", "5"])
        #expect(throttled.authenticationFailures == .init(rate: 0.5, burst: 5))
        try await expectError(
            key: "auth.failure_burst", containing: "outside", ["--config", config, "--auth-failure-burst", "0"])
        let set = try await load(
            ["--config", config, "--clock-skew", "0", "--max-connections", "64"],
            environment: ["ORRERY_CONNECTIONS_IDLE_TIMEOUT": "5"])
        #expect(set.clockSkew == 0 && set.maximumConnections == 64 && set.idleTimeout == .seconds(5))
        try await expectError(key: "auth.clock_skew", containing: "outside", ["--config", config, "--clock-skew", "61"])
        try await expectError(
            key: "connections.max", containing: "outside", ["--config", config, "--max-connections", "1"])
        try await expectError(
            key: "connections.idle_timeout", containing: "outside", ["--config", config, "--idle-timeout", "0"])
    }

    @Test("the device agent refuses non-loopback listeners")
    func agentLoopbackOnly() async throws {
        try await expectError(
            key: "grpc.host", containing: "not a loopback address",
            ["--config", try configFile("{}"), "--grpc-host", "0.0.0.0"],
            service: Self.agent)
        try await expectError(
            key: "http.host", containing: "not a loopback address", ["--config", try configFile("{}")],
            environment: ["ORRERY_HTTP_HOST": "192.0.2.1"], service: Self.agent)
        let settings = try await load(["--config", try configFile("{}"), "--grpc-host", "::1"], service: Self.agent)
        #expect(settings.grpc.host == "::1")
        #expect(settings.database == nil)
    }
}
