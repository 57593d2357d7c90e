import Foundation
import GRPCCore
import OrreryProto
import SwiftProtobuf
import OrreryTestSupport
import Testing

/// Health checks end to end: real agents run a real HTTP server in their sandboxes; the checks run inside each
/// sandbox's network namespace.
@Suite(
    "Health checks: running once healthy, restarted in place, moved when restarts do not help", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct HealthCheckTests {
    /// Waits for `/work/go`, writes `/work/ok` unless `/work/broken` exists, counts its runs, then serves /work on
    /// 127.0.0.1:8080 inside the sandbox (which has no other network).
    static let server = """
        #!/bin/sh
        for i in $(seq 1800); do [ -e /work/go ] && break; sleep 0.1; done
        [ -e /work/broken ] || echo ok > /work/ok
        echo run >> /work/runs
        echo "serving, run $(wc -l < /work/runs)"
        exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /work
        """

    @Test(
        "a service is starting until its HTTP check passes, restarted in place when the check fails, and moved to another device once its restarts are used up — the reason on the watch stream"
    )
    func lifecycle() async throws {
        try await JobConstellation.run("orrery-health") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let first = try await constellation.startAgent("first", owner: #"{"prices": {"per_core_hour": 5}}"#)
            defer { first.service.child.signal(SIGKILL) }
            let spare = try await constellation.startAgent("spare", owner: #"{"prices": {"per_core_hour": 5000}}"#)
            defer { spare.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)

            var spec = OrchestratorTests.spec(cores: 1, name: "web")
            spec.allocations[0].artifact = .with { $0.text = Self.server }
            spec.allocations[0].resources.ramMib = 128
            spec.allocations[0].outputs = []
            // Its start period (a minute) is long enough for the test to see it starting before it opens the gate.
            Self.servesOK(&spec.allocations[0])
            spec.allocations[0].health.timeoutSeconds = 1
            spec.allocations[0].health.unhealthyThreshold = 2
            spec.allocations[0].health.maxRestarts = 1
            try await OrchestratorTests.waitUntilChosen(first.did, for: spec, consumer, orchestrator)
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)

            // Started, failing its check while it waits at the gate: starting, and its deployment not running.
            let starting = try await Self.until(job.id, consumer, orchestrator, "the replica started, health starting")
            {
                $0.run.state == .starting && $0.run.health.status == .starting && $0.deviceDid == first.did
            }
            #expect(starting.deployment.state == .deploying)
            let firstRun = try await Self.allocationDirectory(of: "first", in: directory)
            try Data().write(to: firstRun.appendingPathComponent("work/go"))
            // The replica runs once healthy; its deployment follows (the driver's next step).
            let healthy = try await Self.until(job.id, consumer, orchestrator, "running and healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy && $0.deployment.state == .running
            }
            #expect(healthy.assignment.run.health.restarts == 0)

            // Its check fails (404): restarted in place, in the same directory, healthy again.
            try FileManager.default.removeItem(at: firstRun.appendingPathComponent("work/ok"))
            let restarted = try await Self.until(job.id, consumer, orchestrator, "restarted once, healthy again") {
                $0.run.health.restarts == 1 && $0.run.health.status == .healthy
            }
            #expect(restarted.assignment.deviceDid == first.did)
            #expect(restarted.run.state == .running)
            #expect(
                try String(contentsOf: firstRun.appendingPathComponent("work/runs"), encoding: .utf8) == "run\nrun\n")
            #expect(
                try String(contentsOf: firstRun.appendingPathComponent("stdout.log"), encoding: .utf8).contains(
                    "serving, run 1\nserving, run 2\n"), "the log kept both runs")

            // It stays broken after its one restart: stopped there, and moved to the spare device.
            try Data().write(to: firstRun.appendingPathComponent("work/broken"))
            try FileManager.default.removeItem(at: firstRun.appendingPathComponent("work/ok"))
            _ = try await Self.until(job.id, consumer, orchestrator, "moved to the spare device") {
                $0.deviceDid == spare.did
            }
            let spareRun = try await Self.allocationDirectory(of: "spare", in: directory)
            try Data().write(to: spareRun.appendingPathComponent("work/go"))
            let moved = try await Self.until(job.id, consumer, orchestrator, "healthy on the spare device") {
                $0.deviceDid == spare.did && $0.run.state == .running && $0.run.health.status == .healthy
                    && $0.deployment.state == .running
            }
            #expect(moved.run.health.restarts == 0)
            let events = try await consumer.with(orchestrator) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    var events: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                    for try await event in response.messages {
                        events.append(event)
                        if event.revision >= moved.deployment.revision { break }
                    }
                    return events
                }
            }
            let relocation = events.first { $0.reason.contains("relocated") }
            #expect(
                relocation?.reason.contains("unhealthy: GET http://127.0.0.1:8080/ok: 404") == true
                    && relocation?.reason.contains("after 1 restart(s) in place") == true
                    && relocation?.reason.contains("now on \(spare.did)") == true,
                "\(events.map(\.reason))")
        }
    }

    /// Declares the HTTP port 8080 and a check of `GET /ok` on it every second: what these tests' servers serve.
    /// Failures in the first minute after a (re)start do not count while the server comes up (a pass ends that period
    /// at once): on a loaded CI machine Python's `http.server` once took longer than three checks to listen, four
    /// starts in a row, and the replica was given up.
    static func servesOK(_ allocation: inout Orrery_Orchestrator_V1_AllocationSpec) {
        allocation.ports = [
            .with {
                $0.name = "http"
                $0.port = 8080
                $0.protocol = .http
            }
        ]
        allocation.health = .with {
            $0.http = .with {
                $0.port = 8080
                $0.path = "/ok"
            }
            $0.intervalSeconds = 1
            $0.startPeriodSeconds = 60
        }
    }

    /// A deployment named `name` of one allocation `web` running `server` (1 core, 256 MiB, 64 MiB of disk, no
    /// outputs) that serves HTTP on 8080, checked on `/ok` (`servesOK`).
    static func webSpec(name: String, server: String) -> Orrery_Orchestrator_V1_WorkloadSpec {
        var spec = OrchestratorTests.spec(cores: 1, name: name)
        spec.allocations[0].name = "web"
        spec.allocations[0].artifact = .with { $0.text = server }
        spec.allocations[0].resources.ramMib = 256
        spec.allocations[0].resources.diskMib = 64
        spec.allocations[0].outputs = []
        servesOK(&spec.allocations[0])
        return spec
    }

    /// One replica's assignment as the orchestrator shows it, with its deployment.
    struct Observed {
        var deployment: Orrery_Orchestrator_V1_Deployment
        var assignment: Orrery_Orchestrator_V1_Assignment
        var run: Orrery_Orchestrator_V1_ReplicaRun { assignment.run }
        var deviceDid: String { assignment.deviceDid }
    }

    /// Polls the deployment until its first assignment satisfies `condition` (2 minutes at most, then an issue is
    /// recorded with what was last seen).
    static func until(
        _ id: String, _ consumer: OrchestratorTests.Consumer, _ orchestrator: RunningService, _ what: String,
        _ condition: (Observed) -> Bool
    ) async throws -> Observed {
        let deadline = ContinuousClock.now + .seconds(120)
        var last: Observed?
        while ContinuousClock.now < deadline {
            let deployment = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
            if let assignment = deployment.assignments.first {
                let observed = Observed(deployment: deployment, assignment: assignment)
                if condition(observed) { return observed }
                last = observed
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let seen = last.map { "\($0.deployment.state) \($0.assignment)" } ?? "no assignment"
        Issue.record("not \(what) within 2 minutes; last seen: \(seen)")
        throw CancellationError()
    }

    /// The one allocation directory of agent `name`, once the agent made it (within a minute) with its work
    /// directory.
    static func allocationDirectory(of name: String, in directory: URL) async throws -> URL {
        let allocations = directory.appendingPathComponent("\(name)-state/allocations")
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let runs = (try? FileManager.default.contentsOfDirectory(atPath: allocations.path)) ?? []
            if let run = runs.first(where: { $0.hasPrefix("off_") }) {
                let found = allocations.appendingPathComponent(run)
                if FileManager.default.fileExists(atPath: found.appendingPathComponent("work").path) { return found }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("agent \(name) made no allocation directory within a minute")
        throw CancellationError()
    }
}
