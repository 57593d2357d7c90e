/// The hard constraints in the order they are checked; explanations count each device under the first one it fails.
public enum ConstraintKind: String, Sendable, CaseIterable, Hashable {
    case status = "status (device not online)"
    case excluded = "excluded (device being relocated away from)"
    case architecture
    case executor
    case platform = "image platform"
    case cpu = "cpu cores"
    case ram
    case disk
    case gpu
    case country
    case region
    case radius = "location radius"
    case latencyTarget = "latency to a target"
    case price = "max price per hour"
    case labels = "required labels"
    case providers = "allowed/denied providers"
    case reputation = "minimum reputation"
}

/// One allocation's constraints compiled against a snapshot: integers, lookup tables and flags, so that checking a
/// device touches no hash table and retains nothing.
struct CompiledAllocation {
    let request: AllocationRequest
    let cpuCores: Int
    let ramMiB: Int
    let diskMiB: Int
    let gpuCount: Int
    let gpuVRAMMiB: Int
    let durationSeconds: Int?
    /// nil: any. A value no device has compiles to an ID no device carries (-2).
    let architecture: StringID?
    /// nil: any executor.
    let executor: StringID?
    /// nil: any platform; else the platforms (any one of them) that run the image.
    let platforms: [StringID]?
    let gpuVendor: StringID?
    /// Indexed by GPU-model ID: whether the model matches the requested substring; nil when any model does.
    let gpuModelMatches: [Bool]?
    /// Indexed by string ID: whether a country or region passes; nil when every one does.
    let countryPasses: [Bool]?
    let regionPasses: [Bool]?
    let within: GeoCircle?
    let latencyTargets: [LatencyTarget]
    let maxPricePerHour: UInt64?
    let requiredLabels: [LabelID]?
    /// Indexed by owner ID and by device index; nil without an allow list.
    let allowedOwners: [Bool]?
    let allowedDevices: Set<Int>
    /// Indexed by owner ID; nil without a deny list.
    let deniedOwners: [Bool]?
    let deniedDevices: Set<Int>
    let excluded: Set<Int>
    let minReputation: Double?
    /// The resources a device's price is computed for: the request's own, or those of the request this one loosens
    /// (asking for fewer cores to find a device does not make the job cheaper).
    let pricedCores: Int
    let pricedRAMMiB: Int
    let pricedGPUs: Int

    /// - Parameter pricedAs: the request whose resources set the price, when `request` loosens it.
    init(
        _ request: AllocationRequest, snapshot: PlacementSnapshot, excludedDevices: Set<String>,
        pricedAs: AllocationRequest? = nil
    ) {
        self.request = request
        pricedCores = (pricedAs ?? request).cpuCores
        pricedRAMMiB = (pricedAs ?? request).ramMiB
        pricedGPUs = (pricedAs ?? request).gpu.count
        cpuCores = request.cpuCores
        ramMiB = request.ramMiB
        diskMiB = request.diskMiB
        gpuCount = request.gpu.count
        gpuVRAMMiB = request.gpu.vramMiB
        durationSeconds = request.durationSeconds
        let strings = snapshot.strings
        func id(_ string: String) -> StringID { strings.lookup(string) ?? -2 }
        architecture = request.architecture.isEmpty ? nil : id(request.architecture.lowercased())
        executor = request.executor.isEmpty ? nil : id("executor:" + request.executor)
        platforms = request.platforms.isEmpty ? nil : request.platforms.map { id("platform:" + $0) }
        gpuVendor = request.gpu.vendor.isEmpty ? nil : id(request.gpu.vendor.lowercased())
        if request.gpu.model.isEmpty {
            gpuModelMatches = nil
        } else {
            var table = Array(repeating: false, count: snapshot.gpuModels.ids.count)
            let wanted = request.gpu.model.lowercased()
            for (string, stringID) in snapshot.gpuModels.ids where string.contains(wanted) {
                table[Int(stringID)] = true
            }
            gpuModelMatches = table
        }
        let constraints = request.constraints
        let stringCount = strings.ids.count
        func table(accept: Set<String>, reject: Set<String>, normalise: (String) -> String) -> [Bool]? {
            guard !accept.isEmpty || !reject.isEmpty else { return nil }
            var passes = Array(repeating: accept.isEmpty, count: stringCount)
            for value in accept { if let known = strings.lookup(normalise(value)) { passes[Int(known)] = true } }
            for value in reject { if let known = strings.lookup(normalise(value)) { passes[Int(known)] = false } }
            return passes
        }
        countryPasses = table(
            accept: constraints.acceptCountries, reject: constraints.rejectCountries, normalise: { $0.uppercased() })
        regionPasses = table(
            accept: constraints.acceptRegions, reject: constraints.rejectRegions, normalise: { $0.lowercased() })
        within = constraints.within
        latencyTargets = constraints.latencyTargets
        maxPricePerHour = constraints.maxPricePerHour
        requiredLabels =
            constraints.requiredLabels.isEmpty ? nil : constraints.requiredLabels.map { id("\($0.key)=\($0.value)") }
        func ownerTable(_ dids: Set<String>) -> [Bool]? {
            guard !dids.isEmpty else { return nil }
            var listed = Array(repeating: false, count: snapshot.owners.ids.count)
            for did in dids { if let owner = snapshot.owners.lookup(did) { listed[Int(owner)] = true } }
            return listed
        }
        allowedOwners = ownerTable(constraints.allowedProviders)
        allowedDevices = Set(constraints.allowedProviders.compactMap { snapshot.index(of: $0) })
        deniedOwners = ownerTable(constraints.deniedProviders)
        deniedDevices = Set(constraints.deniedProviders.compactMap { snapshot.index(of: $0) })
        excluded = Set(excludedDevices.compactMap { snapshot.index(of: $0) })
        minReputation = constraints.minReputation
    }

    /// The first hard constraint device `index` fails, or nil when it passes them all.
    @inline(__always)
    func firstFailure(_ index: Int, in snapshot: PlacementSnapshot) -> ConstraintKind? {
        snapshot.compiled.withUnsafeBufferPointer { devices in firstFailure(index, devices[index], in: snapshot) }
    }

    @inline(__always)
    func firstFailure(_ index: Int, _ device: CompiledDevice, in snapshot: PlacementSnapshot) -> ConstraintKind? {
        if !device.online { return .status }
        if !excluded.isEmpty, excluded.contains(index) { return .excluded }
        if let architecture, device.architecture != architecture { return .architecture }
        if let executor, !snapshot.runtimes[index].contains(executor) { return .executor }
        if let platforms {
            let own = snapshot.runtimes[index]
            if !platforms.contains(where: own.contains) { return .platform }
        }
        if device.cpuCores < cpuCores { return .cpu }
        if device.ramMiB < ramMiB { return .ram }
        if device.diskMiB < diskMiB { return .disk }
        if gpuCount > 0 {
            if device.gpuCount < gpuCount || device.gpuVRAMMiB < gpuVRAMMiB { return .gpu }
            if let gpuVendor, device.gpuVendor != gpuVendor { return .gpu }
            if let gpuModelMatches, !gpuModelMatches[Int(device.gpuModel)] { return .gpu }
        }
        if let countryPasses, !countryPasses[Int(device.country)] { return .country }
        if let regionPasses, !regionPasses[Int(device.region)] { return .region }
        if let within {
            guard let point = device.point, GeographicLatency.distanceKm(point, within.center) <= within.radiusKm
            else { return .radius }
        }
        if !latencyTargets.isEmpty {
            for target in latencyTargets {
                guard let rtt = snapshot.rtt(from: index, to: target.place), rtt <= target.maxRTTMilliseconds else {
                    return .latencyTarget
                }
            }
        }
        if let maxPricePerHour, hourlyPrice(device) > maxPricePerHour { return .price }
        if let requiredLabels {
            let own = snapshot.labels[index]
            for label in requiredLabels where !own.contains(label) { return .labels }
        }
        if let allowedOwners, !allowedOwners[Int(device.owner)], !allowedDevices.contains(index) { return .providers }
        if let deniedOwners, deniedOwners[Int(device.owner)] { return .providers }
        if !deniedDevices.isEmpty, deniedDevices.contains(index) { return .providers }
        if let minReputation, device.reputation < minReputation { return .reputation }
        return nil
    }

    @inline(__always)
    func hourlyPrice(_ device: CompiledDevice) -> UInt64 {
        Cost.hourly(cores: pricedCores, ramMiB: pricedRAMMiB, gpus: pricedGPUs, prices: device.prices)
    }

    @inline(__always)
    func jobCost(_ device: CompiledDevice) -> UInt64 {
        Cost.job(hourly: hourlyPrice(device), seconds: durationSeconds, minimum: device.prices.minimumPerJob)
    }

    func hourlyPrice(_ index: Int, in snapshot: PlacementSnapshot) -> UInt64 { hourlyPrice(snapshot.compiled[index]) }
}
