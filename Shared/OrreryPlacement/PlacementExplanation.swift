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
    /// Devices failing each constraint: a device is counted under every constraint it fails, so every constraint
    /// that blocks is named at once.
    public var failing: [ConstraintKind: Int] = [:]
    /// Devices the allocation needs: its replicas when they must be spread over distinct devices, else 1.
    public var needed: Int = 1
}

/// One change to the request that would make it placeable, and what it would admit.
public struct Relaxation: Sendable, Hashable {
    /// The allocation it concerns; nil for ensemble-wide ones (an edge, the budget).
    public var allocation: String?
    /// The constraint's name (`ConstraintKind.rawValue`), or several joined by " + " when only changing them
    /// together admits a device.
    public var constraint: String
    /// What to change, for a person: "raise max_price_per_hour to 1200" (several joined by " and ").
    public var suggestion: String
    /// Devices exactly this change would admit (for an allocation), or 0 when it concerns the ensemble as a whole.
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
            var failing: [ConstraintKind: Int] = [:]
            var candidates = 0
            /// Devices by the set of relaxable constraints they fail (none of the others).
            var failingOnly: [Set<ConstraintKind>: [Int]] = [:]
            var loosened = LoosenedAllocations(allocation, excluded: request.excludedDevices, snapshot: snapshot)
            for index in snapshot.compiled.indices {
                guard let first = allocation.firstFailure(index, in: snapshot) else {
                    candidates += 1
                    continue
                }
                eliminated[first, default: 0] += 1
                let failures = loosened.failures(index, first: first)
                for kind in failures { failing[kind, default: 0] += 1 }
                if failures.allSatisfy(\.isRelaxable) { failingOnly[failures, default: []].append(index) }
            }
            let needed = allocation.request.spread == .spread ? max(1, allocation.request.replicas) : 1
            reports.append(
                AllocationReport(
                    name: allocation.request.name, candidates: candidates, eliminated: eliminated, failing: failing,
                    needed: needed))
            if candidates < needed {
                relaxations += relax(
                    allocation, devicesFailingOnly: failingOnly, missing: needed - candidates, in: snapshot)
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
            // Each allocation that has fewer candidates than it needs, by name.
            let short = reports.filter { $0.candidates < $0.needed }.map { report in
                report.needed == 1
                    ? "no device passes the hard constraints of allocation \"\(report.name)\""
                    : "allocation \"\(report.name)\" spreads \(report.needed) replicas over distinct devices and "
                        + "\(report.candidates) pass\(report.candidates == 1 ? "es" : "") its hard constraints"
            }
            switch infeasibility {
            case .noCandidates(let index):
                reason =
                    short.isEmpty
                    ? "no device passes the hard constraints of allocation \"\(request.allocations[index].name)\""
                    : short.joined(separator: "; ")
            case .noJointPlacement:
                reason =
                    short.isEmpty
                    ? "every allocation has enough candidates, but no combination satisfies the latency edges, "
                        + "spread and free capacity together"
                    : short.joined(separator: "; ")
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

    /// The changes that admit devices: for each set of constraints some devices fail (and nothing else), the values
    /// that admit `missing` of them — the fewest constraints first — and how many devices exactly those values admit.
    private func relax(
        _ allocation: CompiledAllocation, devicesFailingOnly: [Set<ConstraintKind>: [Int]], missing: Int,
        in snapshot: PlacementSnapshot
    ) -> [Relaxation] {
        let order = ConstraintKind.allCases
        let sets = devicesFailingOnly.keys.sorted { a, b in
            if a.count != b.count { return a.count < b.count }
            let (countA, countB) = (devicesFailingOnly[a]?.count ?? 0, devicesFailingOnly[b]?.count ?? 0)
            if countA != countB { return countA > countB }
            return a.map { order.firstIndex(of: $0) ?? 0 }.sorted().lexicographicallyPrecedes(
                b.map { order.firstIndex(of: $0) ?? 0 }.sorted())
        }
        // Every single constraint that admits devices on its own, then the smallest combinations.
        let smallest = sets.first?.count ?? 0
        return sets.filter { $0.count == 1 || $0.count == smallest }.prefix(6).compactMap { set in
            guard let devices = devicesFailingOnly[set], !devices.isEmpty else { return nil }
            let kinds = order.filter(set.contains)
            return relaxation(kinds, devices: devices, missing: missing, allocation, in: snapshot)
        }
    }

    /// The values of `kinds` that admit the `missing` easiest of `devices` (each fails exactly `kinds`), and the
    /// number of `devices` those values admit.
    private func relaxation(
        _ kinds: [ConstraintKind], devices: [Int], missing: Int, _ allocation: CompiledAllocation,
        in snapshot: PlacementSnapshot
    ) -> Relaxation {
        let request = allocation.request
        // What each device needs of each constraint, as a cost: lower is easier to allow.
        func cost(_ kind: ConstraintKind, _ device: Int) -> Double {
            let compiled = snapshot.compiled[device]
            switch kind {
            case .price: return Double(allocation.hourlyPrice(device, in: snapshot))
            case .cpu: return -Double(compiled.cpuCores)
            case .ram: return -Double(compiled.ramMiB)
            case .disk: return -Double(compiled.diskMiB)
            case .reputation: return -compiled.reputation
            case .radius:
                guard let point = compiled.point, let within = request.constraints.within else { return .infinity }
                return GeographicLatency.distanceKm(point, within.center)
            case .latencyTarget:
                let rtts = request.constraints.latencyTargets.map { snapshot.rtt(from: device, to: $0.place) }
                return rtts.contains(nil) ? .infinity : rtts.compactMap { $0 }.max() ?? 0
            default: return 0
            }
        }
        let ranked = devices.sorted { a, b in
            kinds.map { cost($0, a) }.lexicographicallyPrecedes(kinds.map { cost($0, b) })
        }
        let chosen = ranked.prefix(max(1, min(missing, ranked.count)))
        let limits = Dictionary(
            uniqueKeysWithValues: kinds.map { kind in (kind, chosen.map { cost(kind, $0) }.max() ?? 0) })
        let admitted = devices.filter { device in kinds.allSatisfy { cost($0, device) <= (limits[$0] ?? 0) } }.count
        let suggestions = kinds.map { kind -> String in
            let limit = limits[kind] ?? 0
            switch kind {
            case .price: return "raise max_price_per_hour to \(UInt64(limit))"
            case .cpu: return "ask for at most \(Int(-limit)) cpu cores"
            case .ram: return "ask for at most \(Int(-limit)) MiB of RAM"
            case .disk: return "ask for at most \(Int(-limit)) MiB of disk"
            case .reputation: return "lower min_reputation to \((-limit * 100).rounded(.down) / 100)"
            case .radius:
                return limit.isFinite ? "widen the radius to \(Int(limit.rounded(.up))) km" : "drop the radius"
            case .latencyTarget:
                return limit.isFinite
                    ? "allow \(Int(limit.rounded(.up))) ms of RTT to the target" : "drop the latency target"
            default: return "relax \(kind.rawValue)"
            }
        }
        return Relaxation(
            allocation: request.name, constraint: kinds.map(\.rawValue).joined(separator: " + "),
            suggestion: suggestions.joined(separator: " and "), devicesAdmitted: admitted)
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

/// An allocation compiled with sets of its constraints dropped, made as they are asked for, to find every
/// constraint a device fails rather than only the first.
struct LoosenedAllocations {
    let allocation: CompiledAllocation
    let excluded: Set<String>
    let snapshot: PlacementSnapshot
    private var compiled: [Set<ConstraintKind>: CompiledAllocation] = [:]

    init(_ allocation: CompiledAllocation, excluded: Set<String>, snapshot: PlacementSnapshot) {
        self.allocation = allocation
        self.excluded = excluded
        self.snapshot = snapshot
    }

    /// Every constraint device `index` fails, given the first one: each found one is dropped in turn until the
    /// device passes, or fails one that cannot be dropped.
    mutating func failures(_ index: Int, first: ConstraintKind) -> Set<ConstraintKind> {
        var failed: Set<ConstraintKind> = [first]
        var next: ConstraintKind? = first
        while let kind = next, kind.isRelaxable {
            next = dropping(failed).firstFailure(index, in: snapshot)
            if let found = next {
                guard failed.insert(found).inserted else { break }
            }
        }
        return failed
    }

    private mutating func dropping(_ kinds: Set<ConstraintKind>) -> CompiledAllocation {
        if let known = compiled[kinds] { return known }
        var request = allocation.request
        for kind in kinds { request.relax(kind) }
        let made = CompiledAllocation(
            request, snapshot: snapshot, excludedDevices: excluded, pricedAs: allocation.request)
        compiled[kinds] = made
        return made
    }
}

extension AllocationRequest {
    /// Drops one kind of hard constraint.
    mutating func relax(_ kind: ConstraintKind) {
        switch kind {
        case .status, .excluded: break
        case .architecture: architecture = ""
        case .executor: executor = ""
        case .platform: platforms = []
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
