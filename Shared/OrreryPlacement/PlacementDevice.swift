/// A device as placement sees it: what it has free, where it is, what it costs, how it has behaved.
///
/// The orchestrator builds these from the registry's watch, subtracting what it has already placed there, so the
/// resource figures are the capacity still available to new allocations.
public struct PlacementDevice: Sendable, Hashable {
    public var did: String
    public var ownerDID: String
    public var architecture: String
    public var cpuCores: Int
    public var ramMiB: Int
    public var diskMiB: Int
    public var gpus: GPUInventory
    public var location: GeoLocation
    public var prices: Prices
    public var labels: [String: String]
    public var online: Bool
    public var reputation: Reputation
    /// How it runs work ("process", "oci").
    public var executors: Set<String>
    /// The OCI platforms it runs images of ("linux/amd64").
    public var platforms: Set<String>

    public init(
        did: String, ownerDID: String, architecture: String, cpuCores: Int, ramMiB: Int, diskMiB: Int,
        gpus: GPUInventory = GPUInventory(), location: GeoLocation = GeoLocation(), prices: Prices = Prices(),
        labels: [String: String] = [:], online: Bool = true, reputation: Reputation = Reputation(),
        executors: Set<String> = ["process"], platforms: Set<String> = []
    ) {
        self.executors = executors
        self.platforms = platforms
        self.did = did
        self.ownerDID = ownerDID
        self.architecture = architecture
        self.cpuCores = cpuCores
        self.ramMiB = ramMiB
        self.diskMiB = diskMiB
        self.gpus = gpus
        self.location = location
        self.prices = prices
        self.labels = labels
        self.online = online
        self.reputation = reputation
    }
}

/// The GPUs of a device (one model per device, as detected).
public struct GPUInventory: Sendable, Hashable {
    public var vendor: String
    public var model: String
    public var count: Int
    /// Memory of each GPU.
    public var vramMiB: Int

    public init(vendor: String = "", model: String = "", count: Int = 0, vramMiB: Int = 0) {
        self.vendor = vendor
        self.model = model
        self.count = count
        self.vramMiB = vramMiB
    }
}

/// Where a device is. Coordinates are optional: a device without them has no geographic distance to anything.
public struct GeoLocation: Sendable, Hashable {
    public var country: String
    public var region: String
    public var point: GeoPoint?

    public init(country: String = "", region: String = "", point: GeoPoint? = nil) {
        self.country = country
        self.region = region
        self.point = point
    }
}

/// A point on the Earth in degrees.
public struct GeoPoint: Sendable, Hashable, Codable {
    public var latitude: Double
    public var longitude: Double

    public init(latitude: Double, longitude: Double) {
        self.latitude = latitude
        self.longitude = longitude
    }
}

/// A device's price list in NTX base units.
public struct Prices: Sendable, Hashable {
    public var perCoreHour: UInt64
    public var perGBRAMHour: UInt64
    public var perGPUHour: UInt64
    public var minimumPerJob: UInt64

    public init(perCoreHour: UInt64 = 0, perGBRAMHour: UInt64 = 0, perGPUHour: UInt64 = 0, minimumPerJob: UInt64 = 0) {
        self.perCoreHour = perCoreHour
        self.perGBRAMHour = perGBRAMHour
        self.perGPUHour = perGPUHour
        self.minimumPerJob = minimumPerJob
    }
}

/// What later work recorded about a device.
public struct Reputation: Sendable, Hashable {
    public var completed: UInt64
    public var failed: UInt64
    public var relocatedAway: UInt64

    public init(completed: UInt64 = 0, failed: UInt64 = 0, relocatedAway: UInt64 = 0) {
        self.completed = completed
        self.failed = failed
        self.relocatedAway = relocatedAway
    }

    /// The share of allocations that ended well, with one imagined success and one imagined failure (Laplace's
    /// rule): 0.5 for a device nobody has used yet, approaching the observed rate as work accumulates.
    public var score: Double {
        (Double(completed) + 1) / (Double(completed) + Double(failed) + Double(relocatedAway) + 2)
    }
}

/// An amount of a device's resources: what an allocation takes, what deployments hold, what an agent promised.
public struct ResourceAmount: Sendable, Hashable, Codable {
    public var cores = 0
    public var ramMiB = 0
    public var diskMiB = 0
    public var gpus = 0

    public init(cores: Int = 0, ramMiB: Int = 0, diskMiB: Int = 0, gpus: Int = 0) {
        self.cores = cores
        self.ramMiB = ramMiB
        self.diskMiB = diskMiB
        self.gpus = gpus
    }

    public var isZero: Bool { cores == 0 && ramMiB == 0 && diskMiB == 0 && gpus == 0 }

    public func adding(_ other: ResourceAmount) -> ResourceAmount {
        ResourceAmount(
            cores: cores + other.cores, ramMiB: ramMiB + other.ramMiB, diskMiB: diskMiB + other.diskMiB,
            gpus: gpus + other.gpus)
    }

    public func subtracting(_ other: ResourceAmount) -> ResourceAmount {
        ResourceAmount(
            cores: cores - other.cores, ramMiB: ramMiB - other.ramMiB, diskMiB: diskMiB - other.diskMiB,
            gpus: gpus - other.gpus)
    }
}
