import Foundation
import GRPCCore
import DeviceAgent
import OrreryDatabase
import OrreryOCI
import OrreryProto
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// Jobs that bring their own software: an image built with umoci, pushed with skopeo to a real registry on
/// loopback (docker-registry behind TLS, token authentication), resolved by the orchestrator at submit and run by a
/// real agent with runc.
@Suite(
    "Image jobs", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"),
    .enabled(
        if: RegistryFixture.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc"),
        "needs docker-registry, umoci, skopeo and runc (make test installs them)"))
struct ImageJobTests {
    static func imageSpec(_ image: String, args: [String] = []) -> Orrery_Orchestrator_V1_WorkloadSpec {
        var spec = OrchestratorTests.spec(cores: 1)
        spec.allocations[0].executor = .oci
        spec.allocations[0].clearArtifact()
        spec.allocations[0].image = image
        spec.allocations[0].args = args
        spec.allocations[0].resources.ramMib = 64
        spec.allocations[0].maxDurationSeconds = 120
        spec.allocations[0].outputs = ["out.txt"]
        return spec
    }

    /// A constellation whose orchestrator and one agent trust `registry` (on loopback, so private addresses are
    /// allowed), the agent killed afterwards, and a consumer.
    static func withImageConstellation(
        _ name: String, trusting registry: RegistryFixture,
        owner: String = #"{"location": {"country": "SE"}, "prices": {"per_core_hour": 5}}"#,
        _ body: (JobConstellation, TestAgent, OrchestratorTests.Consumer) async throws -> Void
    ) async throws {
        let trust = ["--images-registry-ca", registry.ready.ca, "--images-registry-addresses", "any"]
        try await JobConstellation.run(name, orchestratorArguments: trust) { constellation in
            let agent = try await constellation.startAgent("imager", owner: owner, extraArguments: trust)
            defer { agent.service.child.signal(SIGKILL) }
            try await body(
                constellation, agent, try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey))
        }
    }

    /// Debian's arm64 busybox-static, as `Tools/scripts/emulation-setup.sh` (run by `make test`) leaves it.
    static let arm64Busybox = TestEnvironment.repositoryRoot.appendingPathComponent(".cache/arm64/busybox").path

    /// Why the emulation test cannot run here (nil: it can).
    static var emulationMissing: String? {
        guard FileManager.default.isExecutableFile(atPath: arm64Busybox) else {
            return "no arm64 busybox at \(arm64Busybox) (Tools/scripts/emulation-setup.sh fetches it)"
        }
        if case .failure(let refusal) = BinfmtEmulation.handler(
            for: Platform(architecture: "arm64", variant: "v8"), among: BinfmtEmulation.handlers())
        {
            return "\(refusal) (Tools/scripts/emulation-setup.sh registers qemu-user-static's)"
        }
        return nil
    }

    @Test(
        "an arm64-only image runs on this amd64 device through QEMU user emulation once its owner opts in: offered as linux/arm64, placed, run, and it says aarch64",
        .enabled(if: emulationMissing == nil, "\(emulationMissing ?? "")"))
    func emulatedImage() async throws {
        try await RegistryFixture.with("token") { registry in
            _ = try await registry.push("arm64-busybox:" + Self.arm64Busybox, as: "public/arm64:v1")
            let owner = #"{"prices": {"per_core_hour": 5}, "emulated_platforms": ["linux/arm64"]}"#
            try await Self.withImageConstellation("orrery-emulated", trusting: registry, owner: owner) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                let spec = Self.imageSpec(registry.ready.address + "/public/arm64:v1")
                try await OrchestratorTests.waitUntilChosen(
                    agent.did, for: spec, consumer, orchestrator, within: .seconds(60))
                #expect(agent.service.child.output.contains("images for linux/arm64/v8 run emulated"))
                let submitted = try await consumer.with(orchestrator) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = spec
                            $0.idempotencyKey = UUID().uuidString
                        })
                }
                #expect(submitted.spec.allocations[0].imagePlatforms == ["linux/arm64/v8"])
                let ended = try await OrchestratorTests.ended(
                    submitted.id, of: consumer, on: orchestrator, within: .seconds(90))
                #expect(ended.state == .completed, "\(ended.state): \(ended.reason)")
                let lines = try await consumer.with(orchestrator) { client in
                    try await client.streamLogs(.with { $0.id = submitted.id }) { response in
                        try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) { $0.append($1) }
                    }
                }
                let stdout = String(decoding: lines.filter { $0.stream == .stdout }.flatMap(\.data), as: UTF8.self)
                #expect(stdout == "aarch64\n", "\(stdout)")
            }
        }
    }

    @Test(
        "orrery exec into an image's container: the runtime's exec, under the container's seccomp filter and user, no capabilities, no new privileges; with a terminal of its size, resized"
    )
    func execInImage() async throws {
        try await RegistryFixture.with("token") { registry in
            _ = try await registry.push("busybox", as: "public/busybox:v1")
            try await Self.withImageConstellation("orrery-image-exec", trusting: registry) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                let image = registry.ready.address + "/public/busybox:v1"
                try await OrchestratorTests.waitUntilChosen(
                    agent.did, for: Self.imageSpec(image), consumer, orchestrator, within: .seconds(60))
                var spec = Self.imageSpec(
                    image,
                    args: [
                        "/bin/sh", "-c", "id -u > /work/uid; readlink /proc/self/ns/pid > /work/pidns; exec sleep 600",
                    ])
                spec.allocations[0].name = "web"
                spec.allocations[0].outputs = []
                spec.allocations[0].maxDurationSeconds = 600
                let job = try await consumer.submit(spec, to: orchestrator, paid: false)
                _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running") {
                    $0.run.state == .running
                }
                let run = try await HealthCheckTests.allocationDirectory(of: "imager", in: constellation.directory)
                let deadline = ContinuousClock.now + .seconds(60)
                while !FileManager.default.fileExists(atPath: run.appendingPathComponent("work/pidns").path),
                    ContinuousClock.now < deadline
                {
                    try await Task.sleep(for: .milliseconds(100))
                }
                let checks = try await ExecTests.exec(
                    orchestrator, key: consumer.key, deployment: job.id,
                    command: [
                        "/bin/sh", "-c",
                        """
                        echo "uid $(id -u) $(cat /work/uid)"
                        echo "pid $(readlink /proc/self/ns/pid) $(cat /work/pidns)"
                        grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/self/status
                        exit 3
                        """,
                    ], input: [.with { $0.stdinEnd = true }])
                let lines = checks.stdout.split(separator: "\n").map(String.init)
                for kind in ["uid", "pid"] {
                    let seen = lines.first { $0.hasPrefix(kind + " ") }?.split(separator: " ").dropFirst() ?? []
                    #expect(seen.count == 2 && seen.first == seen.last, "\(kind): \(checks)")
                }
                #expect(lines.contains { $0.hasPrefix("Seccomp:") && $0.hasSuffix("2") }, "\(checks)")
                #expect(lines.contains { $0.hasPrefix("NoNewPrivs:") && $0.hasSuffix("1") }, "\(checks)")
                #expect(lines.contains { $0.hasPrefix("CapEff:") && $0.hasSuffix("0000000000000000") }, "\(checks)")
                #expect(checks.exit?.exitCode == 3 && checks.exit?.hasLogIndex == true, "\(checks)")
                let terminal = try await ExecTests.exec(
                    orchestrator, key: consumer.key, deployment: job.id,
                    command: ["/bin/sh"], tty: true,
                    input: [
                        .with { $0.stdin = Data("stty size\n".utf8) },
                        .with {
                            $0.resize = .with {
                                $0.rows = 40
                                $0.columns = 120
                            }
                        },
                        .with { $0.stdin = Data("stty size; exit 5\n".utf8) },
                    ], pauses: true)
                // The runtime relays the resize to the container's own terminal.
                #expect(terminal.stdout.contains("30 100") && terminal.stdout.contains("40 120"), "\(terminal)")
                #expect(terminal.exit?.exitCode == 5, "\(terminal)")
                _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
            }
        }
    }

    @Test(
        "an image service: running once its health check passes; its check failing, it is restarted in place — its container removed and run again under the same id"
    )
    func imageServiceRestarts() async throws {
        try await RegistryFixture.with("token") { registry in
            _ = try await registry.push("busybox", as: "public/busybox:v1")
            try await Self.withImageConstellation("orrery-image-health", trusting: registry) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                let image = registry.ready.address + "/public/busybox:v1"
                try await OrchestratorTests.waitUntilChosen(
                    agent.did, for: Self.imageSpec(image), consumer, orchestrator, within: .seconds(60))
                var spec = Self.imageSpec(
                    image,
                    args: [
                        "/bin/sh", "-c",
                        "echo run >> /work/runs; echo ok > /work/ok; exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /work",
                    ])
                spec.allocations[0].outputs = []
                spec.allocations[0].maxDurationSeconds = 600
                HealthCheckTests.servesOK(&spec.allocations[0])
                spec.allocations[0].health.timeoutSeconds = 1
                spec.allocations[0].health.unhealthyThreshold = 2
                let job = try await consumer.submit(spec, to: orchestrator, paid: false)
                _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running and healthy") {
                    $0.run.state == .running && $0.run.health.status == .healthy
                }
                let run = try await HealthCheckTests.allocationDirectory(of: "imager", in: constellation.directory)
                try FileManager.default.removeItem(at: run.appendingPathComponent("work/ok"))
                let restarted = try await HealthCheckTests.until(
                    job.id, consumer, orchestrator, "restarted once, healthy again"
                ) {
                    $0.run.health.restarts == 1 && $0.run.health.status == .healthy
                }
                #expect(restarted.run.state == .running)
                #expect(
                    try String(contentsOf: run.appendingPathComponent("work/runs"), encoding: .utf8) == "run\nrun\n")
                _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
            }
        }
    }

    @Test(
        "an image job: the tag is pinned at submit, the image's config and the spec's args apply, the root is read-only, /work is written, outputs return; a second run transfers no layer; a platform the image lacks is explained"
    )
    func imageJob() async throws {
        try await RegistryFixture.with("token") { registry in
            let pushed = try await registry.push("busybox", as: "public/busybox:v1")
            _ = try await registry.push("arm-only", as: "public/arm:v1")
            try await Self.withImageConstellation("orrery-image-job", trusting: registry) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                let image = registry.ready.address + "/public/busybox:v1"
                // The agent advertises `oci` once its runtime ran a test container (after its join).
                try await OrchestratorTests.waitUntilChosen(
                    agent.did, for: Self.imageSpec(image), consumer, orchestrator, within: .seconds(60))
                let script =
                    "cat /etc/greeting; id -u; echo \"GREETING=$GREETING\"; pwd; touch /etc/written 2>/dev/null || echo read-only; echo forty-two > /work/out.txt"

                func run(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) async throws -> (
                    Orrery_Orchestrator_V1_Deployment, String
                ) {
                    let submitted = try await consumer.with(orchestrator) { client in
                        try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = spec
                                $0.idempotencyKey = UUID().uuidString
                            })
                    }
                    let states = try await consumer.with(orchestrator) { client in
                        try await client.watchDeployment(.with { $0.id = submitted.id }) { response in
                            var seen: [String] = []
                            for try await event in response.messages {
                                seen.append("\(event.state): \(event.reason)")
                                if [.completed, .failed, .cancelled].contains(event.state) { break }
                            }
                            return seen
                        }
                    }
                    #expect(states.last?.hasPrefix("completed") == true, "\(states)")
                    let lines = try await consumer.with(orchestrator) { client in
                        try await client.streamLogs(.with { $0.id = submitted.id }) { response in
                            try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) {
                                $0.append($1)
                            }
                        }
                    }
                    let finished = try await consumer.with(orchestrator) {
                        try await $0.getDeployment(.with { $0.id = submitted.id })
                    }
                    return (
                        finished, String(decoding: lines.filter { $0.stream == .stdout }.flatMap(\.data), as: UTF8.self)
                    )
                }

                let (first, stdout) = try await run(Self.imageSpec(image, args: ["/bin/sh", "-c", script]))
                #expect(first.spec.allocations[0].image == image)
                #expect(first.spec.allocations[0].imageDigest == pushed.digest.description)
                #expect(first.spec.allocations[0].imagePlatforms == ["linux/amd64"])
                #expect(stdout == "hello from the image\n0\nGREETING=image\n/\nread-only\n", "\(stdout)")
                let outputs = try await consumer.with(orchestrator) {
                    try await $0.getOutputs(.with { $0.id = first.id })
                }
                #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "forty-two\n")
                let replica = try #require(first.assignments.first).run
                #expect(replica.exitCode == 0 && replica.usage.peakMemoryBytes > 0, "\(replica)")
                // The layer crossed the network once (the orchestrator read the configuration for its platform).
                func layerDownloads() -> Int {
                    registry.blobDownloads().filter { $0.contains(pushed.layers[0].description) }.count
                }
                #expect(layerDownloads() == 1)

                // The image's own command (Cmd: cat /etc/greeting), from the store: no blob crosses the network.
                let (second, greeting) = try await run(Self.imageSpec(image))
                #expect(greeting == "hello from the image\n")
                #expect(second.spec.allocations[0].imageDigest == pushed.digest.description)
                #expect(layerDownloads() == 1)

                // An image only for arm64: no device here runs it, and the explanation says why.
                let explanation = try await consumer.with(orchestrator) { client in
                    try await client.explainPlacement(
                        .with { $0.spec = Self.imageSpec(registry.ready.address + "/public/arm:v1") })
                }
                #expect(!explanation.placeable)
                #expect(
                    explanation.allocations.first?.eliminated.contains { $0.constraint == "image platform" } == true,
                    "\(explanation)")

                // A layer whose bytes the registry changed: the device refuses it by its digest and the deployment
                // fails with that reason; nothing of it runs.
                let tampered = try await registry.push("busybox", as: "public/tampered:v1")
                try await registry.tamper(tampered.layers[0])
                let refused = try await consumer.with(orchestrator) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = Self.imageSpec(registry.ready.address + "/public/tampered:v1")
                            $0.idempotencyKey = UUID().uuidString
                        })
                }
                let ending = try await consumer.with(orchestrator) { client in
                    try await client.watchDeployment(.with { $0.id = refused.id }) { response in
                        var last = ""
                        for try await event in response.messages {
                            last = "\(event.state): \(event.reason)"
                            if [.running, .completed, .failed, .cancelled].contains(event.state) { break }
                        }
                        return last
                    }
                }
                #expect(ending.hasPrefix("failed") && ending.contains(tampered.layers[0].description), "\(ending)")

                // An image that is not there is refused at submit, by name.
                await #expect {
                    _ = try await consumer.with(orchestrator) { client in
                        try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = Self.imageSpec(registry.ready.address + "/public/missing:v1")
                                $0.idempotencyKey = UUID().uuidString
                            })
                    }
                } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .invalidArgument && error.message.contains("public/missing")
                }
            }
        }
    }

    @Test(
        "a private OCI artifact as an input: without a pull token the start fails naming the input; with the consumer's token, sealed to the device, it is fetched, verified and read; a token for no oci:// input is refused; the token in no log"
    )
    func privateInput() async throws {
        try await RegistryFixture.with("token") { registry in
            try await Self.withImageConstellation("orrery-private-input", trusting: registry) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                let file = constellation.directory.appendingPathComponent("dataset.bin")
                try Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: file)
                let pushed = try await registry.push("artifact:" + file.path, as: "demo/dataset:v1")
                let layer = try #require(pushed.layers.first)
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                var spec = OrchestratorTests.spec(cores: 1)
                spec.allocations[0].artifact = .with { $0.text = "sha256sum /inputs/data | cut -c1-64" }
                spec.allocations[0].maxDurationSeconds = 120
                spec.allocations[0].inputs = [
                    .with {
                        $0.name = "data"
                        $0.source = "oci://\(registry.ready.address)/demo/dataset@\(pushed.digest)"
                        $0.sha256 = layer.hex
                    }
                ]
                func run(tokens: [String: String]) async throws -> (Orrery_Orchestrator_V1_Deployment, String) {
                    let submitted = try await consumer.with(orchestrator) { client in
                        try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = spec
                                $0.idempotencyKey = UUID().uuidString
                                $0.inputTokens = tokens
                            })
                    }
                    let ended = try await OrchestratorTests.ended(
                        submitted.id, of: consumer, on: orchestrator, within: .seconds(90))
                    let lines = try await consumer.with(orchestrator) { client in
                        try await client.streamLogs(.with { $0.id = submitted.id }) { response in
                            try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) {
                                $0.append($1)
                            }
                        }
                    }
                    return (
                        ended, String(decoding: lines.filter { $0.stream == .stdout }.flatMap(\.data), as: UTF8.self)
                    )
                }

                let (refused, _) = try await run(tokens: [:])
                #expect(refused.state == .failed, "\(refused.state)")
                #expect(refused.reason.contains("input data"), "\(refused.reason)")
                await OrchestratorTests.expectStatus(.invalidArgument, containing: "input_tokens[main/nope]") {
                    _ = try await run(tokens: ["main/nope": "x"])
                }
                let token = try #require(
                    try await registry.client("reader").pullToken(
                        repository: "demo/dataset", reference: pushed.digest.description))
                let (fetched, stdout) = try await run(tokens: ["main/data": token])
                #expect(fetched.state == .completed, "\(fetched.state): \(fetched.reason)")
                #expect(stdout == layer.hex + "\n", "\(stdout)")
                for output in [agent.service.child.output, orchestrator.child.output] {
                    #expect(!output.contains(token))
                }

                // The CLI gets the input's token from the registry with a Docker-style auth file (`--registry-auth`).
                let password = try #require(registry.ready.users["reader"])
                let auth = Data("reader:\(password)".utf8).base64EncodedString()
                let authFile = constellation.directory.appendingPathComponent("auth.json").path
                try #"{"auths": {"\#(registry.ready.address)": {"auth": "\#(auth)"}}}"#.write(
                    toFile: authFile, atomically: true, encoding: .utf8)
                let specFile = constellation.directory.appendingPathComponent("input.json").path
                try spec.jsonString().write(toFile: specFile, atomically: true, encoding: .utf8)
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: [
                        "run", "--json", "--wait", specFile, "--registry-auth", authFile, "--registry-ca",
                        registry.ready.ca, "--orchestrator", constellation.orchestratorAddress, "--key",
                        constellation.network.directory.appendingPathComponent("operator.key").path,
                    ])
                #expect(status == 0, "\(output)")
                #expect(output.contains("DEPLOYMENT_STATE_COMPLETED"), "\(output.prefix(2000))")
            }
        }
    }

    @Test(
        "a private image: refused without a token; run with a pull token the device receives sealed (through the API and `orrery run --registry-auth`); neither the password nor the token in any log or database row"
    )
    func privateImage() async throws {
        try await RegistryFixture.with("token") { registry in
            _ = try await registry.push("busybox", as: "demo/private:v1")
            try await Self.withImageConstellation("orrery-private-image", trusting: registry) {
                constellation, agent, consumer in
                let orchestrator = constellation.orchestrator
                let image = registry.ready.address + "/demo/private:v1"
                // Explained without a token: its platforms unknown, the device with a runtime chosen.
                try await OrchestratorTests.waitUntilChosen(
                    agent.did, for: Self.imageSpec(image), consumer, orchestrator, within: .seconds(60))

                func submit(tokens: [String: String]) async throws -> Orrery_Orchestrator_V1_Deployment {
                    try await consumer.with(orchestrator) { client in
                        try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = Self.imageSpec(image)
                                $0.idempotencyKey = UUID().uuidString
                                $0.imagePullTokens = tokens
                            })
                    }
                }
                func ending(_ id: String) async throws -> String {
                    try await consumer.with(orchestrator) { client in
                        try await client.watchDeployment(.with { $0.id = id }) { response in
                            var last = ""
                            for try await event in response.messages {
                                last = "\(event.state): \(event.reason)"
                                if [.completed, .failed, .cancelled].contains(event.state) { break }
                            }
                            return last
                        }
                    }
                }

                // Without a token the registry does not show it: refused at submit, nothing recorded.
                await #expect {
                    _ = try await submit(tokens: [:])
                } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .failedPrecondition && error.message.contains("demo/private")
                }
                // A token for another allocation name, or not a token, is refused by its field.
                await #expect {
                    _ = try await submit(tokens: ["other": "x"])
                } throws: { error in
                    (error as? RPCError)?.message.contains("image_pull_tokens[other]") == true
                }

                // With the reader's pull token, obtained as the CLI does: pinned, pulled by the device, run.
                let token = try #require(
                    try await registry.client("reader").pullToken(repository: "demo/private", reference: "v1"))
                let withToken = try await submit(tokens: ["main": token])
                #expect(try await ending(withToken.id).hasPrefix("completed"))
                let logs = try await consumer.with(orchestrator) { client in
                    try await client.streamLogs(.with { $0.id = withToken.id }) { response in
                        try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) { $0.append($1) }
                    }
                }
                #expect(String(decoding: logs.flatMap(\.data), as: UTF8.self) == "hello from the image\n")

                // The CLI: a Docker-style auth file; it sends a token, never the password.
                let directory = constellation.directory
                let password = try #require(registry.ready.users["reader"])
                let auth = Data("reader:\(password)".utf8).base64EncodedString()
                let authFile = directory.appendingPathComponent("auth.json").path
                try #"{"auths": {"\#(registry.ready.address)": {"auth": "\#(auth)"}}}"#.write(
                    toFile: authFile, atomically: true, encoding: .utf8)
                let specFile = directory.appendingPathComponent("private.json").path
                try Self.imageSpec(image).jsonString().write(toFile: specFile, atomically: true, encoding: .utf8)
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: [
                        "run", "-q", "--wait", specFile, "--registry-auth", authFile, "--registry-ca",
                        registry.ready.ca,
                        "--orchestrator", constellation.orchestratorAddress, "--key",
                        constellation.network.directory.appendingPathComponent("operator.key").path,
                    ])
                #expect(status == 0, "\(output)")
                let cliDeployment = output.split(separator: "\n").last.map(String.init) ?? ""
                let (_, shown) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: [
                        "status", cliDeployment, "--json", "--orchestrator", constellation.orchestratorAddress, "--key",
                        constellation.network.directory.appendingPathComponent("operator.key").path,
                    ])
                #expect(shown.contains("DEPLOYMENT_STATE_COMPLETED"), "\(shown.prefix(2000))")

                // Nothing secret in clear: the services' logs and every row of the database.
                let settings = constellation.database.settings
                var dumpEnvironment = ["PGPASSWORD": settings.password ?? ""]
                dumpEnvironment["PGSSLMODE"] = "disable"
                let (dumped, dump) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/pg_dump"),
                    arguments: [
                        "-h", settings.host, "-p", String(settings.port), "-U", settings.user, "--data-only",
                        settings.database,
                    ], environment: dumpEnvironment)
                #expect(dumped == 0, "\(dump.prefix(500))")
                #expect(dump.contains("image_pull_tokens"))
                let texts = [
                    ("database", dump), ("orchestrator", orchestrator.child.output),
                    ("agent", agent.service.child.output), ("notary", constellation.notary.child.output),
                    ("registry", constellation.registry.child.output),
                ]
                for (name, text) in texts {
                    #expect(!text.contains(token), "the pull token is in the \(name)'s output")
                    #expect(!text.contains(password), "the password is in the \(name)'s output")
                }
            }
        }
    }
}
