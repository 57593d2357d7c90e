internal import Foundation
internal import Logging
internal import OrreryPlacement
internal import OrreryProto
internal import SwiftProtobuf

/// Moves deployments through their lifecycle. Any replica may advance any deployment: each transition is
/// conditional on the state it leaves, so when two replicas race, one wins and the other changes nothing.
///
/// Implemented so far: submitted → matched (placed, resources reserved) or → failed (cannot be placed, with the
/// explanation). Offers, contracts, escrow and execution come with the agent channel.
struct DeploymentDriver: Sendable {
    let store: DeploymentStore
    let fleet: FleetView
    let solver: PlacementSolver
    let logger: Logger
    /// How often waiting deployments are looked for (a submit on this replica advances at once).
    var pollInterval: Duration = .milliseconds(500)

    /// Advances every waiting deployment, then keeps doing so until cancelled.
    func run() async {
        while !Task.isCancelled {
            do {
                for id in try await store.waiting(in: .submitted, limit: 100) { try await advance(id) }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("advancing deployments failed; retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: pollInterval)
        }
    }

    /// Places a submitted deployment; leaves it waiting while the device snapshot is incomplete.
    func advance(_ id: String) async throws {
        guard let deployment = try await store.deployment(id), deployment.state == .submitted else { return }
        guard fleet.isSynced else {
            logger.info("deployment waits for the registry's device snapshot", metadata: ["deployment": "\(id)"])
            return
        }
        let request: PlacementRequest
        do {
            request = try WorkloadSpecValidator.validate(deployment.spec)
        } catch {
            _ = try await store.transition(id, from: [.submitted], to: .failed, reason: "invalid spec: \(error)")
            return
        }
        let snapshot = fleet.snapshot(reserved: try await store.reservations())
        switch solver.place(request, on: snapshot) {
        case .placed(let placement):
            let devices = Set(placement.allocations.flatMap { $0.replicas.map(\.deviceDID) }).count
            let reason =
                "placed on \(devices) device\(devices == 1 ? "" : "s") of \(snapshot.devices.count) for \(placement.totalCost) NTX"
                + (placement.provenOptimal
                    ? " (cheapest feasible)" : " (search time ran out: feasible, maybe not the cheapest)")
            let moved = try await store.transition(id, from: [.submitted], to: .matched, reason: reason) { deployment in
                deployment.totalCost = placement.totalCost
                deployment.assignments = Self.assignments(placement)
            }
            if moved != nil {
                logger.info("deployment matched", metadata: ["deployment": "\(id)", "reason": "\(reason)"])
            }
        case .infeasible:
            let explanation = solver.explain(request, on: snapshot)
            let suggestions = explanation.relaxations.map(\.suggestion)
            let reason =
                "cannot be placed: \(explanation.reason)"
                + (suggestions.isEmpty ? "" : "; nearest relaxations: " + suggestions.joined(separator: ", "))
            _ = try await store.transition(id, from: [.submitted], to: .failed, reason: reason)
            logger.info("deployment cannot be placed", metadata: ["deployment": "\(id)", "reason": "\(reason)"])
        }
    }

    static func assignments(_ placement: Placement) -> [Orrery_Orchestrator_V1_Assignment] {
        placement.allocations.flatMap { allocation in
            allocation.replicas.enumerated().map { index, replica in
                Orrery_Orchestrator_V1_Assignment.with {
                    $0.allocation = allocation.name
                    $0.replica = UInt32(index)
                    $0.deviceDid = replica.deviceDID
                    $0.hourlyPrice = replica.hourlyPrice
                    $0.jobCost = replica.jobCost
                }
            }
        }
    }
}
