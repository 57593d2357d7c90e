#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A Vivaldi network coordinate (Dabek et al., SIGCOMM 2004) with a height, as Serf and Consul use: the predicted
/// RTT between two nodes is the Euclidean distance of their vectors plus both heights (the access-link delay).
public struct VivaldiCoordinate: Sendable, Hashable {
    public static let dimensions = 8
    public var vector: [Double]
    /// Milliseconds.
    public var height: Double
    /// The node's confidence in its coordinate: an estimate of the relative error of its predictions.
    public var error: Double

    public init(vector: [Double] = Array(repeating: 0, count: dimensions), height: Double = 0.01, error: Double = 1.5) {
        self.vector = vector
        self.height = height
        self.error = error
    }

    /// The predicted RTT to `other` in milliseconds.
    public func rtt(to other: VivaldiCoordinate) -> Double {
        var sum = 0.0
        for index in 0..<vector.count {
            let delta = vector[index] - other.vector[index]
            sum += delta * delta
        }
        return sum.squareRoot() + height + other.height
    }
}

/// Fits Vivaldi coordinates to measured RTT samples between named nodes (devices by DID, landmarks by name).
///
/// Agents report samples to landmarks only; the model moves both ends of every sample, as if each landmark ran
/// Vivaldi too, so devices and landmarks share one coordinate space and device-to-device RTT can be predicted.
public struct VivaldiModel: Sendable {
    /// Serf's constants: error and coordinate gains, the error cap, the smallest height.
    static let errorGain = 0.25
    static let coordinateGain = 0.25
    static let maximumError = 1.5
    static let minimumHeight = 0.01

    public private(set) var coordinates: [String: VivaldiCoordinate] = [:]
    private var random = SplitMix64(seed: 0x5EED)

    public init() {}

    /// One Vivaldi step for both ends of a sample.
    public mutating func observe(_ a: String, _ b: String, rttMilliseconds: Double) {
        guard a != b, rttMilliseconds > 0, rttMilliseconds.isFinite else { return }
        let first = coordinates[a] ?? VivaldiCoordinate()
        let second = coordinates[b] ?? VivaldiCoordinate()
        coordinates[a] = step(first, toward: second, rtt: rttMilliseconds)
        coordinates[b] = step(second, toward: first, rtt: rttMilliseconds)
    }

    /// Runs `rounds` passes over `samples`, in an order shuffled deterministically per pass: the same steps as
    /// `observe` for each sample in that order, on coordinates indexed by node for the passes (no name looked up and
    /// nothing allocated per step; with 10,000 devices the dictionary steps were a tenth of the orchestrator's CPU).
    public mutating func fit(_ samples: [RTTSample], rounds: Int = 40) {
        guard rounds > 0, !samples.isEmpty else { return }
        var nodes = IndexedCoordinates(coordinates)
        let pairs = samples.map { sample in
            (nodes.index(of: sample.from), nodes.index(of: sample.to), sample.rttMilliseconds)
        }
        var order = Array(samples.indices)
        for _ in 0..<rounds {
            shuffle(&order)
            for index in order {
                let (a, b, rtt) = pairs[index]
                guard a != b, rtt > 0, rtt.isFinite else { continue }
                nodes.observe(a, b, rtt: rtt, random: &random)
            }
        }
        coordinates = nodes.coordinates(into: coordinates)
    }

    /// The next pass's order: a Fisher–Yates shuffle drawn from the model's generator.
    mutating func shuffle(_ order: inout [Int]) {
        for index in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(index, Int(random.next() % UInt64(index + 1)))
        }
    }

    private mutating func step(_ node: VivaldiCoordinate, toward other: VivaldiCoordinate, rtt: Double)
        -> VivaldiCoordinate
    {
        var node = node
        let predicted = node.rtt(to: other)
        let weight = node.error / max(node.error + other.error, 1e-9)
        let relativeError = abs(predicted - rtt) / rtt
        node.error = min(
            Self.maximumError,
            relativeError * Self.errorGain * weight + node.error * (1 - Self.errorGain * weight))
        let force = Self.coordinateGain * weight * (rtt - predicted)
        // The unit vector from `other` to `node`; a random direction when they coincide.
        var direction = zip(node.vector, other.vector).map { $0 - $1 }
        var length = direction.reduce(0) { $0 + $1 * $1 }.squareRoot()
        if length < 1e-9 {
            direction = (0..<direction.count).map { _ in Double(random.next() % 2000) / 1000 - 1 }
            length = max(direction.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-9)
        }
        for index in 0..<direction.count {
            node.vector[index] += force * direction[index] / length
        }
        let distance = max(predicted, 1e-9)
        node.height = max(Self.minimumHeight, node.height + (node.height + other.height) * force / distance)
        return node
    }
}

/// Vivaldi coordinates in one flat array, a node's vector, height and error side by side, for the passes of a fit.
/// The arithmetic is `VivaldiModel.step`'s, in the same order, so a fit gives the same coordinates either way.
struct IndexedCoordinates {
    private static let stride = VivaldiCoordinate.dimensions + 2
    private static let height = VivaldiCoordinate.dimensions
    private static let error = VivaldiCoordinate.dimensions + 1

    private(set) var names: [String] = []
    private var indices: [String: Int] = [:]
    private var values: [Double] = []
    /// Whether a node took part in a step (one that did not keeps the coordinate it had, or gets none).
    private var observed: [Bool] = []
    /// A node's values before the step that moves it, for its partner's step.
    private var previous = [Double](repeating: 0, count: stride)
    private var direction = [Double](repeating: 0, count: VivaldiCoordinate.dimensions)

    init(_ coordinates: [String: VivaldiCoordinate]) {
        names.reserveCapacity(coordinates.count)
        values.reserveCapacity(coordinates.count * Self.stride)
        for (name, coordinate) in coordinates { append(name, coordinate) }
    }

    /// The node's index; a node not seen before starts where `VivaldiCoordinate()` does.
    mutating func index(of name: String) -> Int {
        if let known = indices[name] { return known }
        append(name, VivaldiCoordinate())
        return names.count - 1
    }

    private mutating func append(_ name: String, _ coordinate: VivaldiCoordinate) {
        indices[name] = names.count
        names.append(name)
        // Exactly `dimensions` values (a vector made elsewhere with another length is cut or padded with zeros).
        for index in 0..<VivaldiCoordinate.dimensions {
            values.append(index < coordinate.vector.count ? coordinate.vector[index] : 0)
        }
        values.append(coordinate.height)
        values.append(coordinate.error)
        observed.append(false)
    }

    /// One Vivaldi step for both ends of a sample, each moved against the other's position before the sample.
    mutating func observe(_ a: Int, _ b: Int, rtt: Double, random: inout SplitMix64) {
        for offset in 0..<Self.stride { previous[offset] = values[a * Self.stride + offset] }
        step(a * Self.stride, towardValuesAt: b * Self.stride, inPrevious: false, rtt: rtt, random: &random)
        step(b * Self.stride, towardValuesAt: 0, inPrevious: true, rtt: rtt, random: &random)
        observed[a] = true
        observed[b] = true
    }

    /// Moves the node at `node` toward or away from the other (at `other` in `values`, or in `previous`).
    private mutating func step(
        _ node: Int, towardValuesAt other: Int, inPrevious: Bool, rtt: Double, random: inout SplitMix64
    ) {
        let dimensions = VivaldiCoordinate.dimensions
        func otherValue(_ offset: Int) -> Double { inPrevious ? previous[other + offset] : values[other + offset] }
        var sum = 0.0
        for index in 0..<dimensions {
            let delta = values[node + index] - otherValue(index)
            sum += delta * delta
        }
        let nodeHeight = values[node + Self.height]
        let otherHeight = otherValue(Self.height)
        let nodeError = values[node + Self.error]
        let otherError = otherValue(Self.error)
        let predicted = sum.squareRoot() + nodeHeight + otherHeight
        let weight = nodeError / max(nodeError + otherError, 1e-9)
        let relativeError = abs(predicted - rtt) / rtt
        values[node + Self.error] = min(
            VivaldiModel.maximumError,
            relativeError * VivaldiModel.errorGain * weight + nodeError * (1 - VivaldiModel.errorGain * weight))
        let force = VivaldiModel.coordinateGain * weight * (rtt - predicted)
        var squares = 0.0
        for index in 0..<dimensions {
            direction[index] = values[node + index] - otherValue(index)
            squares += direction[index] * direction[index]
        }
        var length = squares.squareRoot()
        if length < 1e-9 {
            squares = 0
            for index in 0..<dimensions {
                direction[index] = Double(random.next() % 2000) / 1000 - 1
                squares += direction[index] * direction[index]
            }
            length = max(squares.squareRoot(), 1e-9)
        }
        for index in 0..<dimensions {
            values[node + index] += force * direction[index] / length
        }
        let distance = max(predicted, 1e-9)
        values[node + Self.height] = max(
            VivaldiModel.minimumHeight, nodeHeight + (nodeHeight + otherHeight) * force / distance)
    }

    /// `existing` with every node a step moved set to where it is now.
    func coordinates(into existing: [String: VivaldiCoordinate]) -> [String: VivaldiCoordinate] {
        var result = existing
        for (index, name) in names.enumerated() where observed[index] {
            let base = index * Self.stride
            result[name] = VivaldiCoordinate(
                vector: Array(values[base..<(base + VivaldiCoordinate.dimensions)]), height: values[base + Self.height],
                error: values[base + Self.error])
        }
        return result
    }
}

/// A measured round-trip time between two named nodes.
public struct RTTSample: Sendable, Hashable {
    public var from: String
    public var to: String
    public var rttMilliseconds: Double

    public init(from: String, to: String, rttMilliseconds: Double) {
        self.from = from
        self.to = to
        self.rttMilliseconds = rttMilliseconds
    }
}

/// RTT estimated from geography for nodes without network coordinates: light in fibre covers about 200 km per
/// millisecond, routes are about 1.5 times the great-circle distance, and every path pays a few milliseconds
/// of access delay.
public enum GeographicLatency {
    public static let accessDelayMilliseconds = 2.0
    public static let kilometresPerMillisecondRoundTrip = 200.0 / 2 / 1.5

    public static func rtt(_ a: GeoPoint, _ b: GeoPoint) -> Double {
        accessDelayMilliseconds + distanceKm(a, b) / kilometresPerMillisecondRoundTrip
    }

    /// Great-circle distance (haversine) in kilometres.
    public static func distanceKm(_ a: GeoPoint, _ b: GeoPoint) -> Double {
        let radians = Double.pi / 180
        let dLat = (b.latitude - a.latitude) * radians
        let dLon = (b.longitude - a.longitude) * radians
        let h =
            sin(dLat / 2) * sin(dLat / 2) + cos(a.latitude * radians) * cos(b.latitude * radians) * sin(dLon / 2)
            * sin(dLon / 2)
        return 2 * 6371.0 * asin(min(1, h.squareRoot()))
    }
}

/// A small deterministic generator (SplitMix64), so fits, searches and fuzzing runs are reproducible from a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Keeps Vivaldi coordinates fitted to RTT samples that keep arriving, at a bounded cost. A full fit — from scratch,
/// enough rounds to converge — when there is none yet, and again when nodes have appeared, at most once per
/// `fullInterval`; otherwise `warmRounds` rounds over every sample from the coordinates already fitted (a warm start),
/// which follows drifting RTTs at a small fraction of a full fit's cost. A node that appeared since the last full fit
/// has no coordinate until the next one (placement falls back to geography for it), rather than a half-fitted one.
public struct CoordinateFitter: Sendable {
    public private(set) var model = VivaldiModel()
    /// The most a full fit costs: about this many sample updates, however many samples there are.
    static let fullFitUpdates = 2_000_000
    let fullInterval: Duration
    let warmRounds: Int
    private var lastFull: ContinuousClock.Instant?
    /// Nodes seen in samples but not yet fitted: a full fit is due once `fullInterval` has passed.
    private var awaitingFull = false

    public init(fullInterval: Duration = .seconds(30), warmRounds: Int = 3) {
        self.fullInterval = fullInterval
        self.warmRounds = warmRounds
    }

    /// The coordinates of the nodes fitted.
    public var coordinates: [String: VivaldiCoordinate] { model.coordinates }

    /// Fits `samples` (every sample known now, in a stable order) at `now`; returns whether it was a full fit.
    @discardableResult
    public mutating func update(_ samples: [RTTSample], now: ContinuousClock.Instant) -> Bool {
        let known = model.coordinates
        if samples.contains(where: { known[$0.from] == nil || known[$0.to] == nil }) { awaitingFull = true }
        let due = lastFull.map { now - $0 >= fullInterval } ?? true
        if lastFull == nil || (awaitingFull && due) {
            var fresh = VivaldiModel()
            fresh.fit(samples, rounds: max(8, min(40, Self.fullFitUpdates / max(samples.count, 1))))
            model = fresh
            lastFull = now
            awaitingFull = false
            return true
        }
        model.fit(samples.filter { known[$0.from] != nil && known[$0.to] != nil }, rounds: warmRounds)
        return false
    }
}
