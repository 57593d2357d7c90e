/// An immutable, indexed view of the devices placement can choose from, with the network coordinates known
/// for them and for landmarks. Build one per registry revision; solving never mutates it.
public struct PlacementSnapshot: Sendable {
    /// The devices as they were described when the snapshot was built (reservations laid over it by `reserving` show
    /// in placement, not here).
    public private(set) var devices: [PlacementDevice]
    let compiled: [CompiledDevice]
    private(set) var labels: [[LabelID]]
    /// Per device: its executors and platforms as interned `executor:NAME` and `platform:OS/ARCH[/VARIANT]`.
    private(set) var runtimes: [[StringID]]
    private(set) var strings: StringTable
    private(set) var owners: StringTable
    private(set) var gpuModels: StringTable
    private(set) var latencies: LatencyTable
    private(set) var landmarkCoordinates: [String: VivaldiCoordinate]
    let indexByDID: [String: Int]
    /// Device indexes by ascending price per core-hour: a cost lower bound, for scans that stop early.
    private(set) var byCorePrice: [Int]
    /// The same order, per country (by interned country), per label (`key=value`, interned), and of the devices with a
    /// GPU: a request that accepts a few countries, requires a label or needs a GPU scans only those devices.
    private(set) var byCorePriceInCountry: [StringID: [Int]]
    private(set) var byCorePriceWithLabel: [LabelID: [Int]]
    private(set) var byCorePriceWithGPU: [Int]

    /// `coordinates` holds Vivaldi coordinates by node name: devices by DID, landmarks by name.
    public init(devices: [PlacementDevice], coordinates: [String: VivaldiCoordinate] = [:]) {
        var strings = StringTable()
        var owners = StringTable()
        var gpuModels = StringTable()
        var compiled: [CompiledDevice] = []
        var labels: [[LabelID]] = []
        var runtimes: [[StringID]] = []
        var indexByDID: [String: Int] = [:]
        let (slots, vectors, heights) = Self.coordinateSlots(of: devices, in: coordinates)
        compiled.reserveCapacity(devices.count)
        for (index, device) in devices.enumerated() {
            indexByDID[device.did] = index
            let record = Self.compile(
                device, coordinate: slots[index], strings: &strings, owners: &owners, gpuModels: &gpuModels)
            compiled.append(record.compiled)
            labels.append(record.labels)
            runtimes.append(record.runtimes)
        }
        self.devices = devices
        self.compiled = compiled
        self.labels = labels
        self.runtimes = runtimes
        self.strings = strings
        self.owners = owners
        self.gpuModels = gpuModels
        latencies = LatencyTable(devices: compiled, vectors: vectors, heights: heights)
        self.landmarkCoordinates = coordinates
        self.indexByDID = indexByDID
        (byCorePrice, byCorePriceInCountry, byCorePriceWithLabel, byCorePriceWithGPU) = Self.priceLists(
            compiled, labels: labels)
    }

    /// Each device's slot in the latency table's coordinates (-1 without a Vivaldi coordinate), and the coordinates'
    /// vectors and heights side by side in slot order.
    private static func coordinateSlots(
        of devices: [PlacementDevice], in coordinates: [String: VivaldiCoordinate]
    ) -> (slots: [Int32], vectors: [Double], heights: [Double]) {
        var slots: [Int32] = []
        var vectors: [Double] = []
        var heights: [Double] = []
        slots.reserveCapacity(devices.count)
        for device in devices {
            guard let coordinate = coordinates[device.did], coordinate.vector.count == VivaldiCoordinate.dimensions
            else {
                slots.append(-1)
                continue
            }
            slots.append(Int32(heights.count))
            vectors += coordinate.vector
            heights.append(coordinate.height)
        }
        return (slots, vectors, heights)
    }

    /// One device as filters read it, its strings interned into the tables given.
    private static func compile(
        _ device: PlacementDevice, coordinate: Int32, strings: inout StringTable, owners: inout StringTable,
        gpuModels: inout StringTable
    ) -> (compiled: CompiledDevice, labels: [LabelID], runtimes: [StringID]) {
        let compiled = CompiledDevice(
            cpuCores: device.cpuCores, ramMiB: device.ramMiB, diskMiB: device.diskMiB,
            gpuCount: device.gpus.count, gpuVRAMMiB: device.gpus.vramMiB,
            architecture: strings.intern(device.architecture.lowercased()),
            country: strings.intern(device.location.country.uppercased()),
            region: strings.intern(device.location.region.lowercased()),
            gpuVendor: strings.intern(device.gpus.vendor.lowercased()),
            gpuModel: gpuModels.intern(device.gpus.model.lowercased()),
            owner: owners.intern(device.ownerDID),
            latitude: device.location.point?.latitude ?? .nan,
            longitude: device.location.point?.longitude ?? .nan,
            prices: device.prices, reputation: device.reputation.score, online: device.online,
            coordinate: coordinate)
        let labels = device.labels.map { strings.intern("\($0.key)=\($0.value)") }.sorted()
        let runtimes =
            (device.executors.map { strings.intern("executor:" + $0) }
            + device.platforms.map { strings.intern("platform:" + $0) }).sorted()
        return (compiled, labels, runtimes)
    }

    /// The device indexes by ascending price per core-hour: all, per country, per label, and those with a GPU.
    private static func priceLists(_ compiled: [CompiledDevice], labels: [[LabelID]]) -> (
        [Int], [StringID: [Int]], [LabelID: [Int]], [Int]
    ) {
        let byCorePrice = compiled.indices.sorted {
            compiled[$0].prices.perCoreHour < compiled[$1].prices.perCoreHour
        }
        var inCountry: [StringID: [Int]] = [:]
        var withLabel: [LabelID: [Int]] = [:]
        var withGPU: [Int] = []
        for index in byCorePrice {
            inCountry[compiled[index].country, default: []].append(index)
            for label in labels[index] { withLabel[label, default: []].append(index) }
            if compiled[index].gpuCount > 0 { withGPU.append(index) }
        }
        return (byCorePrice, inCountry, withLabel, withGPU)
    }

    /// This snapshot with other Vivaldi coordinates (devices by DID, landmarks by name), answering as one built from
    /// scratch with them would: only the latency table is built again (coordinates are refitted every few seconds,
    /// and at 100,000 devices a snapshot from scratch took 265 ms).
    public func withCoordinates(_ coordinates: [String: VivaldiCoordinate]) -> PlacementSnapshot {
        var compiled = self.compiled
        let (slots, vectors, heights) = Self.coordinateSlots(of: devices, in: coordinates)
        for index in compiled.indices { compiled[index].coordinate = slots[index] }
        var updated = PlacementSnapshot(self, compiled: compiled)
        updated.latencies = LatencyTable(devices: compiled, vectors: vectors, heights: heights)
        updated.landmarkCoordinates = coordinates
        return updated
    }

    /// This snapshot with `changed` devices described anew — each one it already holds, by DID, in its place —
    /// answering as a snapshot built from scratch from the changed fleet with the same coordinates would. What the
    /// changes do not touch is shared: a device's status, capacity, prices or labels changing costs a pass over its
    /// own record, not over the fleet (the price lists are sorted again only when a price, country, label or GPU
    /// count changed). Nil when a change cannot be laid over it: a device it does not hold (a join needs a fresh
    /// snapshot, whose order places it) or one whose place on the map moved.
    public func updating(_ changed: [PlacementDevice]) -> PlacementSnapshot? {
        guard !changed.isEmpty else { return self }
        var devices = self.devices
        var compiled = self.compiled
        var labels = self.labels
        var runtimes = self.runtimes
        var strings = self.strings
        var owners = self.owners
        var gpuModels = self.gpuModels
        var listsChanged = false
        for device in changed {
            guard let index = indexByDID[device.did] else { return nil }
            let before = compiled[index]
            let record = Self.compile(
                device, coordinate: before.coordinate, strings: &strings, owners: &owners, gpuModels: &gpuModels)
            // The latency table keeps each device's map position; a move needs a fresh one.
            guard record.compiled.latitude.bitPattern == before.latitude.bitPattern,
                record.compiled.longitude.bitPattern == before.longitude.bitPattern
            else { return nil }
            if record.compiled.prices.perCoreHour != before.prices.perCoreHour
                || record.compiled.country != before.country || record.labels != labels[index]
                || (record.compiled.gpuCount > 0) != (before.gpuCount > 0)
            {
                listsChanged = true
            }
            devices[index] = device
            compiled[index] = record.compiled
            // Written only when changed: a write copies the whole array (and retains every element) first.
            if record.labels != labels[index] { labels[index] = record.labels }
            if record.runtimes != runtimes[index] { runtimes[index] = record.runtimes }
        }
        var updated = PlacementSnapshot(self, compiled: compiled)
        updated.devices = devices
        updated.labels = labels
        updated.runtimes = runtimes
        updated.strings = strings
        updated.owners = owners
        updated.gpuModels = gpuModels
        if listsChanged {
            (
                updated.byCorePrice, updated.byCorePriceInCountry, updated.byCorePriceWithLabel,
                updated.byCorePriceWithGPU
            ) = Self.priceLists(compiled, labels: labels)
        }
        return updated
    }

    /// The device lists (each in ascending price per core-hour) that hold every device `allocation` may take: the
    /// fewest devices among its countries' lists, the list of one label it requires, the devices with a GPU, or all.
    func scanLists(for allocation: CompiledAllocation) -> [[Int]] {
        var best: (lists: [[Int]], count: Int) = ([byCorePrice], byCorePrice.count)
        if let passes = allocation.countryPasses {
            var lists: [[Int]] = []
            var count = 0
            for (country, devices) in byCorePriceInCountry where Int(country) < passes.count && passes[Int(country)] {
                lists.append(devices)
                count += devices.count
            }
            if count < best.count { best = (lists, count) }
        }
        for label in allocation.requiredLabels ?? [] {
            // A label no device carries: no device passes.
            let devices = byCorePriceWithLabel[label] ?? []
            if devices.count < best.count { best = ([devices], devices.count) }
        }
        if allocation.gpuCount > 0, byCorePriceWithGPU.count < best.count {
            best = ([byCorePriceWithGPU], byCorePriceWithGPU.count)
        }
        return best.lists
    }

    /// This snapshot with `reserved` (by device DID) taken off its devices' capacity: placing and explaining on it
    /// answer as on a snapshot built from devices with that much less. Only the reserved devices' compiled records
    /// change; `devices` (as they were described), the interned strings, labels, latency table and price order are
    /// shared. A placement under load reserves on a few devices of many, so this is what makes a snapshot per
    /// placement cheap.
    public func reserving(_ reserved: [String: ResourceAmount]) -> PlacementSnapshot {
        var compiled = self.compiled
        for (did, amount) in reserved {
            guard let index = indexByDID[did] else { continue }
            compiled[index].cpuCores = max(0, compiled[index].cpuCores - amount.cores)
            compiled[index].ramMiB = max(0, compiled[index].ramMiB - amount.ramMiB)
            compiled[index].diskMiB = max(0, compiled[index].diskMiB - amount.diskMiB)
            compiled[index].gpuCount = max(0, compiled[index].gpuCount - amount.gpus)
        }
        return PlacementSnapshot(self, compiled: compiled)
    }

    /// `base` with other compiled records (the same devices in the same order).
    private init(_ base: PlacementSnapshot, compiled: [CompiledDevice]) {
        devices = base.devices
        self.compiled = compiled
        labels = base.labels
        runtimes = base.runtimes
        strings = base.strings
        owners = base.owners
        gpuModels = base.gpuModels
        latencies = base.latencies
        landmarkCoordinates = base.landmarkCoordinates
        indexByDID = base.indexByDID
        byCorePrice = base.byCorePrice
        byCorePriceInCountry = base.byCorePriceInCountry
        byCorePriceWithLabel = base.byCorePriceWithLabel
        byCorePriceWithGPU = base.byCorePriceWithGPU
    }

    /// The index of a device by its DID.
    public func index(of did: String) -> Int? { indexByDID[did] }

    /// The estimated RTT between two devices: their Vivaldi coordinates when both have one, else geography when
    /// both have coordinates on the map, else unknown.
    public func rtt(between a: Int, and b: Int) -> Double? { latencies.rtt(a, b) }

    /// The coordinate of a device as a `VivaldiCoordinate`, when it has one.
    func coordinate(ofDevice index: Int) -> VivaldiCoordinate? {
        latencies.coordinate(ofDevice: index)
    }

    /// The sum of a device's estimated RTTs to `targets`; nil when the device is unknown or one RTT cannot be
    /// estimated (nothing can then be said about how near it is).
    public func estimatedLatency(of did: String, to targets: [LatencyTarget]) -> Double? {
        guard let index = indexByDID[did] else { return nil }
        return estimatedLatency(of: index, to: targets)
    }

    func estimatedLatency(of device: Int, to targets: [LatencyTarget]) -> Double? {
        var sum = 0.0
        for target in targets {
            guard let rtt = rtt(from: device, to: target.place) else { return nil }
            sum += rtt
        }
        return sum
    }

    /// The estimated RTT between a device and a latency target, or nil when it cannot be estimated.
    public func rtt(from device: Int, to place: LatencyTarget.Place) -> Double? {
        let record = compiled[device]
        switch place {
        case .landmark(let name):
            if let target = indexByDID[name] { return rtt(between: device, and: target) }
            guard let own = coordinate(ofDevice: device), let landmark = landmarkCoordinates[name] else { return nil }
            return own.rtt(to: landmark)
        case .point(let point):
            guard let own = record.point else { return nil }
            return GeographicLatency.rtt(own, point)
        }
    }
}

typealias StringID = Int32
typealias LabelID = Int32

/// Strings interned to small integers so that filters compare integers.
struct StringTable: Sendable {
    private(set) var ids: [String: StringID] = [:]

    mutating func intern(_ string: String) -> StringID {
        if let id = ids[string] { return id }
        let id = StringID(ids.count)
        ids[string] = id
        return id
    }

    func lookup(_ string: String) -> StringID? { ids[string] }
}

/// A device reduced to the integers and doubles filters read.
struct CompiledDevice: Sendable {
    var cpuCores: Int
    var ramMiB: Int
    var diskMiB: Int
    var gpuCount: Int
    var gpuVRAMMiB: Int
    var architecture: StringID
    var country: StringID
    var region: StringID
    var gpuVendor: StringID
    var gpuModel: StringID
    var owner: StringID
    var latitude: Double
    var longitude: Double
    var prices: Prices
    var reputation: Double
    var online: Bool
    /// Index into the snapshot's coordinates, -1 without one.
    var coordinate: Int32

    var point: GeoPoint? {
        latitude.isNaN ? nil : GeoPoint(latitude: latitude, longitude: longitude)
    }
}

/// Device positions in raw memory for the solver's innermost loop (no reference counting, no bounds checks):
/// Vivaldi coordinates where a device has them, map positions otherwise. Immutable after construction.
final class LatencyTable: @unchecked Sendable {
    private let count: Int
    private let slots: UnsafeMutablePointer<Int32>
    private let latitudes: UnsafeMutablePointer<Double>
    private let longitudes: UnsafeMutablePointer<Double>
    private let vectors: UnsafeMutablePointer<Double>
    private let heights: UnsafeMutablePointer<Double>
    private let coordinateCount: Int
    /// Whether every estimate between two different devices comes from one metric — all by Vivaldi coordinates
    /// (with no negative height) or all by geography — so that `rtt(a, c) ≤ rtt(a, b) + rtt(b, c)` holds for any
    /// three devices whose estimates are known. False when some devices have Vivaldi coordinates and others only a
    /// map position: between those two kinds the estimates do not obey the triangle inequality.
    let obeysTriangleInequality: Bool

    init(devices: [CompiledDevice], vectors vectorArray: [Double], heights heightArray: [Double]) {
        count = devices.count
        coordinateCount = heightArray.count
        slots = .allocate(capacity: max(count, 1))
        latitudes = .allocate(capacity: max(count, 1))
        longitudes = .allocate(capacity: max(count, 1))
        var mapOnly = 0
        for (index, device) in devices.enumerated() {
            slots[index] = device.coordinate
            latitudes[index] = device.latitude
            longitudes[index] = device.longitude
            if device.coordinate < 0, !device.latitude.isNaN { mapOnly += 1 }
        }
        let metricHeights = heightArray.allSatisfy { $0.isFinite && $0 >= 0 }
        obeysTriangleInequality = heightArray.isEmpty || (mapOnly == 0 && metricHeights)
        vectors = .allocate(capacity: max(vectorArray.count, 1))
        vectors.initialize(from: vectorArray, count: vectorArray.count)
        heights = .allocate(capacity: max(heightArray.count, 1))
        heights.initialize(from: heightArray, count: heightArray.count)
    }

    deinit {
        slots.deallocate()
        latitudes.deallocate()
        longitudes.deallocate()
        vectors.deallocate()
        heights.deallocate()
    }

    /// The estimated RTT between two devices: Vivaldi when both have coordinates, geography when both have map
    /// positions, else nil (unknown is never assumed near).
    @inline(__always)
    func rtt(_ a: Int, _ b: Int) -> Double? {
        precondition(a >= 0 && a < count && b >= 0 && b < count, "device index out of range")
        if a == b { return 0 }
        let first = Int(slots[a])
        let second = Int(slots[b])
        if first >= 0, second >= 0 {
            let dimensions = VivaldiCoordinate.dimensions
            let x = vectors + first * dimensions
            let y = vectors + second * dimensions
            var sum = 0.0
            for offset in 0..<dimensions {
                let delta = x[offset] - y[offset]
                sum += delta * delta
            }
            return sum.squareRoot() + heights[first] + heights[second]
        }
        guard !latitudes[a].isNaN, !latitudes[b].isNaN else { return nil }
        return GeographicLatency.rtt(
            GeoPoint(latitude: latitudes[a], longitude: longitudes[a]),
            GeoPoint(latitude: latitudes[b], longitude: longitudes[b]))
    }

    func coordinate(ofDevice index: Int) -> VivaldiCoordinate? {
        let slot = Int(slots[index])
        guard slot >= 0 else { return nil }
        let dimensions = VivaldiCoordinate.dimensions
        return VivaldiCoordinate(
            vector: Array(UnsafeBufferPointer(start: vectors + slot * dimensions, count: dimensions)),
            height: heights[slot], error: 0)
    }
}
