internal import Metrics
internal import Foundation
internal import Logging
internal import OrreryPlacement
internal import OrreryRuntime
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Moves deployments through their lifecycle. Any replica may advance any deployment: each transition is
/// conditional on the state it leaves, so when two replicas race, one wins and the other changes nothing.
///
/// submitted → matched (placed, resources reserved) or failed (cannot be placed, with the explanation);
/// matched → offered (one offer per replica, each with its contract, through the agent channel); offered → matched
/// again when a device declines or lets its offer expire (placed anew without it), or → contracted once every
/// device bid and the notary logged every replica's contract → escrowed (each contract's maximum cost held by the
/// settlement gateway, when one is configured) → deploying → running → completed | failed.
struct DeploymentDriver: Sendable {
    let store: DeploymentStore
    let offers: OfferStore
    let fleet: FleetView
    let solver: PlacementSolver
    /// This replica's placements not yet committed, so that two at once do not fill the same device twice.
    var placements = PlacementLedger()
    let logger: Logger
    let orchestratorDID: String
    let offerTimeout: Duration
    let clerk: ContractClerk
    /// Escrow through the settlement gateway; nil when none is configured (then `escrowed` passes, holding nothing).
    let settlement: SettlementClerk?
    /// Called after offers or instructions were written, so the agents this replica holds get them at once
    /// rather than at the next poll.
    let kick: @Sendable () async -> Void
    /// How often waiting deployments are looked for (a submit on this replica advances at once).
    var pollInterval: Duration = .milliseconds(500)

    /// Advances every waiting deployment, then keeps doing so until cancelled.
    func run() async {
        await PeriodicWork("advancing deployments", every: pollInterval, logger: logger) {
            for id in try await offers.expire() { try await advance(id) }
            try await terminateEndedContracts()
            for state in [
                // Every state that is not terminal: one left by a replica killed between two transactions is picked
                // up again here.
                Orrery_Orchestrator_V1_DeploymentState.submitted, .matched, .offered, .contracted, .escrowed,
                .deploying, .running,
            ] {
                for id in try await store.waiting(in: state, limit: 100) { try await advance(id) }
            }
        }.run()
    }

    /// A device went offline or left: the deployments running on it advance now (their replicas relocate).
    func deviceLost(_ device: String) async {
        do {
            for id in try await offers.deployments(runningOn: device) { try await advance(id) }
        } catch {
            logger.warning(
                "relocating from a lost device failed; the next round retries",
                metadata: ["device": "\(device)", "error": "\(error)"])
        }
    }

    /// Takes a deployment as far as it can go now: the facts are read, `DeploymentPlanner` names the next action,
    /// it is applied (conditional on the state it leaves, so a racing replica changes nothing twice), and again —
    /// until the planner waits, the deployment ended, or an action hands over to a later round.
    /// - Parameter states: when given, it goes on only while the deployment is in one of these states.
    func advance(_ id: String, while states: Set<Orrery_Orchestrator_V1_DeploymentState>? = nil) async throws {
        for _ in 0..<8 {
            guard let deployment = try await store.deployment(id), !deployment.state.isTerminal,
                states?.contains(deployment.state) ?? true
            else { return }
            let facts = try await facts(of: deployment)
            let action = DeploymentPlanner.nextAction(facts)
            guard try await apply(action, to: deployment, facts: facts) else {
                // Nothing moved: done, unless another driver (a background round, another replica) moved it
                // meanwhile and the action lost that race — then its next step is looked at again.
                guard let now = try await store.deployment(id), now.state != deployment.state else { return }
                continue
            }
        }
    }

    /// What `DeploymentPlanner` decides a deployment's next action from: only what its state needs.
    private func facts(of deployment: Orrery_Orchestrator_V1_Deployment) async throws -> DeploymentPlanner.Facts {
        var facts = DeploymentPlanner.Facts(
            state: deployment.state, replicas: deployment.assignments.count, fleetSynced: fleet.isSynced,
            settlement: settlement != nil)
        switch deployment.state {
        case .offered, .contracted, .deploying, .running:
            if deployment.state == .offered {
                let (current, refusals) = try await offers.round(of: deployment.id)
                facts.bids = current.map { DeploymentPlanner.Bid(device: $0.device, state: $0.state) }
                facts.refusals = refusals.map { DeploymentPlanner.Refusal(device: $0.device, reason: $0.reason) }
            }
            (facts.unrecorded, facts.unescrowed, facts.deployable) = try await offers.paperwork(
                of: deployment.id, escrowRequired: settlement != nil)
            if deployment.state == .deploying || deployment.state == .running {
                facts.execution = try await executionFacts(deployment, state: deployment.state)
            }
        default:
            break
        }
        return facts
    }

    /// Applies one action; true when it changed something the next action may follow at once.
    private func apply(
        _ action: DeploymentPlanner.Action, to deployment: Orrery_Orchestrator_V1_Deployment,
        facts: DeploymentPlanner.Facts
    ) async throws -> Bool {
        let id = deployment.id
        switch action {
        case .wait:
            return false
        case .place(let excluded, let why):
            return try await place(deployment, excluding: excluded, after: why)
        case .offer:
            return try await offer(deployment)
        case .recordContracts:
            // A refusal fails the deployment; an unreachable notary throws (the next round tries again).
            guard let contracts = try await recordContracts(deployment, from: [deployment.state]) else { return false }
            if deployment.state != .offered {
                // A relocated replica's contract, replacing the one before, is written into its assignment.
                _ = try await store.transition(
                    id, from: [deployment.state], to: deployment.state,
                    reason: "the relocated replica's contract is recorded by the notary",
                    change: { deployment in Self.attach(contracts, to: &deployment) })
            }
            return true
        case .markContracted:
            let contracts = try await offers.contracts(of: id)
            let listed = contracts.values.sorted().joined(separator: ", ")
            guard
                try await store.transition(
                    id, from: [.offered], to: .contracted,
                    reason:
                        "every device bid and accepted its contract; \(contracts.count) contract(s) recorded in the notary's log: \(listed)",
                    change: { deployment in Self.attach(contracts, to: &deployment) }) != nil
            else { return false }
            logger.info("deployment contracted", metadata: ["deployment": "\(id)"])
            return true
        case .escrow:
            // A refusal (the consumer's balance does not cover it, its delegation does not allow it) fails the
            // deployment; an unreachable gateway throws, leaving it for the next round.
            guard let settlement else { return false }
            if let refusal = try await settlement.escrow(deployment) {
                _ = try await store.transition(
                    id, from: [deployment.state], to: .failed,
                    reason: deployment.state == .contracted
                        ? refusal : "the relocated replica cannot be paid: \(refusal)")
                return false
            }
            return true
        case .markEscrowed:
            let reason =
                settlement != nil
                ? "every contract's maximum cost is held in escrow by the settlement gateway"
                : "no settlement gateway is configured: nothing held"
            return try await store.transition(id, from: [.contracted], to: .escrowed, reason: reason) != nil
        case .startDeploying:
            let logger = logger
            let moved = try await store.transition(
                id, from: [.escrowed], to: .deploying, reason: "the devices are told to start the allocations",
                also: { connection, _ in
                    try await OfferStore.startDeploying(deployment: id, connection: connection, logger: logger)
                })
            await kick()
            return moved != nil
        case .deployAccepted:
            let deployed = try await offers.deployAccepted(of: id, escrowRequired: settlement != nil)
            if deployed { await kick() }
            return deployed
        case .execution(let step):
            guard let execution = facts.execution else { return false }
            let changed = try await apply(step, to: deployment, facts: execution)
            // Once running, it may be complete at once; a relocation or a failure waits for the next round.
            if case .markRunning = step { return changed }
            return false
        }
    }

    /// What `DeploymentPlanner` decides a deploying or running ensemble's next step from.
    private func executionFacts(
        _ deployment: Orrery_Orchestrator_V1_Deployment, state: Orrery_Orchestrator_V1_DeploymentState
    ) async throws -> DeploymentPlanner.ExecutionFacts {
        let executions = try await offers.executions(of: deployment.id)
        let devices = Set(executions.map(\.device)).union(deployment.assignments.map(\.deviceDid))
        return DeploymentPlanner.ExecutionFacts(
            state: state,
            assignments: deployment.assignments.map {
                (DeploymentPlanner.Replica(allocation: $0.allocation, replica: $0.replica), $0.deviceDid)
            },
            executions: executions,
            live: try await offers.liveReplicas(of: deployment.id),
            deviceStatus: Dictionary(
                uniqueKeysWithValues: devices.compactMap { did in fleet.device(did).map { (did, $0.status) } }),
            unhealthyMoves: try await offers.unhealthyMoves(of: deployment.id))
    }

    /// Applies one execution step; true when it changed the deployment.
    private func apply(
        _ step: DeploymentPlanner.ExecutionStep, to deployment: Orrery_Orchestrator_V1_Deployment,
        facts: DeploymentPlanner.ExecutionFacts
    ) async throws -> Bool {
        let id = deployment.id
        let logger = logger
        switch step {
        case .wait:
            return false
        case .relocate(let replica, let device, let why):
            try await relocate(
                deployment, allocation: replica.allocation, replica: replica.replica, from: device, why: why)
            return false
        case .fail(let replica, let device, let reason):
            _ = try await store.transition(
                id, from: [.deploying, .running], to: .failed, reason: reason,
                also: { connection, _ in
                    try await ReputationOutbox.add(
                        device: device, outcome: .failed, key: "\(id)/\(replica.allocation)/\(replica.replica)/failed",
                        connection: connection, logger: logger)
                })
            return false
        case .markRunning(let reason):
            return try await store.transition(id, from: [.deploying], to: .running, reason: reason) != nil
        case .complete(let reason):
            let executions = facts.executions
            return try await store.transition(
                id, from: [.running], to: .completed, reason: reason,
                also: { connection, _ in
                    for execution in executions {
                        try await ReputationOutbox.add(
                            device: execution.device, outcome: .completed,
                            key: "\(id)/\(execution.allocation)/\(execution.replica)/completed", connection: connection,
                            logger: logger)
                    }
                }) != nil
        }
    }

    /// Moves one replica of a deployed ensemble to another feasible device (`to` one, when named; `pin` keeps it
    /// there against voluntary moves): the same
    /// constraints, its latency edges as bounds to where its partners run now, its spread siblings' devices and every
    /// device that refused this deployment excluded. A stateful replica resumes there from its latest checkpoint
    /// with its actor key (`CheckpointStore.prepare`). The device it leaves is told to stop it there (at once, or
    /// when it comes back).
    /// - Returns: the device it moves to, or nil when none could take it (then a failed replica's deployment
    ///   failed; a `planned` move changed nothing and the replica runs on where it is).
    @discardableResult
    func relocate(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation name: String, replica: UInt32, from device: String,
        why: String, to chosen: String? = nil, planned: Bool = false, pin: Bool = false
    ) async throws -> String? {
        let id = deployment.id
        let states: Set<Orrery_Orchestrator_V1_DeploymentState> = [.deploying, .running]
        guard let spec = deployment.spec.allocations.first(where: { $0.name == name }),
            let (placement, snapshot, found) = try await replacement(
                deployment, allocation: name, replica: replica, leaving: device, to: chosen)
        else { return nil }
        // Only while the replica is still where it was: a concurrent relocation of it (the poll and a device-lost
        // event) may have moved it already — and then this one, finding the new device taken, must not fail it.
        let stillThere: @Sendable (Orrery_Orchestrator_V1_Deployment) -> Bool = { current in
            current.assignments.contains { $0.allocation == name && $0.replica == replica && $0.deviceDid == device }
        }
        guard let target = found else {
            if planned { return nil }  // a voluntary move that cannot happen leaves the replica running where it is
            let explanation = solver.explain(placement, on: snapshot)
            _ = try await store.transition(
                id, from: states, to: .failed,
                reason: "\(name)[\(replica)]: \(why), and no other device can take it: \(explanation.reason)",
                onlyIf: stillThere)
            return nil
        }
        let reason =
            "\(name)[\(replica)] \(planned ? "moved" : "relocated"): \(why); now on \(target.deviceDID)"
            + (spec.stateful ? ", resuming from its latest checkpoint" : "")
        let (orchestratorDID, timeout, logger) = (orchestratorDID, offerTimeout, logger)
        let moved = try await store.transition(
            id, from: states, to: .deploying, reason: reason,
            // Once: a concurrent relocation of the same replica (the poll and a device-lost event) finds it moved.
            onlyIf: stillThere,
            change: { deployment in
                for position in deployment.assignments.indices
                where deployment.assignments[position].allocation == name
                    && deployment.assignments[position].replica == replica
                {
                    deployment.assignments[position].deviceDid = target.deviceDID
                    deployment.assignments[position].hourlyPrice = target.hourlyPrice
                    deployment.assignments[position].jobCost = target.jobCost
                    deployment.assignments[position].pinned = pin
                }
            },
            also: { connection, deployment in
                try await OfferStore.relocate(
                    deployment: id, allocation: name, replica: replica, reason: reason, planned: planned,
                    connection: connection, logger: logger)
                try await ReputationOutbox.add(
                    device: device, outcome: .relocatedAway, key: "\(id)/\(name)/\(replica)/relocated-from/\(device)",
                    connection: connection, logger: logger)
                try await connection.query(
                    """
                    UPDATE assignments SET device_did = \(target.deviceDID)
                    WHERE deployment_id = \(id) AND allocation = \(name) AND replica = \(Int32(replica))
                    """,
                    logger: logger)
                try await OfferStore.create(
                    for: deployment, orchestratorDID: orchestratorDID, timeout: timeout, only: (name, replica),
                    contract: draft(deployment), connection: connection, logger: logger)
            })
        guard moved != nil else { return nil }
        logger.info("replica relocated", metadata: ["deployment": "\(id)", "reason": "\(reason)"])
        await kick()
        return target.deviceDID
    }

    /// Where one replica of a deployed ensemble would go if it left `device` (for `chosen` only, when named): the
    /// same constraints, its latency edges as bounds to where its partners run now, its spread siblings' devices and
    /// every device that refused this deployment excluded. Nil when the allocation is not in the spec.
    func replacement(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation name: String, replica: UInt32,
        leaving device: String,
        to chosen: String? = nil
    ) async throws -> (request: PlacementRequest, snapshot: PlacementSnapshot, target: ReplicaPlacement?)? {
        guard
            let (placement, snapshot) = try await replacementRequest(
                deployment, allocation: name, replica: replica, leaving: device, to: chosen)
        else { return nil }
        guard case .placed(let placed) = solver.place(placement, on: snapshot) else {
            return (placement, snapshot, nil)
        }
        return (placement, snapshot, placed.allocations.first?.replicas.first)
    }

    /// The single-replica request `replacement` solves, and the fleet snapshot to solve it on: the replica's
    /// allocation with its edges turned into latency targets at its partners' devices. Nil when the allocation is
    /// not in the spec.
    func replacementRequest(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation name: String, replica: UInt32,
        leaving device: String,
        to chosen: String? = nil
    ) async throws -> (request: PlacementRequest, snapshot: PlacementSnapshot)? {
        let request: PlacementRequest
        do {
            request = try await store.placementRequest(of: deployment)
        } catch is WorkloadSpecValidator.Problems {
            return nil
        }
        guard let index = request.allocations.firstIndex(where: { $0.name == name }) else { return nil }
        var single = request.allocations[index]
        single.replicas = 1
        var excluded = try await offers.refusingDevices(of: deployment.id)
        excluded.insert(device)
        for edge in request.edges where edge.from == index || edge.to == index {
            let partner = request.allocations[edge.from == index ? edge.to : edge.from].name
            for assignment in deployment.assignments where assignment.allocation == partner {
                single.constraints.latencyTargets.append(
                    LatencyTarget(place: .landmark(assignment.deviceDid), maxRTTMilliseconds: edge.maxRTTMilliseconds))
            }
        }
        if single.spread == .spread {
            for sibling in deployment.assignments where sibling.allocation == name && sibling.replica != replica {
                excluded.insert(sibling.deviceDid)
            }
        }
        let snapshot = fleet.snapshot(reserved: try await store.reservations())
        if let chosen {
            excluded = Set(snapshot.devices.map(\.did)).subtracting([chosen])
        }
        return (PlacementRequest(allocations: [single], budget: nil, excludedDevices: excluded), snapshot)
    }

    /// matched → offered: an offer per replica, in the same transaction.
    private func offer(_ deployment: Orrery_Orchestrator_V1_Deployment) async throws -> Bool {
        let count = deployment.assignments.count
        let (orchestratorDID, timeout, logger) = (orchestratorDID, offerTimeout, logger)
        let moved = try await store.transition(
            deployment.id, from: [.matched], to: .offered,
            reason:
                "offered to \(Set(deployment.assignments.map(\.deviceDid)).count) device(s) for \(count) replica(s)",
            also: { connection, deployment in
                try await OfferStore.create(
                    for: deployment, orchestratorDID: orchestratorDID, timeout: timeout, contract: draft(deployment),
                    connection: connection, logger: logger)
            })
        await kick()
        return moved != nil
    }

    /// The drafting of each new offer's contract, for one deployment.
    private func draft(_ deployment: Orrery_Orchestrator_V1_Deployment) -> OfferStore.ContractDraft {
        let (clerk, spec) = (clerk, deployment.spec)
        return { offer, assignment, authority, replaces in
            try clerk.draft(offer: offer, assignment: assignment, spec: spec, authority: authority, replaces: replaces)
        }
    }

    /// Records the contracts of the accepted offers that have none yet; returns every current replica's contract by
    /// "allocation#replica", or nil after failing the deployment when the notary refused one.
    /// - Throws: when the notary cannot be reached (the next round tries again).
    private func recordContracts(
        _ deployment: Orrery_Orchestrator_V1_Deployment, from states: Set<Orrery_Orchestrator_V1_DeploymentState>
    ) async throws -> [String: String]? {
        let accepted = try await offers.acceptedWithoutContract(of: deployment.id)
        let replicas = Dictionary(
            accepted.map { ($0.offer.offerID, "\($0.offer.allocation)[\($0.offer.replica)]") },
            uniquingKeysWith: { a, _ in a })
        var refusal: String?
        for (offerID, recorded) in try await clerk.record(accepted) {
            switch recorded {
            case .recorded(let contractID, let entry):
                try await offers.setContract(offerID, contractID: contractID)
                logger.info(
                    "contract recorded",
                    metadata: ["deployment": "\(deployment.id)", "contract": "\(contractID)", "entry": "\(entry)"])
            case .refused(let why):
                refusal = refusal ?? "\(replicas[offerID] ?? offerID): \(why)"
            }
        }
        if let refusal {
            _ = try await store.transition(deployment.id, from: states, to: .failed, reason: refusal)
            return nil
        }
        return try await offers.contracts(of: deployment.id)
    }

    /// Writes each replica's contract into its assignment.
    static func attach(_ contracts: [String: String], to deployment: inout Orrery_Orchestrator_V1_Deployment) {
        for index in deployment.assignments.indices {
            let assignment = deployment.assignments[index]
            deployment.assignments[index].contractID = contracts["\(assignment.allocation)#\(assignment.replica)"] ?? ""
        }
    }

    /// Terminates, with the notary, the contracts of replicas that ended early (withdrawn, failed to start,
    /// stopped, relocated). At least once: each is marked closed only after the notary answered.
    private func terminateEndedContracts() async throws {
        guard clerk.notary != nil else { return }
        for ended in try await offers.contractsToTerminate(limit: 100) {
            do {
                if try await clerk.terminate(ended.contractID, reason: ended.reason) {
                    if settlement != nil {
                        try await SettlementClerk.enqueueRefund(
                            contract: ended.contractID, client: offers.client, logger: logger)
                    }
                    try await offers.markContractClosed(ended.offerID)
                }
            } catch {
                logger.warning(
                    "terminating a contract failed; retrying",
                    metadata: ["contract": "\(ended.contractID)", "error": "\(error)"])
                return
            }
        }
    }

    /// Places a deployment (the planner asks only once the registry's device snapshot is complete).
    private func place(
        _ deployment: Orrery_Orchestrator_V1_Deployment, excluding excluded: Set<String> = [], after why: String? = nil
    ) async throws -> Bool {
        let id = deployment.id
        let from: Set<Orrery_Orchestrator_V1_DeploymentState> = [deployment.state]
        var request: PlacementRequest
        do {
            request = try await store.placementRequest(of: deployment)
        } catch {
            _ = try await store.transition(id, from: from, to: .failed, reason: "invalid spec: \(error)")
            return false
        }
        request.excludedDevices = excluded
        for attempt in 1...3 {
            let ticket = await placements.begin(id)
            do {
                let result = try await place(deployment, request, after: why, ticket: ticket, mayRetry: attempt < 3)
                await placements.finish(ticket, committed: result == .placed)
                switch result {
                case .placed: return true
                case .notPlaced: return false
                case .again: try await Task.sleep(for: .milliseconds(100 * attempt))
                }
            } catch {
                await placements.finish(ticket, committed: false)
                throw error
            }
        }
        return false
    }

    /// What one placement attempt came to.
    private enum PlacementResult { case placed, notPlaced, again }

    /// Places `deployment` under the placement ledger's `ticket`. A placement that found no room only by counting
    /// other placements' reservations that may not stand, or may be counted twice (there is room by the committed
    /// ones alone), does not fail the deployment: `again` (`mayRetry`), else `notPlaced` — the deployment is left as
    /// it is for the next round, whose placement no longer races this burst of others.
    private func place(
        _ deployment: Orrery_Orchestrator_V1_Deployment, _ request: PlacementRequest, after why: String?,
        ticket: PlacementLedger.Ticket, mayRetry: Bool
    ) async throws -> PlacementResult {
        let id = deployment.id
        let from: Set<Orrery_Orchestrator_V1_DeploymentState> = [deployment.state]
        var reserved = try await store.reservations()
        // Its own current reservation is not held against it.
        for assignment in deployment.assignments {
            reserved[assignment.deviceDid] = reserved[assignment.deviceDid]?.subtracting(
                Self.amount(of: assignment.allocation, in: deployment.spec))
        }
        // The fleet as it stands is built (when it changed) outside the ledger; the reservations and the solve, in it.
        let fleetNow = fleet.snapshot()
        let (solver, spec) = (solver, deployment.spec)
        let started = ContinuousClock.now
        let ((snapshot, outcome), doubted) = await placements.choose(ticket, committed: reserved) { reserved in
            let snapshot = fleetNow.reserving(reserved)
            let outcome = solver.place(request, on: snapshot)
            var reserving: [String: Reservation] = [:]
            if case .placed(let placement) = outcome {
                for allocation in placement.allocations {
                    let amount = Self.amount(of: allocation.name, in: spec)
                    for replica in allocation.replicas {
                        reserving[replica.deviceDID] = reserving[replica.deviceDID, default: Reservation()].adding(
                            amount)
                    }
                }
            }
            return ((snapshot, outcome), reserving)
        }
        Metrics.Timer(
            label: "orrery_placement_seconds",
            dimensions: [("outcome", { if case .placed = outcome { "placed" } else { "infeasible" } }())]
        ).record(duration: started.duration(to: .now))
        switch outcome {
        case .placed(let placement):
            let devices = Set(placement.allocations.flatMap { $0.replicas.map(\.deviceDID) }).count
            let reason =
                (why.map { "\($0); " } ?? "")
                + "placed on \(devices) device\(devices == 1 ? "" : "s") of \(snapshot.devices.count) for \(placement.totalCost) NTX"
                + (placement.provenOptimal
                    ? " (cheapest feasible)" : " (search time ran out: feasible, maybe not the cheapest)")
            let logger = logger
            // Only over the revision the placement was computed from: a replica that read the deployment before
            // another placed and offered it again (the state is `offered` once more) must not place it a second time.
            let revision = deployment.revision
            let moved = try await store.transition(
                id, from: from, to: .matched, reason: reason, onlyIf: { $0.revision == revision },
                change: { deployment in
                    deployment.totalCost = placement.totalCost
                    deployment.assignments = Self.assignments(placement)
                })
            guard moved != nil else { return .notPlaced }
            logger.info("deployment matched", metadata: ["deployment": "\(id)", "reason": "\(reason)"])
            return .placed
        case .infeasible:
            // Only in doubt is the committed reservations' room looked at (a second solve).
            let roomByCommitted: Bool = {
                guard doubted, case .placed = solver.place(request, on: fleetNow.reserving(reserved)) else {
                    return false
                }
                return true
            }()
            switch DeploymentPlanner.noRoom(doubted: doubted, roomByCommitted: roomByCommitted, mayRetry: mayRetry) {
            case .tryAgain: return .again
            case .leaveForNextRound:
                logger.info(
                    "no room found while other placements committed; the next round places it again",
                    metadata: ["deployment": "\(id)"])
                return .notPlaced
            case .fail: break
            }
            let explanation = solver.explain(request, on: snapshot)
            let suggestions = explanation.relaxations.map(\.suggestion)
            let reason =
                (why.map { "\($0); " } ?? "") + "cannot be placed: \(explanation.reason)"
                + (suggestions.isEmpty ? "" : "; nearest relaxations: " + suggestions.joined(separator: ", "))
            let revision = deployment.revision
            _ = try await store.transition(
                id, from: from, to: .failed, reason: reason, onlyIf: { $0.revision == revision })
            logger.info("deployment cannot be placed", metadata: ["deployment": "\(id)", "reason": "\(reason)"])
            return .notPlaced
        }
    }

    /// What one replica of allocation `name` of `spec` holds on its device (nothing for a name the spec lacks).
    static func amount(of name: String, in spec: Orrery_Orchestrator_V1_WorkloadSpec) -> Reservation {
        let resources = spec.allocations.first { $0.name == name }?.resources
        return Reservation(
            cores: Int(resources?.cpuCores ?? 0), ramMiB: Int(resources?.ramMib ?? 0),
            diskMiB: Int(resources?.diskMib ?? 0), gpus: Int(resources?.gpu.count ?? 0))
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
