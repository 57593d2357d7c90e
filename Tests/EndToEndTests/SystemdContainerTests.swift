import Foundation
import OrreryDatabase
import OrreryIdentity
import OrreryTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `Deploy/install.sh` on a clean root: a systemd-nspawn container booted with systemd as PID 1 (a tmpfs root with
/// the host's /usr read-only, an empty /usr/local), the cluster role installed and configured as an operator would,
/// the five services started by systemd with their hardening, `DynamicUser` and credentials, stopped gracefully, and
/// a killed one restarted.
@Suite(
    "install.sh in a container booted with systemd", .serialized,
    .enabled(if: SystemdContainer.canBoot && TestDatabase.isConfigured, "needs root, systemd-nspawn and PostgreSQL"))
struct SystemdContainerTests {
    static let services = DeployTests.services

    @Test(
        "the cluster role installed by install.sh: every unit starts under systemd and answers over TLS, a service killed with SIGKILL is restarted, and systemctl stop ends each one gracefully"
    )
    func clusterUnderSystemd() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-nspawn") { directory in
                let setup = directory.appendingPathComponent("setup")
                let ports = try Dictionary(
                    uniqueKeysWithValues: Self.services.map {
                        ($0, (grpc: try TestPorts.unused(), http: try TestPorts.unused()))
                    })
                let authority = try await Self.stage(in: setup, database: database, ports: ports)

                let container = try await SystemdContainer.boot(
                    name: "orrery-\(getpid())", directory: directory,
                    binds: [
                        (TestEnvironment.binDirectory.path, "/opt/orrery/bin"),
                        (TestEnvironment.repositoryRoot.appendingPathComponent("Deploy").path, "/opt/orrery/Deploy"),
                        (setup.path, "/opt/orrery/setup"),
                    ])
                defer { container.stop() }
                let state = try await container.waitUntilBooted()
                #expect(["running", "degraded"].contains(state), "systemd in the container is \(state)")

                // As an operator would: install, put the credentials, certificates and configs in place, start.
                // Beside a whole `make test` on 2 cores this once took over 120 s (six ~180 MB debug builds copied and
                // stripped into the container's tmpfs, then systemd reloaded).
                let installed = try await container.run(
                    [
                        "/bin/bash", "/opt/orrery/Deploy/install.sh", "cluster", "--bin-dir", "/opt/orrery/bin",
                        "--no-start",
                    ], timeout: .seconds(600))
                #expect(
                    installed.status == 0 && installed.output.contains("enabled orrery.target"), "\(installed.output)")
                let configured = try await container.run(["/bin/bash", "/opt/orrery/setup/configure.sh"])
                #expect(configured.status == 0, "\(configured.output)")
                let started = try await container.run(["systemctl", "start", "orrery.target"])
                #expect(started.status == 0, "\(started.output)")

                // Every service runs as systemd started it and answers /healthz over TLS (the host shares its
                // network with the container).
                for service in Self.services {
                    let healthy = try await Self.waitForHealth(port: ports[service]?.http ?? 0, authority: authority)
                    let journal = try await container.run([
                        "journalctl", "-u", "orrery-\(service)", "--no-pager", "-o", "cat",
                    ])
                    #expect(healthy, "\(service) never answered ok; its journal:\n\(journal.output.suffix(3000))")
                    #expect(try await container.property("ActiveState", of: service) == "active")
                }

                // SIGKILL of the identity service: systemd restarts it (Restart=on-failure), and it serves again.
                let killedPID = try await container.property("MainPID", of: "identity")
                let killed = try await container.run(["kill", "-KILL", killedPID])
                #expect(killed.status == 0, "\(killed.output)")
                let deadline = ContinuousClock.now + .seconds(60)
                var restarts = "0"
                while restarts == "0", ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(250))
                    restarts = try await container.property("NRestarts", of: "identity")
                }
                #expect(restarts == "1")
                #expect(
                    try await Self.waitForHealth(port: ports["identity"]?.http ?? 0, authority: authority),
                    "the restarted identity service answers")
                #expect(try await container.property("MainPID", of: "identity") != killedPID)

                // systemctl stop: each service finishes within its grace and exits 0 (not killed by systemd).
                let stopped = try await container.run(["systemctl", "stop", "orrery.target"])
                #expect(stopped.status == 0, "\(stopped.output)")
                for service in Self.services {
                    #expect(try await container.property("Result", of: service) == "success", "\(service)")
                    #expect(try await container.property("ExecMainStatus", of: service) == "0", "\(service)")
                    // Its last words reach the journal a moment after systemd saw it exit.
                    var journal = ""
                    let written = ContinuousClock.now + .seconds(20)
                    while !journal.contains(#""msg":"stopped""#), ContinuousClock.now < written {
                        journal = try await container.run([
                            "journalctl", "-u", "orrery-\(service)", "--no-pager", "-o", "cat",
                        ]).output
                        if !journal.contains(#""msg":"stopped""#) { try await Task.sleep(for: .milliseconds(250)) }
                    }
                    #expect(journal.contains(#""msg":"stopped""#), "\(service): \(journal.suffix(2000))")
                }
            }
        }
    }

    /// Writes what the operator brings to the host into `setup`: the credentials (as `orrery operator init` lays them
    /// out), a CA and a certificate for 127.0.0.1, each service's config and environment file (the database
    /// password), and `configure.sh` that puts them in place under /etc/orrery. Returns the CA's path.
    static func stage(
        in setup: URL, database: TestDatabase, ports: [String: (grpc: Int, http: Int)]
    ) async throws -> String {
        let etc = setup.appendingPathComponent("etc-orrery")
        try FileManager.default.createDirectory(at: etc, withIntermediateDirectories: true)
        let network = try TestNetwork(directory: etc.appendingPathComponent("credentials"))
        let tls = try await TestCertificates.make(in: setup.appendingPathComponent("tls-made"), ip: "127.0.0.1")
        let tlsDirectory = etc.appendingPathComponent("tls")
        try FileManager.default.createDirectory(at: tlsDirectory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: tls.authority, toPath: tlsDirectory.appendingPathComponent("ca.crt").path)
        func address(_ service: String) -> String { "127.0.0.1:\(ports[service]?.grpc ?? 0)" }
        let settings = database.settings
        for service in services {
            try FileManager.default.copyItem(
                atPath: tls.serverCertificate, toPath: tlsDirectory.appendingPathComponent("\(service).crt").path)
            try FileManager.default.copyItem(
                atPath: tls.serverKey, toPath: tlsDirectory.appendingPathComponent("\(service).key").path)
            var config: [String: Any] = [
                "grpc": ["host": "127.0.0.1", "port": ports[service]?.grpc ?? 0],
                "http": ["host": "127.0.0.1", "port": ports[service]?.http ?? 0],
                "db": [
                    "host": settings.host, "port": settings.port, "user": settings.user,
                    "database": settings.database,
                ],
                "tls": [
                    "cert": "/etc/orrery/tls/\(service).crt",
                    "key": "/run/credentials/orrery-\(service).service/tls.key", "ca": "/etc/orrery/tls/ca.crt",
                ],
                "trust": ["operator": network.operatorKey.did.string],
            ]
            if service != "identity" { config["identity"] = ["address": address("identity")] }
            let gateway = try #require(network.serviceKeys["settlement-gateway"]).did.string
            let notary = try #require(network.serviceKeys["contract-notary"]).did.string
            switch service {
            case "orchestrator":
                config["registry"] = ["address": address("registry")]
                config["notary"] = ["address": address("contract-notary")]
                config["settlement"] = ["address": address("settlement-gateway")]
            case "contract-notary":
                config["registry"] = ["address": address("registry")]
                config["settlement"] = ["did": gateway]
            case "settlement-gateway":
                config["notary"] = ["did": notary, "address": address("contract-notary")]
            default: break
            }
            try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
                .write(to: etc.appendingPathComponent("\(service).json"))
            try "ORRERY_DB_PASSWORD=\(settings.password ?? "")\n".write(
                to: etc.appendingPathComponent("\(service).env"), atomically: true, encoding: .utf8)
        }
        // Secrets root's alone, as a deployment keeps them (the services get theirs as systemd credentials).
        try """
        set -euo pipefail
        cp -a /opt/orrery/setup/etc-orrery/. /etc/orrery/
        chown -R root:root /etc/orrery
        chmod 0600 /etc/orrery/*.env /etc/orrery/tls/*.key /etc/orrery/credentials/*/service.key \\
            /etc/orrery/credentials/operator.key
        chmod 0644 /etc/orrery/*.json /etc/orrery/tls/*.crt
        """.write(to: setup.appendingPathComponent("configure.sh"), atomically: true, encoding: .utf8)
        return tls.authority
    }

    /// Whether `https://127.0.0.1:PORT/healthz` answers `ok` within 60 s, verified against `authority`.
    static func waitForHealth(port: Int, authority: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let (status, output) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/curl"),
                arguments: ["-sS", "--max-time", "5", "--cacert", authority, "https://127.0.0.1:\(port)/healthz"])
            if status == 0, output.hasPrefix("ok") { return true }
            try await Task.sleep(for: .milliseconds(250))
        }
        return false
    }
}

/// A container booted by systemd-nspawn with systemd as its PID 1: a tmpfs root with the host's /usr read-only
/// (`--volatile=yes`), an empty /usr/local, the Swift runtime libraries the debug executables link, and `binds`
/// read-only. Commands run inside with nsenter.
struct SystemdContainer {
    let nspawn: ChildProcess
    let initPID: Int32

    static var canBoot: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-nspawn")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter")
    }

    static func boot(name: String, directory: URL, binds: [(String, String)]) async throws -> SystemdContainer {
        var arguments = [
            "--keep-unit", "--register=no", "--volatile=yes", "--directory=/", "--machine=\(name)", "--boot",
            "--console=pipe", "--tmpfs=/usr/local",
        ]
        for library in try await runtimeLibraryDirectories() { arguments.append("--bind-ro=\(library)") }
        for (source, target) in binds { arguments.append("--bind-ro=\(source):\(target)") }
        let nspawn = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/systemd-nspawn"), arguments: arguments, outputDirectory: directory)
        // The container's PID 1 is a grandchild of nspawn (its first child only sets the namespaces up and exits):
        // the descendant that is process 1 in its own PID namespace and has become systemd.
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let initPID = containerInit(under: nspawn.pid) {
                return SystemdContainer(nspawn: nspawn, initPID: initPID)
            }
            guard nspawn.isRunning else {
                throw ChildProcessError.exitedEarly(
                    name: "systemd-nspawn", status: nspawn.process.terminationStatus, output: nspawn.output)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        nspawn.signal(SIGKILL)
        throw ChildProcessError.timedOut(name: "systemd-nspawn", output: nspawn.output)
    }

    /// The descendant of `root` that is PID 1 of a PID namespace of its own and runs systemd, if there is one yet.
    static func containerInit(under root: Int32) -> Int32? {
        var pending = [root]
        while let pid = pending.popLast() {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            for task in tasks {
                let children =
                    (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
                pending += children.split(separator: " ").compactMap { Int32($0) }
            }
            guard pid != root,
                let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let namespaced = status.split(separator: "\n").first(where: { $0.hasPrefix("NSpid:") }),
                case let ids = namespaced.dropFirst("NSpid:".count).split(whereSeparator: \.isWhitespace),
                ids.count >= 2, ids.last == "1",
                let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                command.trimmingCharacters(in: .whitespacesAndNewlines) == "systemd"
            else { continue }
            return pid
        }
        return nil
    }

    /// Directories outside /usr holding the shared libraries the executables link (the toolchain's Swift runtime).
    static func runtimeLibraryDirectories() async throws -> [String] {
        let (_, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/ldd"), arguments: [TestEnvironment.executable("registry").path])
        let paths = output.split(separator: "\n").compactMap { line -> String? in
            guard let arrow = line.range(of: "=> /") else { return nil }
            let path = line[line.index(before: arrow.upperBound)...].split(separator: " ").first.map(String.init)
            return path.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
        }
        return Array(Set(paths.filter { !$0.hasPrefix("/usr/") && !$0.hasPrefix("/lib") })).sorted()
    }

    /// Runs `command` inside the container (all its namespaces), for at most `timeout`.
    func run(_ command: [String], timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/nsenter"), arguments: ["-t", String(initPID), "-a"] + command,
            timeout: timeout)
    }

    /// Waits until systemd has finished booting; returns its state (`running`, or `degraded` when some unit of the
    /// host's own image failed in the container).
    func waitUntilBooted() async throws -> String {
        let deadline = ContinuousClock.now + .seconds(120)
        var state = ""
        while ContinuousClock.now < deadline {
            state = try await run(["systemctl", "is-system-running"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if ["running", "degraded"].contains(state) { return state }
            try await Task.sleep(for: .milliseconds(250))
        }
        return state
    }

    /// A property of `orrery-SERVICE.service` (`systemctl show -p`).
    func property(_ name: String, of service: String) async throws -> String {
        try await run(["systemctl", "show", "orrery-\(service).service", "-p", name, "--value"]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Powers the container off (SIGTERM to nspawn halts it), killing it when that takes over 30 s.
    func stop() {
        nspawn.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while nspawn.isRunning, Date() < deadline { usleep(100_000) }
        if nspawn.isRunning { nspawn.signal(SIGKILL) }
    }
}
