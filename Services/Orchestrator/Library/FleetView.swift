internal import Foundation
public import OrreryPlacement
public import OrreryProto
internal import Synchronization

/// The orchestrator's picture of the network: every device as the registry's watch last described it, the Vivaldi
/// coordinates fitted to the RTT samples devices reported, and the resources deployments already hold. Placement
/// reads immutable snapshots of it; followers update it.
public final class FleetView: Sendable {
    private struct State {
        var devices: [String: Orrery_Registry_V1_Device] = [:]
        var revision: Int64 = 0
        var synced = false
        var coordinates: [String: VivaldiCoordinate] = [:]
        /// Counts the changes placement must see at once: a device joined, left, came or went, or changed what it
        /// offers.
        var version = 0
        /// Counts the changes placement may see up to `refinementDelay` late: reputations and coordinates refined.
        var refinements = 0
        var cached:
            (
                version: Int, refinements: Int, sequence: Int, builtAt: ContinuousClock.Instant,
                snapshot: PlacementSnapshot
            )?
        /// Counts every change to the fleet or its coordinates: a snapshot records the count it includes.
        var sequence = 0
        /// The devices changed, by the count after each change, since the cached snapshot (trimmed as it advances):
        /// what a snapshot updated in place from the cached one must describe anew.
        var changed: [(sequence: Int, did: String)] = []
        /// The count after the last change no snapshot can be updated in place for (a join, a reset): a snapshot
        /// from before it is built again from scratch.
        var rebuildAfter = 0
        /// The count after the coordinates last changed: a snapshot from before it takes them in place.
        var coordinatesChanged = 0
        /// Every device as placement reads it, converted once per change of that device.
        var placementDevices: [String: PlacementDevice] = [:]
        /// The devices' DIDs in order (a snapshot lists them so), sorted again only when one joins.
        var order: [String]?
        /// Snapshots being built now: a caller that finds the cached one only refinements behind uses it meanwhile.
        var building = 0

        /// The next snapshot is built from scratch; the changes recorded so far are of no more use.
        mutating func rebuildFromScratch() {
            rebuildAfter = sequence
            changed.removeAll()
        }

        /// What a snapshot from scratch is built of, as the fleet is now (the devices in DID order, sorted again only
        /// after a join).
        mutating func fleetAsItIs() -> FleetAsItIs {
            let order = order ?? placementDevices.keys.sorted()
            self.order = order
            return FleetAsItIs(order: order, devices: placementDevices, coordinates: coordinates)
        }
    }

    /// A copy of the fleet taken under the lock, built into a snapshot outside it.
    private struct FleetAsItIs {
        let order: [String]
        let devices: [String: PlacementDevice]
        let coordinates: [String: VivaldiCoordinate]

        func snapshot() -> PlacementSnapshot {
            PlacementSnapshot(devices: order.compactMap { devices[$0] }, coordinates: coordinates)
        }
    }

    private let state = Mutex(State())
    /// How late a snapshot may show refinements (reputation counts, refitted coordinates): every deployment that
    /// ends changes a reputation, and a snapshot rebuilt for each would cost a pass over every device per placement.
    let refinementDelay: Duration

    public init(refinementDelay: Duration = .seconds(1)) {
        self.refinementDelay = refinementDelay
    }

    /// The last registry revision applied (a watch resumes after it).
    public var revision: Int64 { state.withLock { $0.revision } }
    /// Whether a full snapshot has been received: until then placement would see a partial fleet.
    public var isSynced: Bool { state.withLock { $0.synced } }
    public var deviceCount: Int { state.withLock { $0.devices.count } }

    func apply(_ change: Orrery_Registry_V1_DeviceChange) {
        state.withLock { state in
            let before = state.devices[change.device.did]
            state.devices[change.device.did] = change.device
            state.placementDevices[change.device.did] = Self.placementDevice(change.device)
            state.sequence += 1
            if before == nil {
                state.order = nil
                state.rebuildFromScratch()
            } else {
                state.changed.append((state.sequence, change.device.did))
                // So many changes that a snapshot from scratch costs less than replaying them.
                if state.changed.count > max(64, state.devices.count / 4) { state.rebuildFromScratch() }
            }
            state.revision = max(state.revision, change.revision)
            if let before, Self.onlyRefined(before, into: change.device) {
                state.refinements += 1
            } else {
                state.version += 1
            }
        }
    }

    /// Whether `after` differs from `before` only in what refines a choice (its reputation) or in what placement does
    /// not read (its revision, last heartbeat and free resources, which every change carries anew), not in whether
    /// or what it can be chosen for.
    static func onlyRefined(_ before: Orrery_Registry_V1_Device, into after: Orrery_Registry_V1_Device) -> Bool {
        before.did == after.did && before.ownerDid == after.ownerDid && before.status == after.status
            && before.capabilities == after.capabilities
    }

    func markSynced(revision: Int64) {
        state.withLock { state in
            state.synced = true
            state.revision = max(state.revision, revision)
        }
    }

    /// Forget everything before a fresh snapshot (a registry whose log restarted).
    func reset() {
        state.withLock { state in
            state.devices = [:]
            state.placementDevices = [:]
            state.order = nil
            state.revision = 0
            state.synced = false
            state.version += 1
            state.sequence += 1
            state.rebuildFromScratch()
        }
    }

    func setCoordinates(_ coordinates: [String: VivaldiCoordinate]) {
        state.withLock { state in
            // Nodes fitted for the first time are news; coordinates refitted are a refinement.
            if coordinates.keys.allSatisfy({ state.coordinates[$0] != nil }) {
                state.refinements += 1
            } else {
                state.version += 1
            }
            state.coordinates = coordinates
            state.sequence += 1
            state.coordinatesChanged = state.sequence
        }
    }

    public func device(_ did: String) -> Orrery_Registry_V1_Device? { state.withLock { $0.devices[did] } }

    /// A snapshot of every known device with `reserved` subtracted from its capacity. The snapshot of the fleet as
    /// it is is built once per change the registry or the coordinates made, and reservations are laid over it.
    public func snapshot(reserved: [String: Reservation] = [:]) -> PlacementSnapshot {
        let base = currentSnapshot()
        return reserved.isEmpty ? base : base.reserving(reserved)
    }

    /// The snapshot of the fleet without reservations: the one built for the current version (with refinements at
    /// most `refinementDelay` late, or while a newer one is being built), or a new one — the cached one with the
    /// coordinates and the devices changed since laid over it when no device joined, else one built from scratch.
    private func currentSnapshot() -> PlacementSnapshot {
        let now = ContinuousClock.now
        enum Step {
            case use(PlacementSnapshot)
            case update(base: PlacementSnapshot, coordinates: [String: VivaldiCoordinate]?, changed: [PlacementDevice])
            case build(FleetAsItIs)
        }
        typealias Stamp = (version: Int, refinements: Int, sequence: Int)
        let (step, stamp) = state.withLock { state -> (Step, Stamp) in
            let stamp = (state.version, state.refinements, state.sequence)
            if let cached = state.cached, cached.version == state.version,
                cached.refinements == state.refinements || now - cached.builtAt < refinementDelay
                    || state.building > 0
            {
                return (.use(cached.snapshot), stamp)
            }
            state.building += 1
            guard let cached = state.cached, state.rebuildAfter <= cached.sequence else {
                return (.build(state.fleetAsItIs()), stamp)
            }
            var seen: Set<String> = []
            var changed: [PlacementDevice] = []
            for entry in state.changed where entry.sequence > cached.sequence && seen.insert(entry.did).inserted {
                if let device = state.placementDevices[entry.did] { changed.append(device) }
            }
            let coordinates = state.coordinatesChanged > cached.sequence ? state.coordinates : nil
            return (.update(base: cached.snapshot, coordinates: coordinates, changed: changed), stamp)
        }
        let snapshot: PlacementSnapshot
        switch step {
        case .use(let cached):
            return cached
        case .update(let base, let coordinates, let changed):
            // Nil when a device moved on the map: then from scratch, from the fleet as it is now (its later changes,
            // laid over it again next time, change nothing).
            snapshot =
                (coordinates.map { base.withCoordinates($0) } ?? base).updating(changed)
                ?? state.withLock { $0.fleetAsItIs() }.snapshot()
        case .build(let fleet):
            snapshot = fleet.snapshot()
        }
        state.withLock { state in
            state.building -= 1
            if (state.cached.map { $0.sequence < stamp.sequence }) ?? true {
                state.cached = (stamp.version, stamp.refinements, stamp.sequence, now, snapshot)
                state.changed.removeAll { $0.sequence <= stamp.sequence }
            }
        }
        return snapshot
    }

    static func placementDevice(_ device: Orrery_Registry_V1_Device) -> PlacementDevice {
        let capabilities = device.capabilities
        let mebibyte: UInt64 = 1 << 20
        let location = capabilities.location
        let hasPoint = location.latitude != 0 || location.longitude != 0
        let smallestVRAM = capabilities.gpus.map(\.vramBytes).min() ?? 0
        return PlacementDevice(
            did: device.did, ownerDID: device.ownerDid, architecture: capabilities.architecture,
            cpuCores: Int(capabilities.cpuCores), ramMiB: Int(capabilities.ramBytes / mebibyte),
            diskMiB: Int(capabilities.diskBytes / mebibyte),
            gpus: GPUInventory(
                vendor: capabilities.gpus.first?.vendor ?? "", model: capabilities.gpus.first?.model ?? "",
                count: capabilities.gpus.count, vramMiB: Int(smallestVRAM / mebibyte)),
            location: GeoLocation(
                country: location.country, region: location.region,
                point: hasPoint ? GeoPoint(latitude: location.latitude, longitude: location.longitude) : nil),
            prices: Prices(
                perCoreHour: capabilities.prices.perCoreHour, perGBRAMHour: capabilities.prices.perGbRamHour,
                perGPUHour: capabilities.prices.perGpuHour, minimumPerJob: capabilities.prices.minimumPerJob),
            labels: capabilities.labels, online: device.status == .online,
            reputation: Reputation(
                completed: device.reputation.completedAllocations, failed: device.reputation.failedAllocations,
                relocatedAway: device.reputation.relocatedAway),
            executors: capabilities.executors.isEmpty ? ["process"] : Set(capabilities.executors),
            platforms: Set(capabilities.platforms))
    }
}

/// Resources held on a device by the deployments placed there.
public typealias Reservation = ResourceAmount
