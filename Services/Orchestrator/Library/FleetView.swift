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
        var version = 0
        var cached: (version: Int, snapshot: PlacementSnapshot)?
    }

    private let state = Mutex(State())

    public init() {}

    /// The last registry revision applied (a watch resumes after it).
    public var revision: Int64 { state.withLock { $0.revision } }
    /// Whether a full snapshot has been received: until then placement would see a partial fleet.
    public var isSynced: Bool { state.withLock { $0.synced } }
    public var deviceCount: Int { state.withLock { $0.devices.count } }

    func apply(_ change: Orrery_Registry_V1_DeviceChange) {
        state.withLock { state in
            state.devices[change.device.did] = change.device
            state.revision = max(state.revision, change.revision)
            state.version += 1
        }
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
            state.revision = 0
            state.synced = false
            state.version += 1
        }
    }

    func setCoordinates(_ coordinates: [String: VivaldiCoordinate]) {
        state.withLock { state in
            state.coordinates = coordinates
            state.version += 1
        }
    }

    public func device(_ did: String) -> Orrery_Registry_V1_Device? { state.withLock { $0.devices[did] } }

    /// A snapshot of every known device with `reserved` subtracted from its capacity. The snapshot of the fleet as
    /// it is is built once per change the registry or the coordinates made, and reservations are laid over it.
    public func snapshot(reserved: [String: Reservation] = [:]) -> PlacementSnapshot {
        let base = currentSnapshot()
        return reserved.isEmpty ? base : base.reserving(reserved)
    }

    /// The snapshot of the fleet without reservations: the one built for the current version, or a new one.
    private func currentSnapshot() -> PlacementSnapshot {
        let (devices, coordinates, version, cached) = state.withLock {
            ($0.devices, $0.coordinates, $0.version, $0.cached)
        }
        if let cached, cached.version == version { return cached.snapshot }
        let placementDevices = devices.values.sorted { $0.did < $1.did }.map { device in
            Self.placementDevice(device)
        }
        let snapshot = PlacementSnapshot(devices: placementDevices, coordinates: coordinates)
        state.withLock { state in
            if (state.cached?.version ?? -1) < version { state.cached = (version, snapshot) }
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
