/// What an ensemble asks of placement: its allocations, the latency edges between them, an optional budget.
public struct PlacementRequest: Sendable, Hashable, Codable {
    public var allocations: [AllocationRequest]
    public var edges: [LatencyEdge]
    /// The most the whole ensemble may cost, in NTX base units, over every allocation's maximum duration.
    public var budget: UInt64?
    /// Devices that must not be used (e.g. the one an allocation is being relocated away from).
    public var excludedDevices: Set<String>

    public init(
        allocations: [AllocationRequest], edges: [LatencyEdge] = [], budget: UInt64? = nil,
        excludedDevices: Set<String> = []
    ) {
        self.allocations = allocations
        self.edges = edges
        self.budget = budget
        self.excludedDevices = excludedDevices
    }
}

/// One allocation of an ensemble: its replicas each need a device with these resources and constraints.
public struct AllocationRequest: Sendable, Hashable, Codable {
    public var name: String
    public var replicas: Int
    public var cpuCores: Int
    public var ramMiB: Int
    public var diskMiB: Int
    /// Empty: any architecture.
    public var architecture: String
    public var gpu: GPURequirement
    /// The maximum duration; cost is this many seconds at the device's hourly price (and at least its minimum).
    public var durationSeconds: Int?
    public var constraints: HardConstraints
    public var spread: SpreadPolicy
    /// How it runs ("process", "oci"); empty: any way.
    public var executor: String
    /// The device platforms that run its image ("linux/amd64"); empty: any.
    public var platforms: Set<String>

    public init(
        name: String, replicas: Int = 1, cpuCores: Int, ramMiB: Int, diskMiB: Int = 0, architecture: String = "",
        gpu: GPURequirement = GPURequirement(), durationSeconds: Int? = nil,
        constraints: HardConstraints = HardConstraints(), spread: SpreadPolicy = .any, executor: String = "process",
        platforms: Set<String> = []
    ) {
        self.executor = executor
        self.platforms = platforms
        self.name = name
        self.replicas = replicas
        self.cpuCores = cpuCores
        self.ramMiB = ramMiB
        self.diskMiB = diskMiB
        self.architecture = architecture
        self.gpu = gpu
        self.durationSeconds = durationSeconds
        self.constraints = constraints
        self.spread = spread
    }
}

/// GPUs an allocation needs; a count of 0 needs none.
public struct GPURequirement: Sendable, Hashable, Codable {
    public var count: Int
    /// Empty: any vendor.
    public var vendor: String
    /// Empty: any model; otherwise a case-insensitive substring of the device's GPU model ("A100").
    public var model: String
    /// Minimum memory of each GPU.
    public var vramMiB: Int

    public init(count: Int = 0, vendor: String = "", model: String = "", vramMiB: Int = 0) {
        self.count = count
        self.vendor = vendor
        self.model = model
        self.vramMiB = vramMiB
    }
}

/// Whether replicas share devices.
public enum SpreadPolicy: Sendable, Hashable, Codable {
    /// No preference.
    case any
    /// Every replica of the allocation on a different device (hard).
    case spread
    /// Prefer devices the ensemble already uses (soft, after cost).
    case pack
}

/// Constraints that filter devices: a device failing any of them is never chosen.
public struct HardConstraints: Sendable, Hashable, Codable {
    /// Empty accepts any (ISO 3166-1 alpha-2, compared case-insensitively).
    public var acceptCountries: Set<String>
    public var rejectCountries: Set<String>
    /// Empty accepts any (compared case-insensitively).
    public var acceptRegions: Set<String>
    public var rejectRegions: Set<String>
    /// Only devices with known coordinates within this radius.
    public var within: GeoCircle?
    /// Each: the estimated RTT from the device to the target must not exceed its bound.
    public var latencyTargets: [LatencyTarget]
    /// The device's hourly price for this allocation must not exceed it.
    public var maxPricePerHour: UInt64?
    /// Every label must be present with this value.
    public var requiredLabels: [String: String]
    /// Non-empty: the device's DID or its owner's DID must be in it.
    public var allowedProviders: Set<String>
    /// Neither the device's DID nor its owner's may be in it.
    public var deniedProviders: Set<String>
    /// Minimum `Reputation.score`, 0…1.
    public var minReputation: Double?

    public init(
        acceptCountries: Set<String> = [], rejectCountries: Set<String> = [], acceptRegions: Set<String> = [],
        rejectRegions: Set<String> = [], within: GeoCircle? = nil, latencyTargets: [LatencyTarget] = [],
        maxPricePerHour: UInt64? = nil, requiredLabels: [String: String] = [:], allowedProviders: Set<String> = [],
        deniedProviders: Set<String> = [], minReputation: Double? = nil
    ) {
        self.acceptCountries = acceptCountries
        self.rejectCountries = rejectCountries
        self.acceptRegions = acceptRegions
        self.rejectRegions = rejectRegions
        self.within = within
        self.latencyTargets = latencyTargets
        self.maxPricePerHour = maxPricePerHour
        self.requiredLabels = requiredLabels
        self.allowedProviders = allowedProviders
        self.deniedProviders = deniedProviders
        self.minReputation = minReputation
    }
}

/// A circle on the Earth.
public struct GeoCircle: Sendable, Hashable, Codable {
    public var center: GeoPoint
    public var radiusKm: Double

    public init(center: GeoPoint, radiusKm: Double) {
        self.center = center
        self.radiusKm = radiusKm
    }
}

/// A bound on the RTT between a device and a place: a landmark with network coordinates, or a point on the map.
public struct LatencyTarget: Sendable, Hashable, Codable {
    public enum Place: Sendable, Hashable, Codable {
        /// A landmark by the name devices report RTT samples to (or another device's DID).
        case landmark(String)
        case point(GeoPoint)
    }

    public var place: Place
    public var maxRTTMilliseconds: Double

    public init(place: Place, maxRTTMilliseconds: Double) {
        self.place = place
        self.maxRTTMilliseconds = maxRTTMilliseconds
    }
}

/// Every replica of `from` and every replica of `to` must be within `maxRTTMilliseconds` of each other.
public struct LatencyEdge: Sendable, Hashable, Codable {
    /// Indexes into `PlacementRequest.allocations`.
    public var from: Int
    public var to: Int
    public var maxRTTMilliseconds: Double

    public init(from: Int, to: Int, maxRTTMilliseconds: Double) {
        self.from = from
        self.to = to
        self.maxRTTMilliseconds = maxRTTMilliseconds
    }
}
