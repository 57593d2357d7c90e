internal import Foundation
internal import Logging
internal import OrreryPlacement
internal import OrreryProto
internal import PostgresNIO
internal import Synchronization
internal import OrreryRuntimeCore

/// Workloads relocate as conditions change: a running stateful replica moves (checkpoint, resume) when another
/// feasible device is markedly better — at least `marginPercent` cheaper, or, at no higher price, with at least
/// `marginPercent` less estimated RTT to the replica's latency targets (its spec's targets and the devices its
/// latency-edge partners run on; and at least `minimumLatencyGain` less, so that noise in the estimates moves
/// nothing). Looked for whenever a device comes online (one joined, came back, or changed) and every
/// `sweepInterval`, over every running deployment, by one orchestrator replica at a time; deployments with a service
/// level are left where they are (a voluntary move would count against its bound), and so are replicas an explicit
/// move placed (`pinned`).
///
/// Moves cannot cycle: a cheaper move lowers the price, a nearer one lowers the estimated latency without raising it.
struct BetterPlacements: Sendable {
    let store: DeploymentStore
    let driver: DeploymentDriver
    let mover: ActorMover
    let logger: Logger
    /// 1…90; 0 turns it off.
    let marginPercent: Int
    var sweepInterval: Duration = .seconds(60)
    /// The least RTT, in milliseconds, a nearer move must save.
    static let minimumLatencyGain = 5.0
    private let kicks = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    init(store: DeploymentStore, driver: DeploymentDriver, mover: ActorMover, logger: Logger, marginPercent: Int) {
        self.store = store
        self.driver = driver
        self.mover = mover
        self.logger = logger
        self.marginPercent = marginPercent
    }

    /// A device came online: look again soon (kicks coalesce).
    func deviceAppeared() { kicks.continuation.yield() }

    func run() async {
        guard marginPercent > 0 else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await PeriodicWork(
                    "the better-placement sweep", every: sweepInterval, pausesFirst: true, logger: logger
                ) {
                    kicks.continuation.yield()
                }.run()
            }
            group.addTask {
                for await _ in kicks.stream {
                    // Let a burst of changes settle (a device's join and its first heartbeat).
                    try? await Task.sleep(for: .milliseconds(500))
                    do {
                        try await look()
                    } catch {
                        logger.warning("looking for better placements failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Moves each running stateful replica for which a markedly better feasible device exists: one pass over every
    /// running deployment, a page at a time, by one replica at a time (the others skip while it looks).
    func look() async throws {
        guard driver.fleet.isSynced else { return }
        try await store.client.withConnection { connection in
            let locked =
                try await connection.query("SELECT pg_try_advisory_lock(\(Self.passLock))", logger: logger)
                .collect().first?.decode(Bool.self) ?? false
            guard locked else { return }
            var failure: (any Error)?
            do {
                var after = ""
                var looked = 0
                while true {
                    let page = try await store.page(in: .running, after: after, limit: 100)
                    for id in page { try await look(at: id) }
                    looked += page.count
                    guard page.count == 100, let last = page.last else { break }
                    after = last
                }
                if looked > 0 {
                    logger.info("looked for better placements", metadata: ["running_deployments": "\(looked)"])
                }
            } catch {
                failure = error
            }
            try await connection.query("SELECT pg_advisory_unlock(\(Self.passLock))", logger: logger)
            if let failure { throw failure }
        }
    }

    /// The advisory lock a pass holds, so that replicas do not move the same replica at once.
    static let passLock: Int64 = 0x6F72_7265_7279_6270  // "orrerybp"

    /// Moves the first replica of one deployment that has a markedly better device.
    private func look(at id: String) async throws {
        // Under a service level every relocation counts against its bound: none is made voluntarily.
        guard let deployment = try await store.deployment(id), deployment.state == .running, !deployment.spec.hasSla
        else { return }
        let stateful = Set(deployment.spec.allocations.filter(\.stateful).map(\.name))
        // A replica placed by an explicit move stays where the user put it.
        for assignment in deployment.assignments where stateful.contains(assignment.allocation) && !assignment.pinned {
            guard
                let (request, snapshot) = try await driver.replacementRequest(
                    deployment, allocation: assignment.allocation, replica: assignment.replica,
                    leaving: assignment.deviceDid),
                let better = Self.better(
                    than: assignment, request: request, snapshot: snapshot, solver: driver.solver,
                    margin: marginPercent)
            else { continue }
            logger.info(
                "moving a replica to a better placement",
                metadata: ["deployment": "\(id)", "allocation": "\(assignment.allocation)", "why": "\(better.why)"])
            do {
                _ = try await mover.move(
                    deployment, allocation: assignment.allocation, replica: assignment.replica,
                    from: assignment.deviceDid, to: better.target.deviceDID, why: better.why)
            } catch {
                logger.warning(
                    "a move to a better placement did not happen",
                    metadata: ["deployment": "\(id)", "error": "\(error)"])
            }
            return  // the deployment changed: its other replicas are looked at next time
        }
    }

    /// A device markedly better for one running replica than the one it runs on, and why; nil when there is none.
    /// `request` is the replica's single-replica request without its current device (`replacementRequest`).
    static func better(
        than assignment: Orrery_Orchestrator_V1_Assignment, request: PlacementRequest, snapshot: PlacementSnapshot,
        solver: PlacementSolver, margin: Int
    ) -> (target: ReplicaPlacement, why: String)? {
        if case .placed(let placed) = solver.place(request, on: snapshot),
            let target = placed.allocations.first?.replicas.first,
            isMarkedlyCheaper(target.hourlyPrice, than: assignment.hourlyPrice, margin: margin)
        {
            let saved = 100 - Int(target.hourlyPrice * 100 / max(assignment.hourlyPrice, 1))
            return (
                target,
                "moved to a device \(saved)% cheaper (\(target.hourlyPrice) instead of \(assignment.hourlyPrice) NTX an hour; margin \(margin)%)"
            )
        }
        guard let targets = request.allocations.first?.constraints.latencyTargets, !targets.isEmpty,
            let current = snapshot.estimatedLatency(of: assignment.deviceDid, to: targets),
            let nearer = solver.nearest(request, on: snapshot, maxHourly: assignment.hourlyPrice),
            isMarkedlyNearer(nearer.latencyMilliseconds, than: current, margin: margin)
        else { return nil }
        func milliseconds(_ value: Double) -> String { String(format: "%.1f ms", value) }
        return (
            nearer.replica,
            "moved to a device nearer its latency targets (an estimated \(milliseconds(nearer.latencyMilliseconds)) instead of \(milliseconds(current)) of RTT; margin \(margin)%; \(nearer.replica.hourlyPrice) instead of \(assignment.hourlyPrice) NTX an hour)"
        )
    }

    /// Whether an estimated latency `candidate` is at least `margin` percent and `minimumLatencyGain` below `current`.
    static func isMarkedlyNearer(_ candidate: Double, than current: Double, margin: Int) -> Bool {
        candidate.isFinite && current.isFinite && current - candidate >= minimumLatencyGain
            && candidate <= current * Double(100 - margin) / 100
    }

    /// Whether `candidate` is at least `margin` percent below `current` (compared without overflow).
    static func isMarkedlyCheaper(_ candidate: UInt64, than current: UInt64, margin: Int) -> Bool {
        candidate < current
            && candidate.multipliedFullWidth(by: 100) <= current.multipliedFullWidth(by: UInt64(100 - margin))
    }
}
