import OrreryPlacement
import Testing

/// `PlacementSnapshot.reserving` lays reservations over a snapshot built once; placement on it must be what it is on
/// a snapshot built from devices with that much less capacity.
@Suite("Reservations laid over a snapshot")
struct ReservedSnapshotTests {
    @Test("placing, and explaining, on a snapshot with reservations laid over it answers as on one built with less")
    func sameAsRebuilt() throws {
        let solver = PlacementSolver(timeLimit: .seconds(10))
        var differing = 0
        var changed = 0
        for seed in UInt64(1)...300 {
            let instance = PlacementPropertyTests.instance(seed: seed)
            var random = PlacementPropertyTests.Generator(state: seed &* 7919)
            // Some devices hold some of their capacity for other deployments (now and then more than they have).
            var reserved: [String: ResourceAmount] = [:]
            for device in instance.devices where random.next(2) == 0 {
                reserved[device.did] = ResourceAmount(
                    cores: random.next(device.cpuCores + 2), ramMiB: 512 * random.next(5), diskMiB: random.next(1200),
                    gpus: random.next(2))
            }
            reserved["did:key:unknown"] = ResourceAmount(cores: 1)
            var reduced = instance
            reduced.devices = instance.devices.map { device in
                guard let amount = reserved[device.did] else { return device }
                var device = device
                device.cpuCores = max(0, device.cpuCores - amount.cores)
                device.ramMiB = max(0, device.ramMiB - amount.ramMiB)
                device.diskMiB = max(0, device.diskMiB - amount.diskMiB)
                device.gpus.count = max(0, device.gpus.count - amount.gpus)
                return device
            }
            let rebuilt = PlacementPropertyTests.snapshot(reduced)
            let laid = PlacementPropertyTests.snapshot(instance).reserving(reserved)
            #expect(laid.devices.map(\.did) == rebuilt.devices.map(\.did), "seed \(seed)")
            if reduced.devices != instance.devices { changed += 1 }
            let (a, b) = (solver.place(instance.request, on: rebuilt), solver.place(instance.request, on: laid))
            switch (a, b) {
            case (.placed(let x), .placed(let y)):
                if x.allocations != y.allocations || x.totalCost != y.totalCost { differing += 1 }
            case (.infeasible(let x), .infeasible(let y)):
                if x != y { differing += 1 }
            default:
                differing += 1
            }
            let (why, whyLaid) = (
                solver.explain(instance.request, on: rebuilt).reason, solver.explain(instance.request, on: laid).reason
            )
            #expect(why == whyLaid, "seed \(seed)")
        }
        #expect(differing == 0)
        #expect(changed > 200, "most instances had a reservation on a device: \(changed)")
    }
}
