import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// `orrery-fleet` against a real registry, notary and orchestrator: its virtual devices are believed by the services
/// only if they speak the real protocols — join by challenge, heartbeats, RTT reports, signed bids accepting
/// contracts, running and ended reports, receipts the notary checks and records.
@Suite(
    "Fleet simulator: virtual devices on the real protocols", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct FleetSimulatorTests {
    @Test(
        "40 virtual devices join and heartbeat; a job runs on one to completion and the notary records its receipts; a device that vanishes has its service moved to another, and the report says so"
    )
    func fleet() async throws {
        // Devices beat every second against a registry that expects one every 3: a loaded machine delaying beats by
        // seconds makes no device falsely suspect, and one that vanished is offline within 9 s.
        try await ServiceBed.run("orrery-fleet", livenessInterval: 3000) { bed in
            let orchestrator = try await bed.startOrchestrator()
            defer { orchestrator.child.signal(SIGKILL) }
            let directory = bed.directory
            let report = directory.appendingPathComponent("fleet-report.json")
            let silence = directory.appendingPathComponent("silence.txt")
            let (fleet, ready) = try await Self.startFleet(
                bed, orchestrator: orchestrator,
                [
                    "--devices", "40", "--seed", "7", "--devices-per-connection", "8", "--devices-per-owner", "10",
                    "--heartbeat-interval", "1", "--receipt-interval", "2", "--report", report.path,
                    "--silence-file", silence.path, "--status-every", "2",
                ])
            defer { fleet.signal(SIGKILL) }
            let readiness = try JSONSerialization.jsonObject(with: Data(contentsOf: ready)) as? [String: Any]
            #expect(readiness?["devices"] as? Int == 40)
            #expect((readiness?["owners"] as? [String])?.count == 4, "\(String(describing: readiness))")

            // The orchestrator places on them: all 40 are online in the registry it follows.
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 40)

            // A job "runs" for its `sleep 3` on a virtual device and completes under its contract.
            let job = Self.spec("batch", script: "#!/bin/sh\nsleep 3\n")
            let submitted = try await consumer.submit(job, to: orchestrator, paid: false)
            let completed = try await HealthCheckTests.until(submitted.id, consumer, orchestrator, "completed") {
                $0.deployment.state == .completed
            }
            #expect(completed.run.exitCode == 0 && !completed.assignment.contractID.isEmpty, "\(completed.assignment)")

            // A service runs until stopped; the device running it vanishes; it runs on another virtual device.
            let service = Self.spec("service", script: "#!/bin/sh\nexec serve\n")
            let deployment = try await consumer.submit(service, to: orchestrator, paid: false)
            let first = try await HealthCheckTests.until(deployment.id, consumer, orchestrator, "running") {
                $0.run.state == .running
            }
            try (first.deviceDid + "\n").write(to: silence, atomically: true, encoding: .utf8)
            fleet.signal(SIGUSR1)
            let moved = try await HealthCheckTests.until(deployment.id, consumer, orchestrator, "running elsewhere") {
                $0.run.state == .running && $0.deviceDid != first.deviceDid && $0.deployment.state == .running
            }
            #expect(moved.assignment.contractID != first.assignment.contractID, "a new contract for the new device")
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = deployment.id }) }

            // The simulator's own account, written when it ends.
            fleet.signal(SIGTERM)
            let status = await fleet.waitForExit(timeout: .seconds(60))
            #expect(status == 0, "\(fleet.output)")
            let account = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any], "\(fleet.output)")
            let counters = try #require(account["counters"] as? [String: Int])
            #expect(counters["joined"] == 40, "every device joined (a refused attempt is retried): \(counters)")
            #expect(
                (counters["rtt_reports"] ?? 0) >= 40, "every device reported round trips the registry took: \(counters)"
            )
            #expect((counters["bids"] ?? 0) >= 3 && (counters["deploys"] ?? 0) >= 3, "\(counters)")
            #expect((counters["completions"] ?? 0) >= 1, "\(counters)")
            #expect((counters["receipts_recorded"] ?? 0) >= 1, "the notary recorded signed receipts: \(counters)")
            #expect(counters["silenced"] == 1, "\(counters)")
            let massEvent = try #require(account["mass_event"] as? [String: Any], "\(account)")
            #expect(
                massEvent["replicas_running_on_them"] as? Int == 1 && massEvent["moved"] as? Int == 1
                    && massEvent["second_moves"] as? Int == 0, "\(massEvent)")
            let liveness = try #require(account["liveness"] as? [String: Any])
            // Noticed as suspect, or straight as offline when a liveness pass came late on a loaded machine (past both
            // bounds at once: `make test` saw that once).
            #expect(
                (liveness["failed_seen_suspect"] as? Int ?? 0) + (liveness["failed_seen_offline"] as? Int ?? 0) >= 1,
                "the registry noticed: \(liveness)")
        }
    }

    @Test(
        "devices whose bids arrive after their offers expired are told at once to free the capacity they promised, not at their next inventory"
    )
    func lateBids() async throws {
        try await ServiceBed.run("orrery-fleet-late", livenessInterval: 3000) { bed in
            // Offers lapse after 1 s; every device answers after 2.5 s and sends its inventory only every 10 minutes.
            let orchestrator = try await bed.startOrchestrator(extraArguments: ["--offer-timeout-ms", "1000"])
            defer { orchestrator.child.signal(SIGKILL) }
            let (fleet, _) = try await Self.startFleet(
                bed, orchestrator: orchestrator,
                [
                    "--devices", "3", "--seed", "11", "--heartbeat-interval", "1", "--answer-delay", "2.5",
                    "--inventory-interval", "600", "--status-every", "1",
                ])
            defer { fleet.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 3)

            // Offered to each device in turn, each offer lapsing before its bid arrives: no device is left.
            let job = Self.spec("late", script: "#!/bin/sh\nsleep 3\n")
            let submitted = try await consumer.submit(job, to: orchestrator, paid: false)
            var deployment = submitted
            let ends = ContinuousClock.now + .seconds(120)
            while deployment.state != .failed, ContinuousClock.now < ends {
                try await Task.sleep(for: .milliseconds(250))
                deployment = try await consumer.with(orchestrator) {
                    try await $0.getDeployment(.with { $0.id = submitted.id })
                }
            }
            #expect(
                deployment.state == .failed && deployment.reason.contains("expired"),
                "\(deployment.state): \(deployment.reason)")

            // Every late bid's promise is withdrawn by the orchestrator's Stop (the simulator counts them).
            let deadline = ContinuousClock.now + .seconds(60)
            var counts: (bids: Int, withdrawn: Int)?
            while ContinuousClock.now < deadline {
                counts = Self.lastStatus(fleet.output)
                if let counts, counts.bids >= 3, counts.withdrawn == counts.bids { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(
                counts.map { $0.bids >= 3 && $0.withdrawn == $0.bids } == true,
                "bids and withdrawn promises: \(String(describing: counts)); \(fleet.output.suffix(2000))")
        }
    }

    /// Starts `orrery-fleet` against the bed's registry and `orchestrator` with `arguments` besides, as the operator,
    /// and waits until every device joined; returns it and its ready file.
    static func startFleet(_ bed: ServiceBed, orchestrator: RunningService, _ arguments: [String]) async throws -> (
        ChildProcess, ready: URL
    ) {
        let operatorKey = bed.directory.appendingPathComponent("operator.key").path
        try KeyFile.write(bed.network.operatorKey, to: operatorKey)
        let ready = bed.directory.appendingPathComponent("fleet-ready.json")
        let fleet = try ChildProcess(
            TestEnvironment.executable("orrery-fleet"),
            arguments: [
                "--registry", bed.registryAddress, "--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)",
                "--operator-key", operatorKey, "--ready-file", ready.path,
            ] + arguments,
            outputDirectory: bed.directory)
        do {
            try await waitForFile(ready, of: fleet)
        } catch {
            fleet.signal(SIGKILL)
            throw error
        }
        return (fleet, ready)
    }

    /// A one-core deployment running `script` (a virtual device "runs" it for the `sleep N` it names, otherwise until
    /// stopped), with no outputs.
    static func spec(_ name: String, script: String) -> Orrery_Orchestrator_V1_WorkloadSpec {
        var spec = OrchestratorTests.spec(cores: 1, name: name)
        spec.allocations[0].artifact = .with { $0.text = script }
        spec.allocations[0].outputs = []
        spec.allocations[0].resources.ramMib = 256
        return spec
    }

    @Test(
        "six one-core jobs submitted at once to three two-core devices of one price: placed together, they fill each device once — none is offered what another placement already took, so no device declines"
    )
    func concurrentPlacements() async throws {
        try await ServiceBed.run("orrery-fleet-fill", livenessInterval: 3000) { bed in
            let orchestrator = try await bed.startOrchestrator()
            defer { orchestrator.child.signal(SIGKILL) }
            let profile = bed.directory.appendingPathComponent("profile.json")
            try #"""
            {"hardware": [{"name": "box", "weight": 1, "architecture": "x86_64", "cores": 2, "ramGiB": 4,
                           "diskGiB": 20, "pricePerCoreHour": [5, 5]}],
             "countries": [{"code": "DE", "weight": 1, "latitude": 52.5, "longitude": 13.4, "rttMs": 10}]}
            """#.write(to: profile, atomically: true, encoding: .utf8)
            let (fleet, _) = try await Self.startFleet(
                bed, orchestrator: orchestrator,
                [
                    "--devices", "3", "--seed", "13", "--heartbeat-interval", "1", "--profile", profile.path,
                    "--status-every", "1",
                ])
            defer { fleet.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 3)

            let submitted = try await withThrowingTaskGroup(of: Orrery_Orchestrator_V1_Deployment.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        var spec = Self.spec("fill\(index)", script: "#!/bin/sh\nsleep 60\n")
                        spec.allocations[0].resources.diskMib = 100
                        return try await consumer.submit(spec, to: orchestrator, paid: false)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            var running: [String: String] = [:]
            // Where each one not running yet stands (for the failure's message).
            var waiting: [String: String] = [:]
            // Generous: every suite of `make test` runs beside this one on 2 cores.
            let deadline = ContinuousClock.now + .seconds(180)
            while running.count < 6, ContinuousClock.now < deadline {
                for deployment in submitted where running[deployment.id] == nil {
                    let now = try await consumer.with(orchestrator) {
                        try await $0.getDeployment(.with { $0.id = deployment.id })
                    }
                    if now.state == .running {
                        running[deployment.id] = now.assignments.first?.deviceDid
                        waiting[deployment.id] = nil
                    } else {
                        waiting[deployment.id] =
                            "\(now.state) \(now.assignments.map { "\($0.deviceDid.suffix(6)) \($0.run.state)" }): "
                            + now.reason
                    }
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(running.count == 6, "running: \(running.count) of 6; the others: \(waiting)")
            let perDevice = Dictionary(grouping: running.values, by: { $0 }).mapValues(\.count)
            #expect(perDevice.count == 3 && perDevice.values.allSatisfy { $0 == 2 }, "\(perDevice)")
            try await Task.sleep(for: .milliseconds(1500))  // a status line after the last answer
            let output = fleet.output
            let declines = output.split(separator: "\n").last { $0.contains("declines ") }.flatMap { line in
                line.range(of: "declines ").map { Int(line[$0.upperBound...].prefix { $0.isNumber }) ?? -1 }
            }
            #expect(declines == 0, "the devices declined offers: \(output.suffix(1500))")
        }
    }

    /// The bids and withdrawn promises of the simulator's last status line.
    static func lastStatus(_ output: String) -> (bids: Int, withdrawn: Int)? {
        func number(after label: String, in line: Substring) -> Int? {
            guard let range = line.range(of: label) else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        for line in output.split(separator: "\n").reversed() {
            if let bids = number(after: "bids ", in: line),
                let withdrawn = number(after: "promises withdrawn ", in: line)
            {
                return (bids, withdrawn)
            }
        }
        return nil
    }

    /// Waits (up to 2 minutes) until the simulator wrote `file`; records its output if it ended or took too long.
    static func waitForFile(_ file: URL, of process: ChildProcess) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if FileManager.default.fileExists(atPath: file.path) { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("orrery-fleet wrote no \(file.lastPathComponent): \(process.output)")
        throw CancellationError()
    }
}
