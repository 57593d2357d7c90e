import Foundation
import OrreryRuntimeCore
import OrreryTestSupport
import Testing

/// Every ```sh block of the README runs, as written, in order, as one shell session against the constellation
/// `make run` starts (its own script, in a scratch directory, on other ports): so the README cannot rot. A block that
/// cannot run there says why, on the line before it: `<!-- README-test: skip — the reason -->`.
@Suite(
    "README examples", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs what `make test` installs (PostgreSQL, bubblewrap)"))
struct ReadmeExamplesTests {
    /// A fenced shell block: where it starts, its text, and why it is skipped (nil: it runs).
    struct Block {
        var line: Int
        var text: String
        var skipped: String?
    }

    static let skipMarker = "<!-- README-test: skip — "

    static func blocks(of readme: String) -> [Block] {
        var blocks: [Block] = []
        let lines = readme.components(separatedBy: "\n")
        var index = 0
        while index < lines.count {
            guard lines[index].hasPrefix("```sh") else {
                index += 1
                continue
            }
            let start = index
            var body: [String] = []
            index += 1
            while index < lines.count, !lines[index].hasPrefix("```") {
                body.append(lines[index])
                index += 1
            }
            let before = start > 0 ? lines[start - 1] : ""
            let reason =
                before.hasPrefix(skipMarker) && before.hasSuffix("-->")
                ? String(before.dropFirst(skipMarker.count).dropLast(3)).trimmingCharacters(in: .whitespaces) : nil
            blocks.append(Block(line: start + 1, text: body.joined(separator: "\n"), skipped: reason))
            index += 1
        }
        return blocks
    }

    /// The README's ports (gRPC 7401–7406, HTTP 9401–9406, the ingress's 7480) moved to `base`, as `ORRERY_RUN_PORT_BASE` moves them.
    static func moved(_ text: String, base: Int) -> String {
        var text = text
        for offset in 1...6 {
            text = text.replacingOccurrences(of: "127.0.0.1:740\(offset)", with: "127.0.0.1:\(base + offset)")
            text = text.replacingOccurrences(of: "127.0.0.1:940\(offset)", with: "127.0.0.1:\(base + 2000 + offset)")
        }
        // The ingress listens on the base's port 80.
        return text.replacingOccurrences(of: ".localhost:7480", with: ".localhost:\(base + 80)")
    }

    /// A port base whose thirteen ports are free now.
    static func freeBase() throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 200...290) * 100
            let ports = (1...6).flatMap { [base + $0, base + 2000 + $0] } + [base + 80]
            if ports.allSatisfy(isFree) { return base }
        }
        throw NoFreePorts()
    }

    struct NoFreePorts: Error, CustomStringConvertible {
        var description: String { "no range of thirteen free loopback ports found in 50 tries" }
    }

    static func isFree(_ port: Int) -> Bool {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// `make run`'s script with `.run/` in `work`, on ports from `base`, once it says the constellation runs. It stops
    /// everything on SIGTERM, as on Ctrl-C; children of the test runner inherit its blocked signals, so they are
    /// unblocked first.
    static func makeRun(in work: URL, base: Int, output: URL) async throws -> ChildProcess {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tools/scripts/run-local.sh").path
        let child = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            arguments: [
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv('/bin/bash', ['bash', sys.argv[1]])",
                script,
            ],
            environment: [
                "ORRERY_RUN_DIR": work.appendingPathComponent(".run").path,
                "ORRERY_RUN_BIN": TestEnvironment.binDirectory.path, "ORRERY_RUN_PORT_BASE": String(base),
            ], outputDirectory: output)
        _ = try await child.firstLine(timeout: .seconds(240)) { $0.hasPrefix("Orrery is running") ? true : nil }
        return child
    }

    @Test("the README's blocks are found, and each skipped one says why")
    func markers() throws {
        let readme = try String(
            contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let blocks = Self.blocks(of: readme)
        #expect(blocks.filter { $0.skipped == nil }.count >= 6, "\(blocks.map(\.line))")
        for block in blocks {
            if let reason = block.skipped { #expect(reason.count >= 15, "line \(block.line): say why it cannot run") }
        }
        // A marker that is not right before a block skips nothing: it is a mistake.
        let markers = readme.components(separatedBy: "\n").filter { $0.hasPrefix(Self.skipMarker) }.count
        #expect(markers == blocks.filter { $0.skipped != nil }.count)
    }

    @Test(
        "every unmarked shell block of the README runs as written under make run, in order, as one session; every series the Grafana dashboard queries is exported with its help; a second make run carries on where the first stopped"
    )
    func examplesRun() async throws {
        let readme = try String(
            contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let runnable = Self.blocks(of: readme).filter { $0.skipped == nil }
        try await TestEnvironment.withTemporaryDirectory("readme") { directory in
            // The user's checkout: the build, the examples; `make run`'s .run/ is made by its script here.
            let work = directory.appendingPathComponent("checkout")
            try FileManager.default.createDirectory(
                at: work.appendingPathComponent(".build"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                at: work.appendingPathComponent(".build/debug"), withDestinationURL: TestEnvironment.binDirectory)
            try FileManager.default.createSymbolicLink(
                at: work.appendingPathComponent("Deploy"),
                withDestinationURL: TestEnvironment.repositoryRoot.appendingPathComponent("Deploy"))
            let base = try Self.freeBase()
            let constellation = try await Self.makeRun(in: work, base: base, output: directory)
            defer { constellation.signal(SIGTERM) }
            // One session: a failing command stops it and names its block.
            var script = """
                set -eEuo pipefail
                trap 'echo "README block at line $block failed (exit $?): $BASH_COMMAND" >&2' ERR
                cd '\(work.path)'
                export XDG_STATE_HOME='\(directory.appendingPathComponent("state").path)'
                export XDG_CONFIG_HOME='\(directory.appendingPathComponent("config").path)'

                """
            for block in runnable {
                script += "block=\(block.line)\n\(Self.moved(block.text, base: base))\necho \"::ran \(block.line)\"\n"
            }
            let scriptFile = directory.appendingPathComponent("readme.sh")
            try script.write(to: scriptFile, atomically: true, encoding: .utf8)
            let (status, output) = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/bash"), arguments: [scriptFile.path], timeout: .seconds(600))
            // Every series the Grafana dashboard queries is exported by some service, each with its help text.
            var exposition = ""
            for offset in 1...6 {
                let (_, text) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/curl"),
                    arguments: ["-sS", "http://127.0.0.1:\(base + 2000 + offset)/metrics"])
                #expect(text.contains("# TYPE "), "service \(offset) exports nothing: \(text.prefix(300))")
                exposition += text + "\n"
            }
            let lines = exposition.split(separator: "\n")
            let typed = Set(
                lines.filter { $0.hasPrefix("# TYPE ") }.compactMap { $0.split(separator: " ").dropFirst(2).first })
            let helped = Set(
                lines.filter { $0.hasPrefix("# HELP ") }.compactMap { $0.split(separator: " ").dropFirst(2).first })
            #expect(typed.subtracting(helped).isEmpty, "series without # HELP: \(typed.subtracting(helped).sorted())")
            let dashboard = try String(
                contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/grafana/orrery.json"),
                encoding: .utf8)
            let queried = Set(
                dashboard.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init)
                    .filter { ["grpc_", "orrery_", "settlement_"].contains(where: $0.hasPrefix) }
                    .map { $0.hasSuffix("_bucket") ? String($0.dropLast(7)) : $0 })
            #expect(queried.count >= 12, "\(queried)")
            // A running allocation's own series exist only while it runs (AgentChannelTests scrapes them then).
            let whileAllocationsRun: Set = [
                "orrery_agent_allocation_cpu_seconds", "orrery_agent_allocation_memory_bytes",
            ]
            let missing = queried.subtracting(typed.map(String.init)).subtracting(whileAllocationsRun)
            #expect(missing.isEmpty, "the dashboard queries series no service exports: \(missing.sorted())")
            #expect(
                whileAllocationsRun.isSubset(of: queried)
                    && queried.subtracting(MetricCatalog.help.keys).isEmpty,
                "every series the dashboard queries has its help text: \(queried.subtracting(MetricCatalog.help.keys))")

            constellation.signal(SIGTERM)
            let stopped = await constellation.waitForExit(timeout: .seconds(60))
            #expect(status == 0, "\(output)\n--- make run:\n\(constellation.output.suffix(3000))")
            for block in runnable {
                #expect(
                    output.contains("::ran \(block.line)\n"), "the block at README line \(block.line) did not finish")
            }
            #expect(stopped != nil, "make run's script did not stop on SIGTERM: \(constellation.output.suffix(2000))")

            // `make run` again: it carries on where it stopped — the deployments are there, the demo device takes work.
            let again = try await Self.makeRun(in: work, base: base, output: directory)
            defer { again.signal(SIGTERM) }
            let operatorArguments = [
                "--orchestrator", "127.0.0.1:\(base + 3)", "--key",
                work.appendingPathComponent(".run/credentials/operator.key").path,
            ]
            let (listed, deployments) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"), arguments: ["status"] + operatorArguments)
            #expect(listed == 0 && deployments.contains("completed   "), "\(deployments)")
            let (ranAgain, second) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"),
                arguments: [
                    "run", "-q", "--wait",
                    TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/cpu-batch.yaml").path,
                ]
                    + operatorArguments)
            #expect(
                ranAgain == 0 && second.hasPrefix("dep_"), "the demo device of a second make run takes work: \(second)")
            again.signal(SIGTERM)
            let stoppedAgain = await again.waitForExit(timeout: .seconds(60))
            // Each service's and the demo agent's own log says where a slow stop spent its time.
            let logs = [
                "identity", "registry", "orchestrator", "contract-notary", "settlement-gateway", "device-agent",
            ].map { name in
                let log = work.appendingPathComponent(".run/logs/\(name).log")
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? "(no log)"
                return "--- \(name):\n\(text.suffix(1200))"
            }
            #expect(
                stoppedAgain != nil,
                "the second make run did not stop on SIGTERM: \(again.output.suffix(1500))\n\(logs.joined(separator: "\n"))"
            )
        }
    }
}
