internal import OrreryProto

/// The lifecycle's decisions as pure functions: each reads the facts gathered about one deployment and returns the
/// step to take. `DeploymentDriver` gathers the facts from the database and the fleet, applies the step (a
/// conditional transition, in one transaction), and asks again; nothing here reads a clock, a database or a
/// network, so every decision is tested as data (`DeploymentPlannerTests`).
enum DeploymentPlanner {
    /// One replica of an ensemble.
    struct Replica: Hashable, Sendable, CustomStringConvertible {
        var allocation: String
        var replica: UInt32

        var description: String { "\(allocation)[\(replica)]" }
    }

    /// An offer's part in the round of bids.
    struct Bid: Sendable {
        var device: String
        var state: OfferState
    }

    /// A device that declined an offer of the deployment, or let one lapse.
    struct Refusal: Sendable {
        var device: String
        var reason: String
    }

    /// What an `offered` deployment does next.
    enum BidStep: Equatable, Sendable {
        /// Some device has not answered yet.
        case wait
        /// Every replica's device bid: record the contracts, then escrow.
        case contract
        /// A device declined or let its offer lapse: placed anew without every device that refused.
        case placeAgain(excluding: Set<String>, why: String)
    }

    /// The current round's offers (pending or accepted) against the replicas it needs, and the refusals so far.
    static func nextBidStep(replicas: Int, current: [Bid], refusals: [Refusal]) -> BidStep {
        if current.count == replicas {
            return current.allSatisfy { $0.state == .accepted } ? .contract : .wait
        }
        let why = refusals.last.map { "device \($0.device) declined: \($0.reason)" } ?? "an offer lapsed"
        return .placeAgain(excluding: Set(refusals.map(\.device)), why: why)
    }

    /// What a placement that found no room does.
    enum NoRoomStep: Equatable, Sendable {
        /// Fail the deployment: there is no room by what is certain.
        case fail
        /// Place it again in a moment (another placement's reservation may have been counted twice).
        case tryAgain
        /// Leave it as it is: the next round places it again, after this burst of placements.
        case leaveForNextRound
    }

    /// A placement found no room. It is a verdict only when it counted no other placement's reservation in doubt (one
    /// not committed yet, or committed while its read ran), or when the committed reservations alone leave no room
    /// either; otherwise it is tried again (`mayRetry`) or left for the next round — never failed on a count that
    /// may not stand.
    static func noRoom(doubted: Bool, roomByCommitted: Bool, mayRetry: Bool) -> NoRoomStep {
        guard doubted && roomByCommitted else { return .fail }
        return mayRetry ? .tryAgain : .leaveForNextRound
    }

    /// What is known about a `deploying` or `running` ensemble.
    struct ExecutionFacts: Sendable {
        typealias State = Orrery_Orchestrator_V1_DeploymentState
        typealias DeviceStatus = Orrery_Registry_V1_DeviceStatus

        var state: State
        /// Where each replica is assigned, in the deployment's order.
        var assignments: [(replica: Replica, device: String)]
        /// The replicas' deployed offers (told to start; perhaps running or ended).
        var executions: [OfferStore.Execution]
        /// Replicas with a live offer (pending, accepted, deployed, ended or stopping).
        var live: Set<Replica>
        /// Each device's status as the registry reports it; a device it does not know is absent.
        var deviceStatus: [String: DeviceStatus]
        /// How many devices each replica already left for staying unhealthy.
        var unhealthyMoves: [Replica: Int] = [:]
    }

    /// Devices a replica may stay unhealthy on (stopped there after its restarts in place) before its deployment
    /// fails: the fault is then taken to be the workload's, not a device's.
    static let unhealthyDevicesLimit = 3

    /// What a deploying or running ensemble does next.
    enum ExecutionStep: Equatable, Sendable {
        /// Nothing changed that calls for a step.
        case wait
        /// The replica leaves `device` for another feasible one.
        case relocate(Replica, from: String, why: String)
        /// A replica failed (blamed on its device): the deployment fails and the rest are stopped.
        case fail(Replica, device: String, reason: String)
        /// deploying → running: every replica started.
        case markRunning(reason: String)
        /// running → completed: every replica exited 0.
        case complete(reason: String)
    }

    /// The step, in the order the driver has always taken them: a replica on a device that went offline or left
    /// moves first; then a replica whose new device refused it; then a failure ends the deployment; then it is
    /// running once every replica started, and completed once every one exited 0.
    static func nextExecutionStep(_ facts: ExecutionFacts) -> ExecutionStep {
        guard facts.state == .deploying || facts.state == .running else { return .wait }
        for execution in facts.executions where execution.state == .deploying || execution.state == .running {
            guard let status = facts.deviceStatus[execution.device], status == .offline || status == .left else {
                continue
            }
            return .relocate(
                Replica(allocation: execution.allocation, replica: UInt32(execution.replica)), from: execution.device,
                why: "device \(execution.device) went \(status == .left ? "away" : "offline")")
        }
        for (replica, device) in facts.assignments where !facts.live.contains(replica) {
            return .relocate(replica, from: device, why: "device \(device) refused the relocated replica")
        }
        guard !facts.executions.isEmpty else { return .wait }
        // A replica its device stopped for staying unhealthy through its restarts runs elsewhere — up to a bound.
        if let unhealthy = facts.executions.first(where: { $0.state == .exited && $0.gaveUp }) {
            let replica = Replica(allocation: unhealthy.allocation, replica: UInt32(unhealthy.replica))
            let devices = (facts.unhealthyMoves[replica] ?? 0) + 1
            if devices >= unhealthyDevicesLimit {
                return .fail(
                    replica, device: unhealthy.device,
                    reason: "\(replica) stayed unhealthy on \(devices) devices, the last \(unhealthy.device): "
                        + unhealthy.report)
            }
            return .relocate(replica, from: unhealthy.device, why: "\(unhealthy.report) on \(unhealthy.device)")
        }
        if let failure = facts.executions.first(where: {
            $0.state == .failedToStart || ($0.state == .exited && $0.exitCode != 0)
        }) {
            let what = failure.state == .failedToStart ? "failed to start" : "exited \(failure.exitCode ?? -1)"
            return .fail(
                Replica(allocation: failure.allocation, replica: UInt32(failure.replica)), device: failure.device,
                reason: "\(failure.allocation)[\(failure.replica)] on \(failure.device) \(what): \(failure.report)")
        }
        let started =
            facts.executions.count == facts.assignments.count
            && facts.executions.allSatisfy { $0.state == .running || $0.state == .exited }
        guard started else { return .wait }
        if facts.state == .deploying {
            return .markRunning(reason: "all \(facts.executions.count) allocation(s) started")
        }
        if facts.executions.allSatisfy({ $0.state == .exited && $0.exitCode == 0 }) {
            return .complete(reason: "all \(facts.executions.count) allocation(s) exited 0")
        }
        return .wait
    }

    /// What is known about one deployment: its state and, as far as its state needs them, its offers' paperwork,
    /// its round of bids and its execution.
    struct Facts: Sendable {
        var state: Orrery_Orchestrator_V1_DeploymentState
        /// The replicas it places (its assignments).
        var replicas: Int
        /// The registry's device snapshot is complete (placing on a partial one could pick a worse device).
        var fleetSynced: Bool
        /// A settlement gateway holds each contract's money (without one, nothing is escrowed).
        var settlement: Bool
        /// The current round's offers (pending or accepted) and the refusals so far (`offered`).
        var bids: [Bid] = []
        var refusals: [Refusal] = []
        /// Accepted offers whose contract the notary has not recorded yet.
        var unrecorded = 0
        /// Current offers with a recorded contract not yet escrowed.
        var unescrowed = 0
        /// Accepted offers of an ensemble already deploying (a relocated replica's) that may be deployed: their
        /// contract recorded, and escrowed when a gateway holds the money.
        var deployable = 0
        /// The execution (`deploying`, `running`).
        var execution: ExecutionFacts? = nil
    }

    /// One step of a deployment's lifecycle; the driver applies it (conditional on the state it leaves) and asks
    /// again.
    enum Action: Equatable, Sendable {
        /// Nothing to do until something outside changes (a bid, an agent's report, the fleet).
        case wait
        /// Place it (again, after `why`, without the devices that refused it) → matched, or failed with the reason.
        case place(excluding: Set<String>, after: String?)
        /// matched → offered: an offer per replica.
        case offer
        /// Have the notary record the contracts of the accepted offers (a refusal fails the deployment).
        case recordContracts
        /// offered → contracted: every replica's device bid and its contract is recorded.
        case markContracted
        /// Have the gateway escrow every recorded contract not yet escrowed (a refusal fails the deployment).
        case escrow
        /// contracted → escrowed: every contract is held (or no gateway is configured).
        case markEscrowed
        /// escrowed → deploying: the devices are told to start.
        case startDeploying
        /// A relocated replica's device, its contract recorded and escrowed, is told to start it.
        case deployAccepted
        /// A step of the running ensemble.
        case execution(ExecutionStep)
    }

    /// The next action for a deployment. Money before work: no device is told to start a replica whose contract is
    /// not recorded, or (with a gateway) not escrowed; a final state takes no action.
    static func nextAction(_ facts: Facts) -> Action {
        switch facts.state {
        case .submitted:
            return facts.fleetSynced ? .place(excluding: [], after: nil) : .wait
        case .matched:
            return .offer
        case .offered:
            switch nextBidStep(replicas: facts.replicas, current: facts.bids, refusals: facts.refusals) {
            case .wait: return .wait
            case .contract: return facts.unrecorded > 0 ? .recordContracts : .markContracted
            case .placeAgain(let excluded, let why):
                return facts.fleetSynced ? .place(excluding: excluded, after: why) : .wait
            }
        case .contracted:
            return facts.settlement && facts.unescrowed > 0 ? .escrow : .markEscrowed
        case .escrowed:
            return .startDeploying
        case .deploying, .running:
            if facts.unrecorded > 0 { return .recordContracts }
            if facts.settlement, facts.unescrowed > 0 { return .escrow }
            if facts.deployable > 0 { return .deployAccepted }
            guard let execution = facts.execution else { return .wait }
            let step = nextExecutionStep(execution)
            return step == .wait ? .wait : .execution(step)
        default:
            return .wait
        }
    }

    // MARK: - What users ask for

    /// What `orrery cancel` does.
    enum CancelDecision: Equatable, Sendable {
        /// It ended already (its replicas were told to stop when it did): nothing changes.
        case alreadyEnded
        /// → cancelled, with this reason; every replica still running is told to stop.
        case cancel(reason: String)
    }

    /// A cancel by the deployment's consumer or the operator, with the caller's reason (may be empty).
    static func cancel(
        _ state: Orrery_Orchestrator_V1_DeploymentState, byConsumer: Bool, reason: String
    ) -> CancelDecision {
        guard !state.isTerminal else { return .alreadyEnded }
        return .cancel(
            reason: "cancelled by \(byConsumer ? "the consumer" : "the operator")"
                + (reason.isEmpty ? "" : ": \(reason)"))
    }

    /// What is known when a user asks to move one replica (`orrery move`).
    struct MoveFacts: Sendable {
        var deployment: String
        var state: Orrery_Orchestrator_V1_DeploymentState
        var allocation: String
        var replica: UInt32
        /// The device asked for, if any.
        var toDevice: String?
        /// Whether the allocation is stateful; nil when the deployment has no such allocation.
        var stateful: Bool?
        /// Where the replica runs; nil when the allocation has no such replica.
        var device: String?
        /// The asked-for device's status; nil when the registry does not know it.
        var toDeviceStatus: Orrery_Registry_V1_DeviceStatus?
        /// Why no device (or not the asked-for one) can take it; nil when one can.
        var infeasible: String?
    }

    /// What a move request does: refused with a reason (an invalid request, or one that cannot be met now — the
    /// replica runs on where it is), or the replica moves.
    enum MoveDecision: Equatable, Sendable {
        case invalid(String)
        case refused(String)
        case move(Replica, from: String, to: String?, pin: Bool)
    }

    static func move(_ facts: MoveFacts) -> MoveDecision {
        let name = "\(facts.allocation)[\(facts.replica)]"
        guard facts.state == .running else {
            return .refused("deployment \(facts.deployment) is \(facts.state), not running")
        }
        guard let stateful = facts.stateful else {
            return .invalid("allocation: no '\(facts.allocation)' in the deployment")
        }
        guard stateful else {
            return .refused(
                "\(facts.allocation) is stateless: it restarts elsewhere when its host fails; only stateful allocations move"
            )
        }
        guard let device = facts.device else {
            return .invalid("replica: \(facts.allocation) has no replica \(facts.replica)")
        }
        if let target = facts.toDevice {
            guard target != device else { return .invalid("to_device: it already runs on \(target)") }
            guard facts.toDeviceStatus == .online else {
                return .refused("to_device: \(target) is not an online device")
            }
        }
        if let infeasible = facts.infeasible {
            return .refused(
                "no \(facts.toDevice.map { "device \($0)" } ?? "other device") can take \(name): \(infeasible); it runs on where it is"
            )
        }
        return .move(
            Replica(allocation: facts.allocation, replica: facts.replica), from: device, to: facts.toDevice,
            pin: facts.toDevice != nil)
    }

    /// The state a step moves the deployment to (nil: it stays where it is, or the step decides it elsewhere).
    static func target(of step: ExecutionStep) -> Orrery_Orchestrator_V1_DeploymentState? {
        switch step {
        case .wait: nil
        case .relocate: .deploying
        case .fail: .failed
        case .markRunning: .running
        case .complete: .completed
        }
    }
}
