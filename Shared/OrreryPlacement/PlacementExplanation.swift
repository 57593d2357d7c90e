/// Why an ensemble can or cannot be placed: per allocation, how many devices each hard constraint eliminated; for
/// a placeable ensemble the chosen devices; for one that is not, the nearest relaxations that would make it placeable.
public struct PlacementExplanation: Sendable, Hashable {
    public var devicesConsidered: Int
    public var allocations: [AllocationReport]
    public var placement: Placement?
    /// Empty when placeable.
    public var reason: String
    public var relaxations: [Relaxation]
}

public struct AllocationReport: Sendable, Hashable {
    public var name: String
    /// Devices passing every hard constraint.
    public var candidates: Int
    /// Devices eliminated, each counted under the first constraint it fails, in `ConstraintKind` order.
    public var eliminated: [ConstraintKind: Int]
}

/// One change to the request that would make it placeable, and what it would admit.
public struct Relaxation: Sendable, Hashable {
    /// The allocation it concerns; nil for ensemble-wide ones (an edge, the budget).
    public var allocation: String?
    public var constraint: String
    /// What to change, for a person: "raise max_price_per_hour to 1200".
    public var suggestion: String
    /// Devices it would admit (for an allocation) or 0 when it concerns the ensemble as a whole.
    public var devicesAdmitted: Int
}

extension PlacementSolver {
    /// Explains `request` against `snapshot`; solves it as `place` does. All of it — the solve and the re-solves
    /// that find relaxations — ends within `budget` (four time limits unless given) or when the task is cancelled;
    /// relaxations not tried by then are left out, and the reason says so.
    public func explain(_ request: PlacementRequest, on snapshot: PlacementSnapshot, budget: Duration? = nil)
        -> PlacementExplanation
    {
        let deadline = ContinuousClock.now.advanced(by: budget ?? timeLimit * 4)
        let compiled = request.allocations.map {
            CompiledAllocation($0, snapshot: snapshot, excludedDevices: request.excludedDevices)
        }
        var reports: [AllocationReport] = []
        var relaxations: [Relaxation] = []
        for allocation in compiled {
            var eliminated: [ConstraintKind: Int] = [:]
            var candidates = 0
            var onlyFailing: [ConstraintKind: [Int]] = [:]
            // The allocation with each relaxable constraint dropped, to find devices failing that one alone.
            var relaxed: [ConstraintKind: CompiledAllocation] = [:]
            for kind in ConstraintKind.allCases where kind.isRelaxable {
                var loosened = allocation.request
                loosened.relax(kind)
                relaxed[kind] = CompiledAllocation(
                    loosened, snapshot: snapshot, excludedDevices: request.excludedDevices)
            }
            for index in snapshot.compiled.indices {
                guard let failure = allocation.firstFailure(index, in: snapshot) else {
                    candidates += 1
                    continue
                }
                eliminated[failure, default: 0] += 1
                if let loosened = relaxed[failure], loosened.firstFailure(index, in: snapshot) == nil {
                    onlyFailing[failure, default: []].append(index)
                }
            }
            reports.append(
                AllocationReport(name: allocation.request.name, candidates: candidates, eliminated: eliminated))
            if candidates < max(1, allocation.request.spread == .spread ? allocation.request.replicas : 1) {
                relaxations += relax(allocation, devicesFailingOnly: onlyFailing, in: snapshot)
            }
        }
        let devices = snapshot.devices.count
        switch place(request, on: snapshot, deadline: deadline) {
        case .placed(let placement):
            return PlacementExplanation(
                devicesConsidered: devices, allocations: reports, placement: placement, reason: "",
                relaxations: [])
        case .infeasible(let infeasibility):
            var reason: String
            switch infeasibility {
            case .noCandidates(let index):
                reason = "no device passes the hard constraints of allocation \"\(request.allocations[index].name)\""
            case .noJointPlacement:
                reason =
                    "every allocation has candidates, but no combination satisfies the latency edges, spread "
                    + "and capacity together"
                let (ensemble, complete) = relaxEnsemble(request, on: snapshot, deadline: deadline)
                relaxations += ensemble
                if !complete { reason += " (not every edge and spread could be tried in time)" }
            case .overBudget:
                reason = "every placement costs more than the budget of \(request.budget ?? 0)"
                var unbounded = request
                unbounded.budget = nil
                if case .placed(let cheapest) = place(unbounded, on: snapshot, deadline: deadline) {
                    relaxations.append(
                        Relaxation(
                            allocation: nil, constraint: "budget",
                            suggestion: "raise budget to \(cheapest.totalCost)", devicesAdmitted: 0))
                }
            case .timedOut:
                reason = "the search found no placement within \(timeLimit)"
            }
            return PlacementExplanation(
                devicesConsidered: devices, allocations: reports, placement: nil, reason: reason,
                relaxations: relaxations)
        }
    }

    /// For each constraint whose removal alone admits devices: what value would do, and how many it admits.
    private func relax(
        _ allocation: CompiledAllocation, devicesFailingOnly: [ConstraintKind: [Int]], in snapshot: PlacementSnapshot
    ) -> [Relaxation] {
        let request = allocation.request
        return ConstraintKind.allCases.compactMap { kind in
            guard let devices = devicesFailingOnly[kind], !devices.isEmpty else { return nil }
            let suggestion: String
            switch kind {
            case .price:
                let cheapest = devices.map { allocation.hourlyPrice($0, in: snapshot) }.min() ?? 0
                suggestion = "raise max_price_per_hour to \(cheapest)"
            case .cpu:
                let most = devices.map { snapshot.compiled[$0].cpuCores }.max() ?? 0
                suggestion = "ask for at most \(most) cpu cores"
            case .ram:
                let most = devices.map { snapshot.compiled[$0].ramMiB }.max() ?? 0
                suggestion = "ask for at most \(most) MiB of RAM"
            case .disk:
                let most = devices.map { snapshot.compiled[$0].diskMiB }.max() ?? 0
                suggestion = "ask for at most \(most) MiB of disk"
            case .latencyTarget:
                let nearest = devices.compactMap { device in
                    request.constraints.latencyTargets.compactMap { snapshot.rtt(from: device, to: $0.place) }.max()
                }.min()
                suggestion =
                    nearest.map { "allow \(Int($0.rounded(.up))) ms of RTT to the target" }
                    ?? "drop the latency target"
            case .radius:
                let nearest = devices.compactMap { device in
                    snapshot.compiled[device].point.flatMap { point in
                        request.constraints.within.map { GeographicLatency.distanceKm(point, $0.center) }
                    }
                }.min()
                suggestion = nearest.map { "widen the radius to \(Int($0.rounded(.up))) km" } ?? "drop the radius"
            case .reputation:
                let best = devices.map { snapshot.compiled[$0].reputation }.max() ?? 0
                suggestion = "lower min_reputation to \((best * 100).rounded(.down) / 100)"
            default:
                suggestion = "relax \(kind.rawValue)"
            }
            return Relaxation(
                allocation: request.name, constraint: kind.rawValue, suggestion: suggestion,
                devicesAdmitted: devices.count)
        }
    }

    /// For an ensemble whose allocations each have candidates: which single edge or spread, dropped, places it.
    /// The edges and spreads whose removal alone makes the ensemble placeable; false when the deadline or a
    /// cancellation cut the search short.
    private func relaxEnsemble(
        _ request: PlacementRequest, on snapshot: PlacementSnapshot, deadline: ContinuousClock.Instant
    ) -> ([Relaxation], complete: Bool) {
        var relaxations: [Relaxation] = []
        func outOfTime() -> Bool { ContinuousClock.now >= deadline || Task.isCancelled }
        for (index, edge) in request.edges.enumerated() {
            if outOfTime() { return (relaxations, false) }
            var without = request
            without.edges.remove(at: index)
            guard case .placed(let placement) = place(without, on: snapshot, deadline: deadline) else { continue }
            var needed = 0.0
            for a in placement.allocations[edge.from].replicas {
                for b in placement.allocations[edge.to].replicas {
                    if let first = snapshot.index(of: a.deviceDID), let second = snapshot.index(of: b.deviceDID),
                        let rtt = snapshot.rtt(between: first, and: second)
                    {
                        needed = max(needed, rtt)
                    }
                }
            }
            let from = request.allocations[edge.from].name
            let to = request.allocations[edge.to].name
            relaxations.append(
                Relaxation(
                    allocation: nil, constraint: "latency edge \(from) ↔ \(to)",
                    suggestion: "allow \(Int(needed.rounded(.up))) ms on the edge \(from) ↔ \(to)",
                    devicesAdmitted: 0))
        }
        for (index, allocation) in request.allocations.enumerated() where allocation.spread == .spread {
            if outOfTime() { return (relaxations, false) }
            var without = request
            without.allocations[index].spread = .any
            if case .placed = place(without, on: snapshot, deadline: deadline) {
                relaxations.append(
                    Relaxation(
                        allocation: allocation.name, constraint: "spread",
                        suggestion: "let replicas of \(allocation.name) share devices", devicesAdmitted: 0))
            }
        }
        return (relaxations, true)
    }
}

extension ConstraintKind {
    /// Constraints a person can loosen in the spec (status and exclusions are not theirs to change).
    var isRelaxable: Bool { self != .status && self != .excluded }
}

extension AllocationRequest {
    /// Drops one kind of hard constraint.
    mutating func relax(_ kind: ConstraintKind) {
        switch kind {
        case .status, .excluded: break
        case .architecture: architecture = ""
        case .cpu: cpuCores = 0
        case .ram: ramMiB = 0
        case .disk: diskMiB = 0
        case .gpu: gpu = GPURequirement()
        case .country:
            constraints.acceptCountries = []
            constraints.rejectCountries = []
        case .region:
            constraints.acceptRegions = []
            constraints.rejectRegions = []
        case .radius: constraints.within = nil
        case .latencyTarget: constraints.latencyTargets = []
        case .price: constraints.maxPricePerHour = nil
        case .labels: constraints.requiredLabels = [:]
        case .providers:
            constraints.allowedProviders = []
            constraints.deniedProviders = []
        case .reputation: constraints.minReputation = nil
        }
    }
}
