/// Places an ensemble jointly: hard constraints filter each allocation's candidates, then a depth-first branch and
/// bound assigns every replica at once — latency edges and capacity propagated after each choice — and returns the
/// cheapest feasible placement it proves within the time limit (or the cheapest found when time runs out).
///
/// Pure: no I/O, no clock other than the deadline, deterministic for a given snapshot and request.
public struct PlacementSolver: Sendable {
    public var timeLimit: Duration

    public init(timeLimit: Duration = .milliseconds(200)) {
        self.timeLimit = timeLimit
    }

    public func place(_ request: PlacementRequest, on snapshot: PlacementSnapshot) -> PlacementOutcome {
        place(request, on: snapshot, deadline: ContinuousClock.now.advanced(by: timeLimit))
    }

    /// `place` with the search ending at `deadline` (never later than the time limit from now).
    func place(_ request: PlacementRequest, on snapshot: PlacementSnapshot, deadline: ContinuousClock.Instant)
        -> PlacementOutcome
    {
        let deadline = min(deadline, ContinuousClock.now.advanced(by: timeLimit))
        let allocations = request.allocations.map {
            CompiledAllocation($0, snapshot: snapshot, excludedDevices: request.excludedDevices)
        }
        if allocations.count == 1, request.edges.isEmpty, allocations[0].request.replicas == 1 {
            return placeSingle(allocations[0], budget: request.budget, on: snapshot)
        }
        var domains: [RankedDomain] = []
        for (index, allocation) in allocations.enumerated() {
            let domain = RankedDomain(candidates(for: allocation, in: snapshot))
            if domain.count < (allocation.request.spread == .spread ? allocation.request.replicas : 1) {
                return .infeasible(.noCandidates(allocation: index))
            }
            domains.append(domain)
        }
        var search = Search(
            snapshot: snapshot, allocations: allocations, domains: domains, edges: request.edges,
            budget: request.budget, deadline: deadline)
        search.run()
        guard let best = search.best else {
            if search.timedOut { return .infeasible(.timedOut) }
            if search.budgetPruned { return .infeasible(.overBudget) }
            return .infeasible(.noJointPlacement)
        }
        return .placed(
            placement(
                of: allocations, assignment: best.assignment, cost: best.cost, provenOptimal: !search.timedOut,
                nodes: search.nodes, in: snapshot))
    }

    /// One allocation, one replica, no edges: the best candidate by one scan in ascending price per core-hour,
    /// stopping once that lower bound passes the best cost found (the same choice as the general search).
    private func placeSingle(_ allocation: CompiledAllocation, budget: UInt64?, on snapshot: PlacementSnapshot)
        -> PlacementOutcome
    {
        var best: Candidate?
        var scanned = 0
        let cores = UInt64(max(allocation.cpuCores, 0))
        snapshot.compiled.withUnsafeBufferPointer { devices in
            // Each list is in ascending price per core-hour, so each scan stops where its floor passes the best.
            for list in snapshot.scanLists(for: allocation) {
                for index in list {
                    let device = devices[index]
                    if let best {
                        let floor = Cost.job(
                            hourly: Cost.multiply(device.prices.perCoreHour, cores),
                            seconds: allocation.durationSeconds, minimum: 0)
                        if floor > best.cost { break }
                    }
                    scanned += 1
                    guard allocation.firstFailure(index, device, in: snapshot) == nil else { continue }
                    let candidate = makeCandidate(index, device, allocation, in: snapshot)
                    if best.map({ Self.precedes(candidate, $0) }) ?? true { best = candidate }
                }
            }
        }
        guard let best else { return .infeasible(.noCandidates(allocation: 0)) }
        if let budget, best.cost > budget { return .infeasible(.overBudget) }
        return .placed(
            placement(
                of: [allocation], assignment: [[best]], cost: best.cost, provenOptimal: true, nodes: scanned,
                in: snapshot))
    }

    /// For one replica of the request's single allocation: the feasible device nearest its latency targets (the
    /// least sum of estimated RTTs; ties go to the cheaper, then the better reputation), among devices priced at most
    /// `maxHourly` an hour. Devices whose RTT to a target cannot be estimated are passed over. Nil when the request
    /// is not one allocation with latency targets, or no device qualifies.
    public func nearest(_ request: PlacementRequest, on snapshot: PlacementSnapshot, maxHourly: UInt64)
        -> NearerPlacement?
    {
        guard request.allocations.count == 1, request.edges.isEmpty,
            !request.allocations[0].constraints.latencyTargets.isEmpty
        else { return nil }
        let allocation = CompiledAllocation(
            request.allocations[0], snapshot: snapshot, excludedDevices: request.excludedDevices)
        var best: (candidate: Candidate, latency: Double)?
        snapshot.compiled.withUnsafeBufferPointer { devices in
            for index in devices.indices {
                let device = devices[index]
                guard allocation.hourlyPrice(device) <= maxHourly,
                    allocation.firstFailure(index, device, in: snapshot) == nil,
                    let latency = snapshot.estimatedLatency(
                        of: index, to: allocation.request.constraints.latencyTargets)
                else { continue }
                let candidate = makeCandidate(index, device, allocation, in: snapshot)
                if let current = best {
                    if latency != current.latency {
                        if latency > current.latency { continue }
                    } else if !Self.precedes(candidate, current.candidate) {
                        continue
                    }
                }
                best = (candidate, latency)
            }
        }
        guard let best else { return nil }
        return NearerPlacement(
            replica: ReplicaPlacement(
                deviceDID: snapshot.devices[best.candidate.device].did, hourlyPrice: best.candidate.hourly,
                jobCost: best.candidate.cost, reputation: best.candidate.reputation),
            latencyMilliseconds: best.latency)
    }

    private func placement(
        of allocations: [CompiledAllocation], assignment: [[Candidate]], cost: UInt64, provenOptimal: Bool, nodes: Int,
        in snapshot: PlacementSnapshot
    ) -> Placement {
        let placements = allocations.indices.map { allocationIndex in
            AllocationPlacement(
                name: allocations[allocationIndex].request.name,
                replicas: assignment[allocationIndex].map { candidate in
                    ReplicaPlacement(
                        deviceDID: snapshot.devices[candidate.device].did, hourlyPrice: candidate.hourly,
                        jobCost: candidate.cost, reputation: candidate.reputation)
                })
        }
        return Placement(allocations: placements, totalCost: cost, provenOptimal: provenOptimal, nodesExplored: nodes)
    }

    private func makeCandidate(
        _ index: Int, _ device: CompiledDevice, _ allocation: CompiledAllocation, in snapshot: PlacementSnapshot
    ) -> Candidate {
        var latency = 0.0
        for target in allocation.latencyTargets { latency += snapshot.rtt(from: index, to: target.place) ?? 0 }
        return Candidate(
            device: index, hourly: allocation.hourlyPrice(device), cost: allocation.jobCost(device), latency: latency,
            reputation: device.reputation)
    }

    /// The ranking of candidates: cheaper, then nearer its latency targets, then better reputation, then snapshot
    /// order.
    static func precedes(_ a: Candidate, _ b: Candidate) -> Bool {
        if a.cost != b.cost { return a.cost < b.cost }
        if a.latency != b.latency { return a.latency < b.latency }
        if a.reputation != b.reputation { return a.reputation > b.reputation }
        return a.device < b.device
    }

    /// Every device passing `allocation`'s hard constraints, unordered. Only the devices of `scanLists` are looked at,
    /// in the snapshot's order (memory order: over 100,000 devices, reading them in price order cost more than it
    /// saved).
    func candidates(for allocation: CompiledAllocation, in snapshot: PlacementSnapshot) -> [Candidate] {
        var domain: [Candidate] = []
        let lists = snapshot.scanLists(for: allocation)
        domain.reserveCapacity(lists.reduce(0) { $0 + $1.count })
        snapshot.compiled.withUnsafeBufferPointer { devices in
            if lists.count == 1, lists[0].count == devices.count {
                for index in devices.indices where allocation.firstFailure(index, devices[index], in: snapshot) == nil {
                    domain.append(makeCandidate(index, devices[index], allocation, in: snapshot))
                }
                return
            }
            for index in lists.joined().sorted()
            where allocation.firstFailure(index, devices[index], in: snapshot) == nil {
                domain.append(makeCandidate(index, devices[index], allocation, in: snapshot))
            }
        }
        return domain
    }
}

/// The result of `PlacementSolver.place`.
public enum PlacementOutcome: Sendable {
    case placed(Placement)
    case infeasible(Infeasibility)
}

/// Why no placement was returned.
public enum Infeasibility: Sendable, Hashable {
    /// No device passes this allocation's hard constraints (or too few for its spread replicas).
    case noCandidates(allocation: Int)
    /// Each allocation has candidates, but no combination satisfies the edges, spread and capacity together.
    case noJointPlacement
    /// Every joint placement costs more than the budget.
    case overBudget
    /// The search ran out of time before finding any placement.
    case timedOut
}

/// A chosen device for every replica of every allocation.
public struct Placement: Sendable, Hashable {
    public var allocations: [AllocationPlacement]
    public var totalCost: UInt64
    /// False when the time limit cut the search short: the placement is feasible but maybe not the cheapest.
    public var provenOptimal: Bool
    public var nodesExplored: Int
}

public struct AllocationPlacement: Sendable, Hashable {
    public var name: String
    public var replicas: [ReplicaPlacement]
}

public struct ReplicaPlacement: Sendable, Hashable {
    public var deviceDID: String
    public var hourlyPrice: UInt64
    /// The run's price at the allocation's maximum duration (the hourly price without one).
    public var jobCost: UInt64
    public var reputation: Double
}

/// The device `PlacementSolver.nearest` found, with its estimated latency to the allocation's targets.
public struct NearerPlacement: Sendable, Hashable {
    public var replica: ReplicaPlacement
    /// The sum of its estimated RTTs to the allocation's latency targets.
    public var latencyMilliseconds: Double
}

/// A device in an allocation's domain with its price for that allocation.
struct Candidate: Sendable {
    var device: Int
    var hourly: UInt64
    var cost: UInt64
    /// The sum of the estimated RTTs to the allocation's latency targets.
    var latency: Double
    var reputation: Double
}

/// One branch-and-bound run. Allocations are placed one after another (the smallest domain first, then those
/// joined by edges to what is placed), replicas one by one. Each domain stays sorted by cost; a candidate is tried
/// only when it is within every edge of the replicas placed so far and its device has room; the bound adds, for
/// every allocation still to place, its cheapest candidate compatible with everything placed (and with the
/// candidate under consideration, for its neighbours) — forward checking and a lower bound in one scan.
private struct Search {
    let snapshot: PlacementSnapshot
    let latencies: LatencyTable
    let allocations: [CompiledAllocation]
    var domains: [RankedDomain]
    /// Per allocation: the allocations joined to it by an edge, each with the edge's bound (tightened by a shorter
    /// path of edges where the RTT estimates obey the triangle inequality).
    let neighbours: [[(other: Int, maxRTT: Double)]]
    /// Per allocation: the bounds each replica placed on it sets on other replicas — its edges, and where the RTT
    /// estimates obey the triangle inequality also the bounds paths of edges imply (see `impliedBounds`).
    let constraining: [[(other: Int, maxRTT: Double)]]
    let order: [Int]
    let budget: UInt64?
    let deadline: ContinuousClock.Instant

    var assignment: [[Candidate]]
    /// What one replica of each allocation needs.
    let demands: [Usage]
    /// Resources taken on each device by the replicas placed so far, by device index.
    var used: [Usage]
    /// Devices in use, for `pack`.
    var usedDevices: Set<Int> = []
    /// For each allocation: the placed replicas of its neighbours, each with the edge's bound.
    var bounds: [[(device: Int, maxRTT: Double)]]
    var cost: UInt64 = 0
    var best: (assignment: [[Candidate]], cost: UInt64)?
    var nodes = 0
    var timedOut = false
    var budgetPruned = false

    typealias Usage = ResourceAmount

    init(
        snapshot: PlacementSnapshot, allocations: [CompiledAllocation], domains: [RankedDomain], edges: [LatencyEdge],
        budget: UInt64?, deadline: ContinuousClock.Instant
    ) {
        self.snapshot = snapshot
        latencies = snapshot.latencies
        self.allocations = allocations
        self.domains = domains
        var byAllocation = Array(repeating: [(other: Int, maxRTT: Double)](), count: allocations.count)
        for edge in edges {
            byAllocation[edge.from].append((edge.to, edge.maxRTTMilliseconds))
            byAllocation[edge.to].append((edge.from, edge.maxRTTMilliseconds))
        }
        if snapshot.latencies.obeysTriangleInequality {
            let implied = Self.impliedBounds(edges: edges, count: allocations.count)
            neighbours = byAllocation.indices.map { allocation in
                byAllocation[allocation].map { ($0.other, min($0.maxRTT, implied[allocation][$0.other])) }
            }
            constraining = allocations.indices.map { allocation in
                allocations.indices.compactMap { other in
                    let bound = implied[allocation][other]
                    guard bound.isFinite, other != allocation || allocations[allocation].request.replicas > 1 else {
                        return nil
                    }
                    return (other, bound)
                }
            }
        } else {
            neighbours = byAllocation
            constraining = byAllocation
        }
        // Most constrained first; then whatever has the most edges into what is already ordered.
        var order: [Int] = []
        var remaining = Set(allocations.indices)
        while !remaining.isEmpty {
            let next = remaining.min { a, b in
                let linksA = byAllocation[a].filter { order.contains($0.other) }.count
                let linksB = byAllocation[b].filter { order.contains($0.other) }.count
                if linksA != linksB { return linksA > linksB }
                if domains[a].count != domains[b].count { return domains[a].count < domains[b].count }
                if byAllocation[a].count != byAllocation[b].count {
                    return byAllocation[a].count > byAllocation[b].count
                }
                return a < b
            }
            guard let next else { break }
            order.append(next)
            remaining.remove(next)
        }
        self.order = order
        self.budget = budget
        self.deadline = deadline
        assignment = Array(repeating: [], count: allocations.count)
        demands = allocations.map {
            Usage(cores: $0.cpuCores, ramMiB: $0.ramMiB, diskMiB: $0.diskMiB, gpus: $0.gpuCount)
        }
        used = Array(repeating: Usage(), count: snapshot.compiled.count)
        bounds = Array(repeating: [], count: allocations.count)
    }

    mutating func run() {
        placeReplica(level: 0, replica: 0, from: 0)
    }

    /// For every two allocations (an allocation with itself included: two of its replicas), how far apart their
    /// replicas may be: the bound of an edge between them, or the least sum of edge bounds along a path of edges
    /// joining them when that is less — infinity when nothing joins them. With RTT estimates that obey the triangle
    /// inequality, every feasible placement keeps within these, so the solver may reject a pair farther apart at
    /// once instead of finding out deep in the search. A path's sum is loosened by a hair, so that rounding never
    /// rejects a feasible pair; an edge's own bound is kept exact.
    static func impliedBounds(edges: [LatencyEdge], count: Int) -> [[Double]] {
        var direct = Array(repeating: Array(repeating: Double.infinity, count: count), count: count)
        for edge in edges where edge.from < count && edge.to < count {
            direct[edge.from][edge.to] = min(direct[edge.from][edge.to], edge.maxRTTMilliseconds)
            direct[edge.to][edge.from] = min(direct[edge.to][edge.from], edge.maxRTTMilliseconds)
        }
        // Floyd–Warshall, the diagonal starting at infinity: it ends as the shortest closed path.
        var path = direct
        for via in 0..<count {
            for from in 0..<count where path[from][via].isFinite {
                for to in 0..<count {
                    let through = path[from][via] + path[via][to]
                    if through < path[from][to] { path[from][to] = through }
                }
            }
        }
        return (0..<count).map { from in
            (0..<count).map { to in
                let loosened = path[from][to] * (1 + 1e-9) + 1e-9
                return direct[from][to] <= loosened ? direct[from][to] : loosened
            }
        }
    }

    private mutating func placeReplica(level: Int, replica: Int, from: Int) {
        guard level < order.count else {
            if cost < best?.cost ?? .max { best = (assignment, cost) }
            return
        }
        let allocation = order[level]
        let request = allocations[allocation].request
        if replica == request.replicas {
            placeReplica(level: level + 1, replica: 0, from: 0)
            return
        }
        if replica == 0, request.spread == .pack, !usedDevices.isEmpty {
            domains[allocation] = packFirst(domains[allocation])
        }
        let remainingReplicas = UInt64(request.replicas - replica)
        // Every later allocation's cheapest candidate compatible with what is placed: a bound that holds for every
        // candidate. Those a candidate constrains (`laterNeighbours`) raise it per candidate.
        var laterNeighbours: [(allocation: Int, maxRTT: Double, cheapest: UInt64)] = []
        var fixedBound = cost
        for later in order[(level + 1)...] {
            guard let cheapest = cheapestCompatible(later, extra: nil) else { return }
            fixedBound = Cost.add(fixedBound, Cost.multiply(cheapest, UInt64(allocations[later].request.replicas)))
            if let edge = neighbours[allocation].first(where: { $0.other == later }) {
                laterNeighbours.append((later, edge.maxRTT, cheapest))
            }
        }
        let domain = domains[allocation]
        var position = from
        while position < domain.count {
            nodes += 1
            // A cancelled caller (its deadline passed, it hung up, the server stops) ends the search like time does.
            if nodes & 63 == 0, ContinuousClock.now >= deadline || Task.isCancelled { timedOut = true }
            if timedOut { return }
            let candidate = domain[position]
            position += 1
            // Domains are sorted by cost: once this candidate cannot lead below the best, no later one can.
            let floor = Cost.add(fixedBound, Cost.multiply(candidate.cost, remainingReplicas))
            if let best, floor >= best.cost { return }
            if let budget, floor > budget {
                budgetPruned = true
                return
            }
            guard fits(candidate.device, allocation), compatible(candidate.device, with: allocation) else { continue }
            // Each neighbour's cheapest candidate within its edge of this one raises the bound from what `floor`
            // counted (its cheapest without this candidate); none at all, or a bound past the best, rules it out.
            var bound = floor
            var ruledOut = false
            for (neighbour, maxRTT, cheapestAlone) in laterNeighbours {
                guard let cheapest = cheapestCompatible(neighbour, extra: (candidate.device, maxRTT)) else {
                    ruledOut = true
                    break
                }
                let raise = cheapest > cheapestAlone ? cheapest - cheapestAlone : 0
                bound = Cost.add(bound, Cost.multiply(raise, UInt64(allocations[neighbour].request.replicas)))
                if let best, bound >= best.cost {
                    ruledOut = true
                    break
                }
            }
            if ruledOut { continue }
            if let best, bound >= best.cost { continue }
            if let budget, bound > budget {
                budgetPruned = true
                continue
            }
            take(candidate.device, allocation)
            assignment[allocation].append(candidate)
            cost = Cost.add(cost, candidate.cost)
            // Replicas are interchangeable: each takes a candidate at or after the previous one's.
            placeReplica(
                level: level, replica: replica + 1, from: request.spread == .spread ? position : position - 1)
            cost -= candidate.cost
            assignment[allocation].removeLast()
            release(candidate.device, allocation)
            if timedOut { return }
        }
    }

    /// Whether a device is within every edge's bound of the replicas placed on the other side.
    private func compatible(_ device: Int, with allocation: Int) -> Bool {
        bounds[allocation].withUnsafeBufferPointer { bounds in
            for bound in bounds {
                guard let rtt = latencies.rtt(device, bound.device), rtt <= bound.maxRTT else { return false }
            }
            return true
        }
    }

    /// The cost of the cheapest candidate of `allocation` compatible with everything placed, that has room, and
    /// (with `extra`) within `maxRTT` of that device; nil when none is.
    private func cheapestCompatible(_ allocation: Int, extra: (device: Int, maxRTT: Double)?) -> UInt64? {
        let domain = domains[allocation]
        for position in 0..<domain.count {
            let candidate = domain[position]
            if let extra {
                guard let rtt = latencies.rtt(candidate.device, extra.device), rtt <= extra.maxRTT else { continue }
            }
            if fits(candidate.device, allocation), compatible(candidate.device, with: allocation) {
                return candidate.cost
            }
        }
        return nil
    }

    /// Among candidates of equal cost, those on devices the ensemble already uses come first.
    private func packFirst(_ ranked: RankedDomain) -> RankedDomain {
        let domain = ranked.all
        var reordered: [Candidate] = []
        reordered.reserveCapacity(domain.count)
        var start = 0
        while start < domain.count {
            var end = start
            while end < domain.count, domain[end].cost == domain[start].cost { end += 1 }
            let group = domain[start..<end]
            reordered += group.filter { usedDevices.contains($0.device) }
            reordered += group.filter { !usedDevices.contains($0.device) }
            start = end
        }
        return RankedDomain(reordered, ranked: true)
    }

    /// Whether the device still has room for one more replica of `allocation` (every candidate passed the filter,
    /// which compared the device's free resources with one replica; this adds what the search placed there).
    private func fits(_ device: Int, _ allocation: Int) -> Bool {
        let taken = used[device]
        guard !taken.isZero else { return true }
        let demand = demands[allocation]
        let record = snapshot.compiled[device]
        let after = taken.adding(demand)
        return after.cores <= record.cpuCores && after.ramMiB <= record.ramMiB && after.diskMiB <= record.diskMiB
            && after.gpus <= record.gpuCount
    }

    private mutating func take(_ device: Int, _ allocation: Int) {
        let demand = demands[allocation]
        used[device] = used[device].adding(demand)
        usedDevices.insert(device)
        for (other, maxRTT) in constraining[allocation] { bounds[other].append((device, maxRTT)) }
    }

    private mutating func release(_ device: Int, _ allocation: Int) {
        let demand = demands[allocation]
        used[device] = used[device].subtracting(demand)
        if used[device].isZero { usedDevices.remove(device) }
        for (other, _) in constraining[allocation] { bounds[other].removeLast() }
    }
}

extension PlacementSolver {
    /// A lower bound on any placement's cost: every replica at its allocation's cheapest candidate, ignoring
    /// edges, spread and shared capacity; nil when some allocation has no candidate at all.
    public func cheapestPossibleCost(_ request: PlacementRequest, on snapshot: PlacementSnapshot) -> UInt64? {
        var total: UInt64 = 0
        for allocation in request.allocations {
            var single = allocation
            single.replicas = 1
            let alone = PlacementRequest(allocations: [single], excludedDevices: request.excludedDevices)
            guard case .placed(let placement) = place(alone, on: snapshot) else { return nil }
            total = Cost.add(total, Cost.multiply(placement.totalCost, UInt64(max(allocation.replicas, 1))))
        }
        return total
    }
}
