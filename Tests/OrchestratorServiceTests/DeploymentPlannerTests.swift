import OrreryProto
import Testing

@testable import OrchestratorService

/// The lifecycle's decisions as data: each step from given facts, and random event sequences against a model of an
/// ensemble whose invariants every decision must keep.
@Suite("Deployment planner: the lifecycle's decisions as pure functions")
struct DeploymentPlannerTests {
    typealias Replica = DeploymentPlanner.Replica
    typealias Facts = DeploymentPlanner.ExecutionFacts

    static func execution(
        _ allocation: String, _ replica: Int, on device: String, _ state: OfferState, exit: Int32? = nil
    ) -> OfferStore.Execution {
        OfferStore.Execution(
            allocation: allocation, replica: replica, device: device, state: state, exitCode: exit, report: "report")
    }

    static func facts(
        _ state: Orrery_Orchestrator_V1_DeploymentState, _ executions: [OfferStore.Execution],
        offline: [String: Orrery_Registry_V1_DeviceStatus] = [:], notLive: Set<Replica> = []
    ) -> Facts {
        let assignments = executions.map {
            (replica: Replica(allocation: $0.allocation, replica: UInt32($0.replica)), device: $0.device)
        }
        var status: [String: Orrery_Registry_V1_DeviceStatus] = [:]
        for execution in executions { status[execution.device] = offline[execution.device] ?? .online }
        return Facts(
            state: state, assignments: assignments, executions: executions,
            live: Set(assignments.map(\.replica)).subtracting(notLive), deviceStatus: status)
    }

    @Test(
        "no room: a verdict only when certain — in doubt with room by the committed reservations, tried again, then left for the next round, never failed"
    )
    func noRoom() {
        #expect(DeploymentPlanner.noRoom(doubted: false, roomByCommitted: false, mayRetry: true) == .fail)
        #expect(DeploymentPlanner.noRoom(doubted: true, roomByCommitted: false, mayRetry: true) == .fail)
        #expect(DeploymentPlanner.noRoom(doubted: true, roomByCommitted: true, mayRetry: true) == .tryAgain)
        #expect(DeploymentPlanner.noRoom(doubted: true, roomByCommitted: true, mayRetry: false) == .leaveForNextRound)
    }

    @Test("bids: wait for every answer, contract when all bid, place again without each device that refused")
    func bids() {
        typealias Bid = DeploymentPlanner.Bid
        #expect(
            DeploymentPlanner.nextBidStep(
                replicas: 2, current: [Bid(device: "a", state: .accepted), Bid(device: "b", state: .pending)],
                refusals: []) == .wait)
        #expect(
            DeploymentPlanner.nextBidStep(
                replicas: 2, current: [Bid(device: "a", state: .accepted), Bid(device: "b", state: .accepted)],
                refusals: [DeploymentPlanner.Refusal(device: "c", reason: "busy")]) == .contract)
        #expect(
            DeploymentPlanner.nextBidStep(
                replicas: 2, current: [Bid(device: "a", state: .accepted)],
                refusals: [
                    DeploymentPlanner.Refusal(device: "c", reason: "busy"),
                    DeploymentPlanner.Refusal(device: "b", reason: "would over-commit"),
                ]) == .placeAgain(excluding: ["b", "c"], why: "device b declined: would over-commit"))
        #expect(
            DeploymentPlanner.nextBidStep(replicas: 1, current: [], refusals: [])
                == .placeAgain(excluding: [], why: "an offer lapsed"))
    }

    @Test(
        "a replica its device stopped for staying unhealthy moves elsewhere, before a failure is acted on; on the third device it fails the deployment"
    )
    func unhealthyReplicaMoves() {
        let a0 = Replica(allocation: "a", replica: 0)
        var gaveUp = Self.execution("a", 0, on: "d1", .exited, exit: 137)
        gaveUp.gaveUp = true
        var facts = Self.facts(.running, [gaveUp, Self.execution("a", 1, on: "d2", .running)])
        #expect(
            DeploymentPlanner.nextExecutionStep(facts) == .relocate(a0, from: "d1", why: "report on d1"))
        facts.unhealthyMoves = [a0: 1]
        #expect(
            DeploymentPlanner.nextExecutionStep(facts) == .relocate(a0, from: "d1", why: "report on d1"))
        facts.unhealthyMoves = [a0: 2]
        #expect(
            DeploymentPlanner.nextExecutionStep(facts)
                == .fail(a0, device: "d1", reason: "a[0] stayed unhealthy on 3 devices, the last d1: report"))
        // Without the flag, the same exit fails the deployment as any other.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.running, [Self.execution("a", 0, on: "d1", .exited, exit: 137)]))
                == .fail(a0, device: "d1", reason: "a[0] on d1 exited 137: report"))
    }

    @Test("execution steps, one fact at a time")
    func executionSteps() {
        let a0 = Replica(allocation: "a", replica: 0)
        // Started, not all: wait; all started: running; all exited 0 (running): completed; one still runs: wait.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .deploying,
                    [Self.execution("a", 0, on: "d1", .running), Self.execution("a", 1, on: "d2", .deploying)]))
                == .wait)
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .deploying,
                    [Self.execution("a", 0, on: "d1", .running), Self.execution("a", 1, on: "d2", .exited, exit: 0)]))
                == .markRunning(reason: "all 2 allocation(s) started"))
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .running,
                    [
                        Self.execution("a", 0, on: "d1", .exited, exit: 0),
                        Self.execution("a", 1, on: "d2", .exited, exit: 0),
                    ]))
                == .complete(reason: "all 2 allocation(s) exited 0"))
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .running,
                    [Self.execution("a", 0, on: "d1", .exited, exit: 0), Self.execution("a", 1, on: "d2", .running)]))
                == .wait)
        // A failure (exit ≠ 0, or failed to start) fails it, blamed on that device.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .running,
                    [Self.execution("a", 0, on: "d1", .exited, exit: 3), Self.execution("a", 1, on: "d2", .running)]))
                == .fail(a0, device: "d1", reason: "a[0] on d1 exited 3: report"))
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.deploying, [Self.execution("a", 0, on: "d1", .failedToStart)]))
                == .fail(a0, device: "d1", reason: "a[0] on d1 failed to start: report"))
        // A replica on a device gone offline or away moves — before a failure elsewhere is acted on; an ended one
        // on an offline device does not.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(
                    .running,
                    [Self.execution("a", 0, on: "d1", .running), Self.execution("a", 1, on: "d2", .exited, exit: 1)],
                    offline: ["d1": .offline])) == .relocate(a0, from: "d1", why: "device d1 went offline"))
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.deploying, [Self.execution("a", 0, on: "d1", .deploying)], offline: ["d1": .left]))
                == .relocate(a0, from: "d1", why: "device d1 went away"))
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.running, [Self.execution("a", 0, on: "d1", .exited, exit: 0)], offline: ["d1": .offline]))
                == .complete(reason: "all 1 allocation(s) exited 0"))
        // A suspect device is not lost: nothing moves.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.running, [Self.execution("a", 0, on: "d1", .running)], offline: ["d1": .suspect])) == .wait)
        // A replica with no live offer (its new device refused it) moves again.
        #expect(
            DeploymentPlanner.nextExecutionStep(
                Self.facts(.deploying, [Self.execution("a", 0, on: "d1", .running)], notLive: [a0]))
                == .relocate(a0, from: "d1", why: "device d1 refused the relocated replica"))
        // Final states take no step.
        for state in [Orrery_Orchestrator_V1_DeploymentState.completed, .failed, .cancelled, .offered] {
            #expect(
                DeploymentPlanner.nextExecutionStep(
                    Self.facts(state, [Self.execution("a", 0, on: "d1", .exited, exit: 1)], offline: ["d1": .offline]))
                    == .wait)
        }
    }

    /// An ensemble as the driver and the agents would leave it: each replica's current offer (a moved replica's old
    /// one retired, its device told to stop it) and each device's status.
    struct Model {
        var state: Orrery_Orchestrator_V1_DeploymentState = .deploying
        var current: [Replica: (device: String, offer: OfferState, exit: Int32?)] = [:]
        var order: [Replica] = []
        var status: [String: Orrery_Registry_V1_DeviceStatus] = [:]
        var history: [String] = []

        var facts: Facts {
            Facts(
                state: state,
                assignments: order.compactMap { replica in current[replica].map { (replica, $0.device) } },
                executions: order.compactMap { replica in
                    guard let offer = current[replica], OfferState.deployed.contains(offer.offer) else { return nil }
                    return OfferStore.Execution(
                        allocation: replica.allocation, replica: Int(replica.replica), device: offer.device,
                        state: offer.offer, exitCode: offer.exit, report: "")
                },
                live: Set(order.filter { current[$0].map { OfferState.live.contains($0.offer) } ?? false }),
                deviceStatus: status)
        }
    }

    @Test(
        "random event sequences: every step is a legal transition, only a replica on a lost device or without a live offer moves, a failure fails it, completed only when every replica exited 0, and a settled ensemble is never left waiting"
    )
    func randomSequences() {
        var generator = SystemRandomNumberGenerator()
        let devices = (0..<5).map { "d\($0)" }
        for _ in 0..<3000 {
            var model = Model()
            for device in devices { model.status[device] = .online }
            let count = Int.random(in: 1...3, using: &generator)
            for index in 0..<count {
                let replica = Replica(allocation: index % 2 == 0 ? "a" : "b", replica: UInt32(index / 2))
                model.order.append(replica)
                model.current[replica] = (devices[index], .deploying, nil)
            }
            for _ in 0..<40 {
                guard !model.state.isTerminal else {
                    #expect(DeploymentPlanner.nextExecutionStep(model.facts) == .wait)
                    break
                }
                Self.randomEvent(&model, devices: devices, using: &generator)
                Self.settle(&model, devices: devices)
            }
        }
    }

    /// One thing that happens outside the driver: an agent reports, a device's status changes, an offer is refused.
    static func randomEvent(_ model: inout Model, devices: [String], using generator: inout some RandomNumberGenerator)
    {
        guard let replica = model.order.randomElement(using: &generator), let offer = model.current[replica] else {
            return
        }
        let device = devices.randomElement(using: &generator) ?? "d0"
        switch Int.random(in: 0..<8, using: &generator) {
        case 0 where offer.offer == .pending: model.current[replica]?.offer = .accepted
        case 0 where offer.offer == .accepted: model.current[replica]?.offer = .deploying
        case 1 where offer.offer == .deploying && model.status[offer.device] == .online:
            model.current[replica]?.offer = .running
        case 2 where offer.offer == .running && model.status[offer.device] == .online:
            model.current[replica]?.offer = .exited
            model.current[replica]?.exit = Int.random(in: 0..<6, using: &generator) == 0 ? 1 : 0
        case 3 where offer.offer == .deploying && model.status[offer.device] == .online:
            if Int.random(in: 0..<4, using: &generator) == 0 { model.current[replica]?.offer = .failedToStart }
        case 4: model.status[device] = .offline
        case 5: model.status[device] = .online
        case 6: model.status[device] = Int.random(in: 0..<3, using: &generator) == 0 ? .left : .suspect
        case 7 where offer.offer == .pending: model.current[replica]?.offer = .declined
        default: break
        }
        model.history.append("\(replica) \(model.current[replica].map { "\($0.device) \($0.offer)" } ?? "-")")
    }

    /// Applies the planner's steps (as the driver would) until it waits, checking each against the model.
    static func settle(_ model: inout Model, devices: [String]) {
        for _ in 0..<20 {
            let facts = model.facts
            let step = DeploymentPlanner.nextExecutionStep(facts)
            if let target = DeploymentPlanner.target(of: step) {
                #expect(
                    DeploymentLifecycle.allows(model.state, target), "\(model.state) → \(target): \(model.history)")
            }
            switch step {
            case .wait:
                checkSettled(model)
                return
            case .relocate(let replica, let from, _):
                guard let offer = model.current[replica] else {
                    Issue.record("relocated \(replica), which has no offer")
                    return
                }
                #expect(offer.device == from)
                // Never a second copy: only a replica whose device is lost, or whose offer is not live, moves.
                let lost = model.status[from] == .offline || model.status[from] == .left
                #expect(
                    (lost && (offer.offer == .deploying || offer.offer == .running))
                        || !OfferState.live.contains(offer.offer), "moved \(replica) (\(offer)): \(model.history)")
                // Where the driver would place it: any other online device; none left fails it, as the driver does.
                if let target = devices.first(where: { $0 != from && model.status[$0] == .online }) {
                    model.current[replica] = (target, .pending, nil)
                    model.state = .deploying
                } else {
                    model.state = .failed
                }
            case .fail(let replica, let device, _):
                let offer = model.current[replica]
                #expect(offer?.device == device)
                #expect(offer?.offer == .failedToStart || (offer?.offer == .exited && offer?.exit != 0))
                model.state = .failed
            case .markRunning:
                #expect(model.state == .deploying)
                #expect(model.order.allSatisfy { [.running, .exited].contains(model.current[$0]?.offer) })
                model.state = .running
            case .complete:
                #expect(model.state == .running)
                #expect(model.order.allSatisfy { model.current[$0]?.offer == .exited && model.current[$0]?.exit == 0 })
                model.state = .completed
            }
        }
        Issue.record("the planner never settled: \(model.history)")
    }

    /// What must hold once the planner waits: nothing it should have acted on is left.
    static func checkSettled(_ model: Model) {
        guard !model.state.isTerminal else { return }
        for replica in model.order {
            guard let offer = model.current[replica] else { continue }
            let lost = model.status[offer.device] == .offline || model.status[offer.device] == .left
            #expect(!(lost && [.deploying, .running].contains(offer.offer)), "left on a lost device: \(model.history)")
            #expect(OfferState.live.contains(offer.offer), "left without a live offer: \(model.history)")
            #expect(
                offer.offer != .failedToStart && !(offer.offer == .exited && offer.exit != 0),
                "a failure ignored: \(model.history)")
        }
        let offers = model.order.compactMap { model.current[$0]?.offer }
        if offers.count == model.order.count, offers.allSatisfy({ $0 == .running || $0 == .exited }) {
            #expect(model.state == .running, "every replica started, still \(model.state): \(model.history)")
            #expect(
                !model.order.allSatisfy { model.current[$0]?.exit == 0 && model.current[$0]?.offer == .exited },
                "every replica exited 0, not completed: \(model.history)")
        }
    }

    // MARK: - The whole lifecycle

    static func facts(
        _ state: Orrery_Orchestrator_V1_DeploymentState, synced: Bool = true, settlement: Bool = true,
        bids: [DeploymentPlanner.Bid] = [], refusals: [DeploymentPlanner.Refusal] = [], unrecorded: Int = 0,
        unescrowed: Int = 0, deployable: Int = 0, execution: Facts? = nil
    ) -> DeploymentPlanner.Facts {
        DeploymentPlanner.Facts(
            state: state, replicas: 2, fleetSynced: synced, settlement: settlement, bids: bids, refusals: refusals,
            unrecorded: unrecorded, unescrowed: unescrowed, deployable: deployable, execution: execution)
    }

    @Test("the next action in each state: placed once the fleet is known, money before work, nothing after the end")
    func actions() {
        typealias Bid = DeploymentPlanner.Bid
        let both = [Bid(device: "a", state: .accepted), Bid(device: "b", state: .accepted)]
        let table: [(DeploymentPlanner.Facts, DeploymentPlanner.Action)] = [
            (Self.facts(.submitted), .place(excluding: [], after: nil)),
            (Self.facts(.submitted, synced: false), .wait),
            (Self.facts(.matched), .offer),
            (
                Self.facts(.offered, bids: [Bid(device: "a", state: .accepted), Bid(device: "b", state: .pending)]),
                .wait
            ),
            (Self.facts(.offered, bids: both, unrecorded: 2), .recordContracts),
            (Self.facts(.offered, bids: both), .markContracted),
            (
                Self.facts(
                    .offered, bids: [Bid(device: "a", state: .accepted)],
                    refusals: [DeploymentPlanner.Refusal(device: "b", reason: "busy")]),
                .place(excluding: ["b"], after: "device b declined: busy")
            ),
            (
                Self.facts(
                    .offered, synced: false, bids: [Bid(device: "a", state: .accepted)],
                    refusals: [DeploymentPlanner.Refusal(device: "b", reason: "busy")]), .wait
            ),
            (Self.facts(.contracted, unescrowed: 2), .escrow),
            (Self.facts(.contracted), .markEscrowed),
            (Self.facts(.contracted, settlement: false, unescrowed: 2), .markEscrowed),
            (Self.facts(.escrowed), .startDeploying),
            // A relocated replica: its contract recorded, then escrowed, then deployed — before anything else.
            (Self.facts(.running, unrecorded: 1, unescrowed: 1, deployable: 1), .recordContracts),
            (Self.facts(.running, unescrowed: 1, deployable: 1), .escrow),
            (Self.facts(.deploying, settlement: false, unescrowed: 1, deployable: 1), .deployAccepted),
            (Self.facts(.running, deployable: 1), .deployAccepted),
            (Self.facts(.running), .wait),
            (
                Self.facts(
                    .running,
                    execution: Self.facts(.running, [Self.execution("a", 0, on: "d1", .exited, exit: 0)])),
                .execution(.complete(reason: "all 1 allocation(s) exited 0"))
            ),
        ]
        for (facts, expected) in table {
            let action = DeploymentPlanner.nextAction(facts)
            #expect(action == expected, "\(facts.state): \(action)")
        }
        for state in [Orrery_Orchestrator_V1_DeploymentState.completed, .failed, .cancelled, .unspecified] {
            #expect(
                DeploymentPlanner.nextAction(Self.facts(state, unrecorded: 1, unescrowed: 1, deployable: 1)) == .wait)
        }
    }

    /// A deployment of two replicas as the driver, the notary, the gateway and the agents would leave it.
    struct Lifecycle {
        struct Offer {
            var replica: Int
            var device: String
            var state: OfferState
            var contract = false
            var escrowed = false
            var exit: Int32? = nil
            /// nil: no grace for a final report; else whether it is over (`SettlementPlanner.contractEnded`).
            var graceEnded: Bool? = nil
        }
        var state: Orrery_Orchestrator_V1_DeploymentState = .submitted
        var offers: [Offer] = []
        var assigned: [String] = []
        var online: Set<String> = ["d0", "d1", "d2", "d3"]
        var notaryUp = true
        var notaryRefuses = false
        var gatewayUp = true
        var gatewayRefuses = false
        var history: [String] = []
        /// The driver's actions, as applied.
        var actions: [String] = []

        var current: [Int: Int] {
            var map: [Int: Int] = [:]
            for (index, offer) in offers.enumerated()
            where OfferState.current.contains(offer.state)
                || offer.state == .exited || offer.state == .failedToStart
            {
                map[offer.replica] = index
            }
            return map
        }

        func facts() -> DeploymentPlanner.Facts {
            let round = offers.filter { $0.state == .pending || $0.state == .accepted }
            let refused = offers.filter { $0.state == .declined }
            var facts = DeploymentPlanner.Facts(
                state: state, replicas: assigned.count, fleetSynced: true, settlement: true,
                bids: round.map { DeploymentPlanner.Bid(device: $0.device, state: $0.state) },
                refusals: refused.map { DeploymentPlanner.Refusal(device: $0.device, reason: "no") },
                unrecorded: offers.filter { [.accepted, .deploying].contains($0.state) && !$0.contract }.count,
                unescrowed: offers.filter { $0.contract && !$0.escrowed && !OfferState.retired.contains($0.state) }
                    .count,
                deployable: offers.filter { $0.state == .accepted && $0.contract && $0.escrowed }.count)
            if state == .deploying || state == .running {
                let deployed = offers.filter { OfferState.deployed.contains($0.state) }
                facts.execution = Facts(
                    state: state,
                    assignments: assigned.enumerated().map { (Replica(allocation: "a", replica: UInt32($0)), $1) },
                    executions: deployed.map {
                        OfferStore.Execution(
                            allocation: "a", replica: $0.replica, device: $0.device, state: $0.state,
                            exitCode: $0.exit, report: "")
                    },
                    live: Set(
                        offers.filter { OfferState.live.contains($0.state) }.map {
                            Replica(allocation: "a", replica: UInt32($0.replica))
                        }),
                    deviceStatus: Dictionary(
                        uniqueKeysWithValues: ["d0", "d1", "d2", "d3"].map {
                            ($0, online.contains($0) ? .online : .offline)
                        }
                    ))
            }
            return facts
        }
    }

    @Test(
        "random lifecycles from submitted: every step legal, never two current offers for a replica, no replica told to start before its contract is recorded and escrowed, a final state is final"
    )
    func randomLifecycles() {
        var generator = SystemRandomNumberGenerator()
        var ends: [Orrery_Orchestrator_V1_DeploymentState: Int] = [:]
        var relocations = 0
        for _ in 0..<2000 {
            var model = Lifecycle()
            for _ in 0..<60 {
                Self.outside(&model, using: &generator)
                Self.drive(&model)
                if model.state.isTerminal { break }
            }
            ends[model.state, default: 0] += 1
            relocations +=
                model.actions.filter {
                    $0.hasPrefix("execution(OrchestratorService.DeploymentPlanner.ExecutionStep.relocate")
                }.count
        }
        // The walks reach every end and relocate replicas: the invariants were checked where it matters.
        #expect((ends[.completed] ?? 0) > 0 && (ends[.failed] ?? 0) > 0 && relocations > 0, "\(ends), \(relocations)")
    }

    /// Something outside the driver: a bid, a decline, an agent's report, a device lost or back, a service down or up.
    static func outside(_ model: inout Lifecycle, using generator: inout some RandomNumberGenerator) {
        let roll = Int.random(in: 0..<14, using: &generator)
        let device = "d\(Int.random(in: 0..<4, using: &generator))"
        guard let index = model.offers.indices.randomElement(using: &generator) else { return }
        let offer = model.offers[index]
        switch roll {
        case 0 where offer.state == .pending, 1 where offer.state == .pending: model.offers[index].state = .accepted
        case 2 where offer.state == .pending: model.offers[index].state = .declined
        case 3 where offer.state == .deploying && model.online.contains(offer.device):
            model.offers[index].state = .running
        case 4 where offer.state == .running && model.online.contains(offer.device):
            model.offers[index].state = .exited
            model.offers[index].exit = Int.random(in: 0..<8, using: &generator) == 0 ? 2 : 0
            model.offers[index].graceEnded = false
        case 12 where [.stopping, .movedAway].contains(offer.state) && model.online.contains(offer.device):
            Self.reportEnd(&model.offers[index])
        case 13
        where offer.state == .deploying && model.online.contains(offer.device)
            && Int.random(in: 0..<4, using: &generator) == 0:
            model.offers[index].state = .failedToStart
        case 5: model.online.remove(device)
        case 6, 7: model.online.insert(device)
        case 8: model.notaryUp.toggle()
        case 9: model.gatewayUp.toggle()
        case 10: model.notaryRefuses = Int.random(in: 0..<30, using: &generator) == 0
        case 11: model.gatewayRefuses = Int.random(in: 0..<30, using: &generator) == 0
        default: break
        }
        model.history.append("\(roll) \(offer.replica)@\(offer.device) \(model.offers[index].state)")
    }

    /// What the driver would do: actions until the planner waits (or a service it needs is down).
    static func drive(_ model: inout Lifecycle) {
        for _ in 0..<12 {
            guard !model.state.isTerminal else {
                #expect(DeploymentPlanner.nextAction(model.facts()) == .wait)
                return
            }
            let before = model.state
            let action = DeploymentPlanner.nextAction(model.facts())
            model.actions.append("\(action)")
            func move(_ to: Orrery_Orchestrator_V1_DeploymentState) { Self.move(&model, to: to) }
            switch action {
            case .wait:
                return
            case .place(let excluded, _):
                let free = ["d0", "d1", "d2", "d3"].filter { model.online.contains($0) && !excluded.contains($0) }
                guard free.count >= 2 else { return move(.failed) }
                for index in model.offers.indices where [.pending, .accepted].contains(model.offers[index].state) {
                    model.offers[index].state = .withdrawn
                }
                model.assigned = Array(free.prefix(2))
                move(.matched)
            case .offer:
                for (replica, device) in model.assigned.enumerated() {
                    model.offers.append(.init(replica: replica, device: device, state: .pending))
                }
                move(.offered)
            case .recordContracts:
                guard model.notaryUp else { return }
                guard !model.notaryRefuses else { return move(.failed) }
                for index in model.offers.indices
                where [.accepted, .deploying].contains(model.offers[index].state) {
                    model.offers[index].contract = true
                }
            case .markContracted:
                move(.contracted)
            case .escrow:
                guard model.gatewayUp else { return }
                guard !model.gatewayRefuses else { return move(.failed) }
                for index in model.offers.indices where model.offers[index].contract {
                    model.offers[index].escrowed = true
                }
            case .markEscrowed:
                move(.escrowed)
            case .startDeploying, .deployAccepted:
                if case .startDeploying = action { move(.deploying) }
                for index in model.offers.indices where model.offers[index].state == .accepted {
                    // Money before work.
                    #expect(
                        model.offers[index].contract && model.offers[index].escrowed,
                        "told to start unpaid: \(model.history)")
                    model.offers[index].state = .deploying
                }
            case .execution(let step):
                switch step {
                case .wait: return
                case .relocate(let replica, let from, _):
                    guard
                        let target = ["d0", "d1", "d2", "d3"].first(where: { $0 != from && model.online.contains($0) })
                    else { return move(.failed) }
                    // As OfferStore.relocate: one its device may run is moved away (ended after its report, or the
                    // grace), one it never started is relocated.
                    for index in model.offers.indices
                    where model.offers[index].replica == Int(replica.replica)
                        && OfferState.current.contains(model.offers[index].state)
                    {
                        if OfferState.mayRun.contains(model.offers[index].state) {
                            model.offers[index].state = .movedAway
                            model.offers[index].graceEnded = false
                        } else {
                            model.offers[index].state = .relocated
                        }
                    }
                    for index in model.offers.indices
                    where model.offers[index].replica == Int(replica.replica) && model.offers[index].state == .declined
                    {
                        model.offers[index].state = .relocated
                    }
                    model.assigned[Int(replica.replica)] = target
                    model.offers.append(.init(replica: Int(replica.replica), device: target, state: .pending))
                    move(.deploying)
                case .fail: move(.failed)
                case .markRunning: move(.running)
                case .complete: move(.completed)
                }
            }
            // Never two current offers for one replica.
            for replica in 0..<model.assigned.count {
                let current = model.offers.filter { $0.replica == replica && OfferState.current.contains($0.state) }
                #expect(
                    current.count <= 1,
                    "replica \(replica) has \(current.count) current offers after \(action): \(model.offers) \(model.history.suffix(6))"
                )
            }
            if model.state == before, case .wait = action { return }
        }
    }

    /// A deployment's move, as `DeploymentStore.transition` makes it: into a final state, offers not yet deployed are
    /// withdrawn and what runs is told to stop (its contract ends after the device's report, or the grace).
    static func move(_ model: inout Lifecycle, to state: Orrery_Orchestrator_V1_DeploymentState) {
        #expect(DeploymentLifecycle.allows(model.state, state), "\(model.state) → \(state): \(model.history)")
        model.state = state
        guard state.isTerminal else { return }
        for index in model.offers.indices {
            switch model.offers[index].state {
            case .pending, .accepted: model.offers[index].state = .withdrawn
            case .deploying, .running:
                model.offers[index].state = .stopping
                model.offers[index].graceEnded = false
            default: break
            }
        }
    }

    /// A device's report that an allocation it was told to stop ended (`OfferStore.record`).
    static func reportEnd(_ offer: inout Lifecycle.Offer) {
        offer.state = offer.state == .movedAway ? .relocated : .exited
        offer.graceEnded = false
    }

    @Test(
        "every contract of a lifecycle ends: after random lifecycles, then a cancel, the devices' reports and the grace, every recorded contract is one SettlementPlanner.contractEnded names (so its escrow is refunded)"
    )
    func everyContractEnds() {
        var generator = SystemRandomNumberGenerator()
        var contracts = 0
        for _ in 0..<2000 {
            var model = Lifecycle()
            for _ in 0..<Int.random(in: 1..<60, using: &generator) {
                Self.outside(&model, using: &generator)
                Self.drive(&model)
                if model.state.isTerminal { break }
            }
            // The user cancels whatever has not ended (cancel decides the same way for any state that is not final).
            if case .cancel = DeploymentPlanner.cancel(model.state, byConsumer: true, reason: "done") {
                Self.move(&model, to: .cancelled)
            }
            // Some devices report the ends they were told of; for the others the grace runs out.
            for index in model.offers.indices
            where [.stopping, .movedAway].contains(model.offers[index].state) && Bool.random(using: &generator) {
                Self.reportEnd(&model.offers[index])
            }
            for index in model.offers.indices where model.offers[index].graceEnded == false {
                model.offers[index].graceEnded = true
            }
            for offer in model.offers where offer.contract {
                contracts += 1
                #expect(
                    SettlementPlanner.contractEnded(state: offer.state, graceEnded: offer.graceEnded),
                    "a contract that never ends (its escrow stays locked): \(offer) after \(model.history)")
            }
        }
        #expect(contracts > 1000, "the walks record contracts: \(contracts)")
    }

    // MARK: - What users ask for

    @Test("cancel: an ended deployment stays as it is; any other is cancelled, saying by whom and why")
    func cancels() {
        for state in DeploymentLifecycleTests.states {
            let decision = DeploymentPlanner.cancel(state, byConsumer: true, reason: "")
            if state.isTerminal {
                #expect(decision == .alreadyEnded)
            } else {
                #expect(decision == .cancel(reason: "cancelled by the consumer"), "\(state)")
                #expect(DeploymentLifecycle.allows(state, .cancelled) || state == .unspecified)
            }
        }
        #expect(
            DeploymentPlanner.cancel(.running, byConsumer: false, reason: "maintenance")
                == .cancel(reason: "cancelled by the operator: maintenance"))
    }

    @Test(
        "move: refused in order (not running, unknown allocation, stateless, unknown replica, same or offline device, nowhere to go), else moved and pinned when a device was named"
    )
    func moves() {
        let base = DeploymentPlanner.MoveFacts(
            deployment: "dep_1", state: .running, allocation: "counter", replica: 0, toDevice: nil, stateful: true,
            device: "d1", toDeviceStatus: nil, infeasible: nil)
        func decide(_ change: (inout DeploymentPlanner.MoveFacts) -> Void) -> DeploymentPlanner.MoveDecision {
            var facts = base
            change(&facts)
            return DeploymentPlanner.move(facts)
        }
        let counter = Replica(allocation: "counter", replica: 0)
        #expect(decide { _ in } == .move(counter, from: "d1", to: nil, pin: false))
        #expect(
            decide {
                $0.toDevice = "d2"
                $0.toDeviceStatus = .online
            } == .move(counter, from: "d1", to: "d2", pin: true))
        #expect(decide { $0.state = .failed } == .refused("deployment dep_1 is failed, not running"))
        #expect(decide { $0.stateful = nil } == .invalid("allocation: no 'counter' in the deployment"))
        #expect(
            decide { $0.stateful = false }
                == .refused(
                    "counter is stateless: it restarts elsewhere when its host fails; only stateful allocations move"))
        #expect(decide { $0.device = nil } == .invalid("replica: counter has no replica 0"))
        #expect(decide { $0.toDevice = "d1" } == .invalid("to_device: it already runs on d1"))
        #expect(
            decide {
                $0.toDevice = "d2"
                $0.toDeviceStatus = .suspect
            } == .refused("to_device: d2 is not an online device"))
        #expect(decide { $0.toDevice = "d2" } == .refused("to_device: d2 is not an online device"))
        #expect(
            decide { $0.infeasible = "no device has 2 free cores" }
                == .refused("no other device can take counter[0]: no device has 2 free cores; it runs on where it is"))
        #expect(
            decide {
                $0.toDevice = "d2"
                $0.toDeviceStatus = .online
                $0.infeasible = "too far"
            } == .refused("no device d2 can take counter[0]: too far; it runs on where it is"))
    }
}
