import OrreryPlacement
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// When a running replica moves by itself: markedly cheaper, or markedly nearer its latency targets at no higher
/// price — never for noise, never back and forth.
@Suite("Better placement decisions")
struct BetterPlacementDecisionTests {
    static let paris = GeoPoint(latitude: 48.85, longitude: 2.35)
    static let madrid = GeoPoint(latitude: 40.42, longitude: -3.70)
    static let lyon = GeoPoint(latitude: 45.76, longitude: 4.84)
    let solver = PlacementSolver()

    static func device(_ name: String, at point: GeoPoint, perCore: UInt64) -> PlacementDevice {
        PlacementDevice(
            did: "did:key:\(name)", ownerDID: "did:key:owner", architecture: "x86_64", cpuCores: 8, ramMiB: 16384,
            diskMiB: 100_000, gpus: GPUInventory(), location: GeoLocation(country: "FR", region: "", point: point),
            prices: Prices(perCoreHour: perCore, perGBRAMHour: 0, perGPUHour: 0, minimumPerJob: 0), labels: [:],
            online: true, reputation: Reputation(completed: 1, failed: 0, relocatedAway: 0))
    }

    /// The replica runs on `current`; the request excludes it, as `replacementRequest` does.
    func decide(_ devices: [PlacementDevice], current: String, margin: Int = 30, targets: Bool = true)
        -> (target: ReplicaPlacement, why: String)?
    {
        var allocation = AllocationRequest(name: "counter", cpuCores: 1, ramMiB: 64)
        if targets {
            allocation.constraints.latencyTargets = [
                LatencyTarget(place: .point(Self.paris), maxRTTMilliseconds: 500)
            ]
        }
        let snapshot = PlacementSnapshot(devices: devices)
        let running = devices.first { $0.did == "did:key:\(current)" }
        let assignment = Orrery_Orchestrator_V1_Assignment.with {
            $0.allocation = "counter"
            $0.deviceDid = "did:key:\(current)"
            $0.hourlyPrice = running?.prices.perCoreHour ?? 0
        }
        return BetterPlacements.better(
            than: assignment,
            request: PlacementRequest(allocations: [allocation], excludedDevices: ["did:key:\(current)"]),
            snapshot: snapshot, solver: solver, margin: margin)
    }

    @Test("a device near the target at the same price draws a replica running far away")
    func nearerAtTheSamePrice() throws {
        let found = try #require(
            decide(
                [
                    Self.device("madrid", at: Self.madrid, perCore: 100),
                    Self.device("paris", at: Self.paris, perCore: 100),
                ],
                current: "madrid"))
        #expect(found.target.deviceDID == "did:key:paris")
        #expect(found.why.contains("nearer its latency targets (an estimated 2.0 ms instead of"), "\(found.why)")
    }

    @Test("nearer but dearer, or no latency targets: it stays")
    func staysWhenNotBetter() {
        let devices = [
            Self.device("madrid", at: Self.madrid, perCore: 100), Self.device("paris", at: Self.paris, perCore: 101),
        ]
        #expect(decide(devices, current: "madrid") == nil)
        #expect(decide(devices, current: "madrid", targets: false) == nil)
    }

    @Test("the margin and the noise floor both hold a nearer move back")
    func marginAndFloor() {
        // Lyon → Paris: about 2 ms instead of 7.9 ms, 75 % less, more than the floor.
        let lyon = [
            Self.device("lyon", at: Self.lyon, perCore: 100), Self.device("paris", at: Self.paris, perCore: 100),
        ]
        #expect(decide(lyon, current: "lyon")?.target.deviceDID == "did:key:paris")
        #expect(decide(lyon, current: "lyon", margin: 80) == nil)  // 75 % less is not 80 % less
        // A few kilometres nearer: far less than 5 ms saved, however large the share.
        let suburb = GeoPoint(latitude: 48.95, longitude: 2.45)
        let close = [
            Self.device("suburb", at: suburb, perCore: 100), Self.device("paris", at: Self.paris, perCore: 100),
        ]
        #expect(decide(close, current: "suburb", margin: 1) == nil)
        #expect(!BetterPlacements.isMarkedlyNearer(.nan, than: 20, margin: 30))
        #expect(BetterPlacements.isMarkedlyNearer(14, than: 20, margin: 30))
        #expect(!BetterPlacements.isMarkedlyNearer(14.1, than: 20, margin: 30))
    }

    @Test("a markedly cheaper device comes before a nearer one, and neither move leads back")
    func cheaperFirstNoCycle() throws {
        let devices = [
            Self.device("madrid", at: Self.madrid, perCore: 100), Self.device("paris", at: Self.paris, perCore: 100),
            Self.device("lyon-cheap", at: Self.lyon, perCore: 10),
        ]
        let first = try #require(decide(devices, current: "madrid"))
        #expect(first.target.deviceDID == "did:key:lyon-cheap")
        #expect(first.why.contains("90% cheaper"), "\(first.why)")
        // From Lyon, Paris is nearer but dearer: no move back up in price.
        #expect(decide(devices, current: "lyon-cheap") == nil)
        // From Paris the cheap device draws it too (a price move, not a nearness one).
        #expect(decide(devices, current: "paris")?.target.deviceDID == "did:key:lyon-cheap")
    }
}
