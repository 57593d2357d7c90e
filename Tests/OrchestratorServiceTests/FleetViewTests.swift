import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService
@testable import OrreryPlacement

/// The orchestrator's fleet view: the snapshot placement reads is built once per change that matters at once, and
/// refinements (reputations, refitted coordinates) reach it at most its delay late.
@Suite("Fleet view: snapshots rebuilt for what matters at once")
struct FleetViewTests {
    /// A device's change as the registry's watch carries it: each with its own revision, and the last heartbeat and
    /// free resources as of that change.
    static func change(_ did: String, status: Orrery_Registry_V1_DeviceStatus = .online, completed: UInt64 = 0)
        -> Orrery_Registry_V1_DeviceChange
    {
        let revision = Int64.random(in: 1...Int64.max)
        return .with {
            $0.kind = .updated
            $0.revision = revision
            $0.device = .with {
                $0.did = did
                $0.revision = revision
                $0.lastHeartbeatAt = .init(date: .now)
                $0.free = .with { $0.cpuMillicores = .random(in: 0...4000) }
                $0.status = status
                $0.capabilities = .with {
                    $0.architecture = "x86_64"
                    $0.cpuCores = 4
                    $0.ramBytes = 8 << 30
                }
                $0.reputation = .with { $0.completedAllocations = completed }
            }
        }
    }

    static func device(_ did: String, in snapshot: PlacementSnapshot) -> PlacementDevice? {
        snapshot.devices.first { $0.did == did }
    }

    @Test(
        "a reputation change waits for the refinement delay; a device going offline or changing what it offers does not"
    )
    func refinementsLate() throws {
        let fleet = FleetView(refinementDelay: .seconds(3600))
        fleet.apply(Self.change("did:key:a"))
        fleet.apply(Self.change("did:key:b"))
        #expect(try #require(Self.device("did:key:a", in: fleet.snapshot())).reputation.completed == 0)
        // A reputation refined: the snapshot built a moment ago stands.
        fleet.apply(Self.change("did:key:a", completed: 5))
        #expect(try #require(Self.device("did:key:a", in: fleet.snapshot())).reputation.completed == 0)
        // Offline: at once (with the refinement along).
        fleet.apply(Self.change("did:key:b", status: .offline))
        let now = fleet.snapshot()
        #expect(Self.device("did:key:b", in: now)?.online == false)
        #expect(Self.device("did:key:a", in: now)?.reputation.completed == 5)
        // What a device offers changed: at once.
        var bigger = Self.change("did:key:a", completed: 5)
        bigger.device.capabilities.cpuCores = 8
        fleet.apply(bigger)
        #expect(Self.device("did:key:a", in: fleet.snapshot())?.cpuCores == 8)
    }

    @Test("without a delay, a refinement is in the next snapshot")
    func noDelay() throws {
        let fleet = FleetView(refinementDelay: .zero)
        fleet.apply(Self.change("did:key:a"))
        _ = fleet.snapshot()
        fleet.apply(Self.change("did:key:a", completed: 2))
        #expect(Self.device("did:key:a", in: fleet.snapshot())?.reputation.completed == 2)
    }

    @Test("devices are listed in DID order, a joining one in its place, a changed one as it is now")
    func orderAndChanges() throws {
        let fleet = FleetView(refinementDelay: .seconds(3600))
        fleet.apply(Self.change("did:key:c"))
        fleet.apply(Self.change("did:key:a"))
        #expect(fleet.snapshot().devices.map(\.did) == ["did:key:a", "did:key:c"])
        fleet.apply(Self.change("did:key:b"))
        #expect(fleet.snapshot().devices.map(\.did) == ["did:key:a", "did:key:b", "did:key:c"])
        var bigger = Self.change("did:key:c")
        bigger.device.capabilities.cpuCores = 16
        fleet.apply(bigger)
        let snapshot = fleet.snapshot()
        #expect(snapshot.devices.map(\.did) == ["did:key:a", "did:key:b", "did:key:c"])
        #expect(Self.device("did:key:c", in: snapshot)?.cpuCores == 16)
    }

    @Test(
        "status and capability changes, joins and refitted coordinates in any order: each snapshot answers as one from scratch, and one updated in place shares the rest"
    )
    func updatedInPlace() throws {
        let fleet = FleetView(refinementDelay: .zero)
        var expected: [String: PlacementDevice] = [:]
        var coordinates: [String: VivaldiCoordinate] = [:]
        var state: UInt64 = 42
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        func apply(_ change: Orrery_Registry_V1_DeviceChange) {
            fleet.apply(change)
            expected[change.device.did] = FleetView.placementDevice(change.device)
        }
        for index in 0..<40 { apply(Self.change("did:key:d\(index)")) }
        let requests = (1...4).map { cores in
            PlacementRequest(allocations: [AllocationRequest(name: "job", cpuCores: cores * 2, ramMiB: 1024)])
        }
        let solver = PlacementSolver()
        var previous = fleet.snapshot()
        var sharedOnce = false
        for round in 0..<120 {
            var kind = "change"
            switch next(10) {
            case 0:
                kind = "join"
                apply(Self.change("did:key:d\(40 + round)"))
            case 1:
                kind = "coordinates"
                for did in expected.keys where next(2) == 0 {
                    var vector = Array(repeating: 0.0, count: VivaldiCoordinate.dimensions)
                    vector[0] = Double(next(100))
                    coordinates[did] = VivaldiCoordinate(vector: vector, height: 0.5, error: 0.2)
                }
                fleet.setCoordinates(coordinates)
            default:
                var change = Self.change(
                    "did:key:d\(next(40))", status: next(3) == 0 ? .offline : .online, completed: UInt64(next(5)))
                change.device.capabilities.cpuCores = UInt32(2 + next(7))
                apply(change)
            }
            let snapshot = fleet.snapshot()
            let rebuilt = PlacementSnapshot(
                devices: expected.keys.sorted().compactMap { expected[$0] }, coordinates: coordinates)
            #expect(snapshot.devices == rebuilt.devices, "round \(round), after a \(kind)")
            #expect(snapshot.landmarkCoordinates == rebuilt.landmarkCoordinates, "round \(round)")
            for request in requests {
                #expect(
                    solver.explain(request, on: snapshot) == solver.explain(request, on: rebuilt), "round \(round)")
            }
            // A device's change, laid over the snapshot before: its latency table is the same one.
            if kind == "change" {
                #expect(snapshot.latencies === previous.latencies, "round \(round): built from scratch")
                sharedOnce = true
            }
            previous = snapshot
        }
        #expect(sharedOnce)
    }
}
