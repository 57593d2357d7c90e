internal import Foundation
internal import OrreryLedger
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Each replica's run as its device last reported it — state, exit status, reason, metered use and what its
/// contract makes due for that use — for `GetDeployment`.
extension OfferStore {
    /// The run of every replica of `deployment` its device was told to start, by allocation, replica and device
    /// (a replica moved elsewhere has one run per device; the latest offer on a device wins).
    func runs(of deployment: String) async throws -> [ReplicaOnDevice: Orrery_Orchestrator_V1_ReplicaRun] {
        let rows = try await client.query(
            """
            SELECT allocation, replica, device_did, state, exit_code, report, usage, record, health FROM offers
            WHERE deployment_id = \(deployment) AND state IN (\(OfferState.deployed)) ORDER BY created_at
            """,
            logger: logger)
        var runs: [ReplicaOnDevice: Orrery_Orchestrator_V1_ReplicaRun] = [:]
        for try await (allocation, replica, device, state, exitCode, report, usage, record, health) in rows.decode(
            (String, Int32, String, Int16, Int32?, String, Data?, Data, Data?).self)
        {
            let key = ReplicaOnDevice(allocation: allocation, replica: UInt32(clamping: replica), device: device)
            var run = try Self.run(
                state: try OfferState(stored: state), exitCode: exitCode, reason: report,
                usage: try usage.map { try Orrery_Orchestrator_V1_Usage(serializedBytes: $0) },
                offer: try Orrery_Orchestrator_V1_Offer(serializedBytes: record))
            if let health { run.health = try Orrery_Orchestrator_V1_ReplicaHealth(serializedBytes: health) }
            runs[key] = run
        }
        return runs
    }

    /// One run from its offer's stored columns (pure).
    static func run(
        state: OfferState, exitCode: Int32?, reason: String, usage: Orrery_Orchestrator_V1_Usage?,
        offer: Orrery_Orchestrator_V1_Offer
    ) throws -> Orrery_Orchestrator_V1_ReplicaRun {
        var run = Orrery_Orchestrator_V1_ReplicaRun()
        switch state {
        case .deploying: run.state = .starting
        case .running: run.state = .running
        case .exited: run.state = .exited
        case .failedToStart: run.state = .failedToStart
        case .stopping: run.state = .stopping
        default: run.state = .unspecified
        }
        if state == .exited, let exitCode { run.exitCode = exitCode }
        run.reason = reason
        guard let usage else { return run }
        run.usage = usage
        // Only what ran costs: a replica that never started (no use reported) owes nothing, not the minimum. The use
        // is counted as the device's receipts count it: metered CPU, the reserved RAM and GPUs for the wall time.
        guard usage.wallSeconds > 0 || usage.cpuSeconds > 0 else { return run }
        let contract = try Orrery_Notary_V1_Contract(serializedBytes: offer.contract.payload)
        let resources = offer.spec.resources
        run.costSoFar = ContractCharge.due(
            contract.price,
            for: .held(
                cpuSeconds: usage.cpuSeconds, wallSeconds: usage.wallSeconds, ramMib: resources.ramMib,
                gpus: resources.gpu.count),
            completed: state == .exited && exitCode == 0)
        return run
    }
}

/// A replica on one device.
struct ReplicaOnDevice: Hashable, Sendable {
    var allocation: String
    var replica: UInt32
    var device: String
}
