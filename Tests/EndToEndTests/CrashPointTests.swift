import Foundation
import GRPCCore
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// A service killed between two of its transactions (`ORRERY_CRASH_AT`, where no outside signal lands reliably):
/// restarted, it carries on from the state the first transaction left. A service down while a job ends: nothing
/// waits for a reconnect to be paid.
@Suite(
    "Faults: a kill between two transactions, a notary down when a job ends", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct CrashPointTests {
    @Test(
        "an orchestrator killed right after a deployment was escrowed: restarted, it deploys it and the job completes")
    func killedWhileEscrowed() async throws {
        try await ServiceBed.run("orrery-crash-escrowed") { bed in
            let (database, network) = (bed.database, bed.network)
            let doomed = try await bed.startOrchestrator(environment: ["ORRERY_CRASH_AT": "orchestrator.escrowed"])
            defer { doomed.child.signal(SIGKILL) }
            let port = doomed.ready.grpcPort
            let agent = try await bed.startAgent(
                "patient", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [doomed])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, doomed, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].artifact = .with { $0.text = "printf done > out.txt" }
            spec.allocations[0].resources.ramMib = 32
            let job = try await consumer.submit(spec, to: doomed, paid: false)
            // It died at the crash point: killed, with the deployment escrowed and not yet deploying.
            #expect(await doomed.child.waitForExit(timeout: .seconds(30)) == SIGKILL)
            #expect(doomed.child.output.contains("dying at a crash point"))
            let stored = try await database.withClient(schema: "orchestrator") { db -> Int16? in
                let rows = try await db.query("SELECT state FROM deployments WHERE id = \(job.id)")
                for try await state in rows.decode(Int16.self) { return state }
                return nil
            }
            #expect(stored == Int16(Orrery_Orchestrator_V1_DeploymentState.escrowed.rawValue))

            let restarted = try await bed.startOrchestrator(port: port)
            defer { restarted.child.signal(SIGKILL) }
            let current = try await OrchestratorTests.ended(job.id, of: consumer, on: restarted)
            #expect(current.state == .completed, "\(current.state): \(current.reason)")
            let outputs = try await consumer.with(restarted) { try await $0.getOutputs(.with { $0.id = job.id }) }
            #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "done")
        }
    }

    @Test(
        "an ended allocation's directory is removed once its receipts are recorded and the owner's keep_ended_hours passed; its outputs stay with the orchestrator"
    )
    func endedAllocationsRemoved() async throws {
        try await JobConstellation.run("orrery-ended-removed") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let agent = try await constellation.startAgent(
                "tidy", owner: #"{"prices": {"per_core_hour": 5}, "keep_ended_hours": 0}"#, interval: 500)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].artifact = .with { $0.text = "printf done > out.txt" }
            spec.allocations[0].resources.ramMib = 32
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            let allocations = directory.appendingPathComponent("tidy-state/allocations").path
            let current = try await OrchestratorTests.ended(job.id, of: consumer, on: orchestrator)
            #expect(current.state == .completed, "\(current.state): \(current.reason)")
            // It ran here (its directory was made), and once paid its directory goes.
            #expect(agent.service.child.output.contains("allocation started"))
            var left = (try? FileManager.default.contentsOfDirectory(atPath: allocations)) ?? []
            let removed = ContinuousClock.now + .seconds(30)
            while !left.isEmpty, ContinuousClock.now < removed {
                try await Task.sleep(for: .milliseconds(200))
                left = (try? FileManager.default.contentsOfDirectory(atPath: allocations)) ?? []
            }
            #expect(left.isEmpty, "still there: \(left)")
            #expect(
                agent.service.child.output.contains("ended allocations removed"),
                "\(agent.service.child.output.suffix(3000))")
            let outputs = try await consumer.with(orchestrator) {
                try await $0.getOutputs(.with { $0.id = job.id })
            }
            #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "done")
        }
    }

    @Test(
        "a completion receipt refused while the notary is down is sent again on a schedule: recorded once the notary is back, with no reconnect"
    )
    func notaryDownAtCompletion() async throws {
        try await ServiceBed.run("orrery-notary-down") { bed in
            let (database, network, directory, notary) = (bed.database, bed.network, bed.directory, bed.notary)
            let notaryDirectory = directory.appendingPathComponent("notary")
            let orchestrator = try await bed.startOrchestrator()
            defer { orchestrator.child.signal(SIGKILL) }
            // Receipts every 6 s, unrecorded ones resent every 3 s.
            let agent = try await bed.startAgent(
                "payee", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [orchestrator], interval: 500)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1)
            // Long enough that the notary is down before it ends, even on a loaded machine (checked below).
            // (15 s was not: a loaded CI machine saw the job end before the notary was killed.)
            spec.allocations[0].artifact = .with { $0.text = "sleep 40; printf done > out.txt" }
            spec.allocations[0].resources.ramMib = 32
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            var current = try await OrchestratorTests.runningOrEnded(job.id, of: consumer, on: orchestrator)
            try #require(current.state == .running, "\(current.state): \(current.reason)")
            let contractID = try #require(current.assignments.first?.contractID)
            // The notary goes down while the job runs, so its completion receipt cannot be recorded.
            notary.child.signal(SIGKILL)
            _ = await notary.child.waitForExit()
            current = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = job.id }) }
            try #require(current.state == .running, "the job ended before the notary was down: \(current.state)")
            current = try await OrchestratorTests.ended(
                job.id, of: consumer, on: orchestrator, within: .seconds(120))
            #expect(current.state == .completed, "\(current.state): \(current.reason)")
            #expect(orchestrator.child.output.contains("recording a receipt failed; the device resends it"))
            let back = try await JobConstellation.startNotary(
                database, network, notaryDirectory, port: notary.ready.grpcPort)
            defer { back.child.signal(SIGKILL) }
            let parties = try ContractParties(network: network)
            var record = try await parties.withNotary(back) {
                try await $0.getContract(.with { $0.id = contractID })
            }
            let recorded = ContinuousClock.now + .seconds(30)
            while record.state != .completed, ContinuousClock.now < recorded {
                try await Task.sleep(for: .milliseconds(200))
                record = try await parties.withNotary(back) {
                    try await $0.getContract(.with { $0.id = contractID })
                }
            }
            #expect(record.state == .completed, "\(record.state)")
            // Over the line that was open all along.
            #expect(agent.service.child.output.components(separatedBy: "agent channel open").count - 1 == 1)
        }
    }
}
