import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

@Suite("A replica's cost so far: the contract's price for the use its device's receipts count")
struct ReplicaCostTests {
    /// An offer whose contract prices per resource: 10 base units per core-hour, 4 per GiB-hour of RAM, 30 per
    /// GPU-hour, at least 1, at most 1,000; its allocation reserves 2 GiB of RAM and `gpus` GPUs.
    static func offer(gpus: UInt32 = 0) throws -> Orrery_Orchestrator_V1_Offer {
        let contract = Orrery_Notary_V1_Contract.with {
            $0.id = "ctr_cost"
            $0.price = .with {
                $0.model = .perResource
                $0.cpuHourPrice = 10
                $0.ramGibHourPrice = 4
                $0.gpuHourPrice = 30
                $0.minimumCharge = 1
                $0.maxCost = 1_000
            }
        }
        return try .with {
            $0.spec.resources.cpuCores = 1
            $0.spec.resources.ramMib = 2048
            $0.spec.resources.gpu.count = gpus
            $0.contract.payload = try contract.serializedData()
        }
    }

    static func usage(cpuSeconds: Double, wallSeconds: Double) -> Orrery_Orchestrator_V1_Usage {
        .with {
            $0.cpuSeconds = cpuSeconds
            $0.wallSeconds = wallSeconds
        }
    }

    @Test("per resource: metered CPU plus the reserved RAM and GPUs for the wall time, as receipts count them")
    func perResourceCountsHeldMemoryAndGPUs() throws {
        // An hour of wall time, half an hour of CPU: 5 for CPU, 2 GiB·h × 4 = 8 for RAM.
        let run = try OfferStore.run(
            state: .running, exitCode: nil, reason: "", usage: Self.usage(cpuSeconds: 1800, wallSeconds: 3600),
            offer: try Self.offer())
        #expect(run.costSoFar == 13, "\(run)")
        // With a GPU held for that hour: 30 more, though the device meters no GPU time.
        let withGPU = try OfferStore.run(
            state: .exited, exitCode: 0, reason: "", usage: Self.usage(cpuSeconds: 1800, wallSeconds: 3600),
            offer: try Self.offer(gpus: 1))
        #expect(withGPU.costSoFar == 43, "\(withGPU)")
    }

    @Test("a replica that used nothing yet owes nothing, not the minimum; the maximum cost caps what is due")
    func boundedByUseAndMaximum() throws {
        let idle = try OfferStore.run(
            state: .deploying, exitCode: nil, reason: "", usage: Self.usage(cpuSeconds: 0, wallSeconds: 0),
            offer: try Self.offer())
        #expect(idle.costSoFar == 0)
        let long = try OfferStore.run(
            state: .running, exitCode: nil, reason: "",
            usage: Self.usage(cpuSeconds: 360_000, wallSeconds: 360_000), offer: try Self.offer())
        #expect(long.costSoFar == 1_000)
    }
}
