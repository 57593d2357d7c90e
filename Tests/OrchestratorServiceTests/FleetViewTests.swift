import Foundation
import OrreryPlacement
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

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
}
