import Testing

@testable import OrreryPlacement

@Suite("Network coordinates")
struct NetworkCoordinateTests {
    /// A synthetic network: nodes on a plane (distance in ms) plus an access delay per node.
    struct SyntheticNetwork {
        var positions: [String: (x: Double, y: Double, access: Double)] = [:]
        var devices: [String] = []
        var landmarks: [String] = []

        init(devices deviceCount: Int, landmarks landmarkCount: Int, seed: UInt64) {
            var state = seed
            func uniform() -> Double {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Double(state >> 11) / Double(1 << 53)
            }
            for index in 0..<landmarkCount {
                let name = "registry:10.0.0.\(index):7402"
                landmarks.append(name)
                positions[name] = (uniform() * 120, uniform() * 80, 0.5 + uniform())
            }
            for index in 0..<deviceCount {
                let name = "did:key:device\(index)"
                devices.append(name)
                positions[name] = (uniform() * 120, uniform() * 80, 1 + uniform() * 4)
            }
        }

        func rtt(_ a: String, _ b: String) -> Double {
            guard let p = positions[a], let q = positions[b] else { return .nan }
            return ((p.x - q.x) * (p.x - q.x) + (p.y - q.y) * (p.y - q.y)).squareRoot() + p.access + q.access
        }

        /// What agents report: each device to every landmark and to `peers` other devices.
        func samples(peers: Int) -> [RTTSample] {
            var samples: [RTTSample] = []
            for (index, device) in devices.enumerated() {
                for landmark in landmarks {
                    samples.append(RTTSample(from: device, to: landmark, rttMilliseconds: rtt(device, landmark)))
                }
                for step in 1...peers {
                    let peer = devices[(index + step * 7) % devices.count]
                    if peer != device {
                        samples.append(RTTSample(from: device, to: peer, rttMilliseconds: rtt(device, peer)))
                    }
                }
            }
            return samples
        }
    }

    static func medianRelativeError(_ model: VivaldiModel, _ network: SyntheticNetwork) -> Double {
        var errors: [Double] = []
        for (i, a) in network.devices.enumerated() {
            for b in network.devices[(i + 1)...] {
                guard let ca = model.coordinates[a], let cb = model.coordinates[b] else { return .infinity }
                let truth = network.rtt(a, b)
                errors.append(abs(ca.rtt(to: cb) - truth) / truth)
            }
        }
        errors.sort()
        return errors[errors.count / 2]
    }

    @Test("Vivaldi predicts device-to-device RTTs it never measured, from landmark and peer samples")
    func predictsUnmeasuredPairs() {
        let network = SyntheticNetwork(devices: 60, landmarks: 6, seed: 42)
        var model = VivaldiModel()
        model.fit(network.samples(peers: 4))
        let error = Self.medianRelativeError(model, network)
        #expect(error < 0.05, "median relative error \(error)")
        // Without fitting, every prediction is a guess: the test can tell a fitted model from none.
        var untrained = VivaldiModel()
        untrained.fit(network.samples(peers: 4), rounds: 0)
        #expect(Self.medianRelativeError(untrained, network) == .infinity)
    }

    @Test(
        "the fitter fits in full once, follows drifting RTTs with warm rounds, and fits new nodes in full only once its interval passed"
    )
    func fitterBoundsItsWork() {
        var network = SyntheticNetwork(devices: 60, landmarks: 6, seed: 42)
        let start = ContinuousClock.now
        var fitter = CoordinateFitter(fullInterval: .seconds(30), warmRounds: 3)
        let first = fitter.update(network.samples(peers: 4), now: start)
        #expect(first)
        let fitted = Self.medianRelativeError(fitter.model, network)
        #expect(fitted < 0.05, "median relative error \(fitted)")

        // Half the devices move (their RTTs change by tens of per cent): warm rounds follow without a full fit.
        for device in network.devices.enumerated().filter({ $0.offset % 2 == 0 }).map(\.element) {
            network.positions[device]?.x += 50
        }
        let stale = Self.medianRelativeError(fitter.model, network)
        #expect(stale > 0.1, "the move changed what the coordinates predict: \(stale)")
        for second in 1...5 {
            let full = fitter.update(network.samples(peers: 4), now: start + .seconds(second * 2))
            #expect(!full)
        }
        let followed = Self.medianRelativeError(fitter.model, network)
        #expect(followed < 0.06, "median relative error after the drift \(followed)")

        // A new device: no coordinate (nor a half-fitted one) until the interval since the last full fit passed.
        network.devices.append("did:key:newcomer")
        network.positions["did:key:newcomer"] = (60, 40, 2)
        let early = fitter.update(network.samples(peers: 4), now: start + .seconds(12))
        #expect(!early)
        #expect(fitter.coordinates["did:key:newcomer"] == nil)
        let stillEarly = fitter.update(network.samples(peers: 4), now: start + .seconds(29))
        let due = fitter.update(network.samples(peers: 4), now: start + .seconds(30))
        #expect(!stillEarly && due)
        #expect(fitter.coordinates["did:key:newcomer"] != nil)
        let refitted = Self.medianRelativeError(fitter.model, network)
        #expect(refitted < 0.05, "median relative error after the full fit \(refitted)")
    }

    @Test("latency edges hold on the fitted coordinates: both ends of an edge are placed close together")
    func edgesRespected() throws {
        let network = SyntheticNetwork(devices: 60, landmarks: 6, seed: 7)
        var model = VivaldiModel()
        model.fit(network.samples(peers: 4))
        let devices = network.devices.enumerated().map { index, did in
            PlacementDevice(
                did: did, ownerDID: "did:key:owner", architecture: "x86_64", cpuCores: 4, ramMiB: 4096, diskMiB: 1000,
                prices: Prices(perCoreHour: UInt64(100 + (index * 37) % 90)))
        }
        let snapshot = PlacementSnapshot(devices: devices, coordinates: model.coordinates)
        let request = PlacementRequest(
            allocations: [
                AllocationRequest(name: "frontend", replicas: 2, cpuCores: 2, ramMiB: 1024, spread: .spread),
                AllocationRequest(name: "database", cpuCores: 4, ramMiB: 4096),
                AllocationRequest(name: "cache", cpuCores: 1, ramMiB: 512),
            ],
            edges: [
                LatencyEdge(from: 0, to: 1, maxRTTMilliseconds: 25),
                LatencyEdge(from: 1, to: 2, maxRTTMilliseconds: 12),
            ])
        guard case .placed(let placement) = PlacementSolver().place(request, on: snapshot) else {
            Issue.record("not placed")
            return
        }
        let frontends = placement.allocations[0].replicas.map(\.deviceDID)
        let database = placement.allocations[1].replicas[0].deviceDID
        let cache = placement.allocations[2].replicas[0].deviceDID
        #expect(Set(frontends).count == 2)
        for frontend in frontends {
            let predicted = try #require(
                snapshot.rtt(between: snapshot.index(of: frontend)!, and: snapshot.index(of: database)!))
            #expect(predicted <= 25)
            #expect(network.rtt(frontend, database) <= 25 * 1.25, "true RTT within the prediction error")
        }
        #expect(network.rtt(database, cache) <= 12 * 1.25)
        // The cheapest devices are far apart: without the edges the solver picks differently.
        guard
            case .placed(let unconstrained) = PlacementSolver().place(
                PlacementRequest(allocations: request.allocations), on: snapshot)
        else { return }
        #expect(unconstrained.totalCost < placement.totalCost)
    }

    @Test("geography stands in for devices without samples: Berlin–Paris is about 13 ms")
    func geographicFallback() throws {
        let berlin = GeoPoint(latitude: 52.52, longitude: 13.40)
        let paris = GeoPoint(latitude: 48.85, longitude: 2.35)
        #expect(abs(GeographicLatency.distanceKm(berlin, paris) - 878) < 5)
        #expect(abs(GeographicLatency.rtt(berlin, paris) - (2 + 878 / (200.0 / 2 / 1.5))) < 0.2)
        let snapshot = PlacementSnapshot(devices: [
            PlacementDevice(
                did: "did:key:a", ownerDID: "o", architecture: "x86_64", cpuCores: 1, ramMiB: 1, diskMiB: 1,
                location: GeoLocation(point: berlin)),
            PlacementDevice(
                did: "did:key:b", ownerDID: "o", architecture: "x86_64", cpuCores: 1, ramMiB: 1, diskMiB: 1,
                location: GeoLocation(point: paris)),
            PlacementDevice(
                did: "did:key:c", ownerDID: "o", architecture: "x86_64", cpuCores: 1, ramMiB: 1, diskMiB: 1),
        ])
        #expect(try #require(snapshot.rtt(between: 0, and: 1)) > 13)
        #expect(snapshot.rtt(between: 0, and: 2) == nil, "no coordinates and no position: unknown, never assumed near")
    }

    @Test("a fit takes the same steps as observing each sample in the pass's order: the same coordinates, bit for bit")
    func fitIsObserveInOrder() {
        let network = SyntheticNetwork(devices: 40, landmarks: 4, seed: 11)
        var samples = network.samples(peers: 2)
        // Samples a step skips: a node with itself, no RTT, a RTT that is not a number (their nodes get no coordinate).
        samples.append(RTTSample(from: "did:key:alone", to: "did:key:alone", rttMilliseconds: 5))
        samples.append(RTTSample(from: "did:key:zero", to: network.landmarks[0], rttMilliseconds: 0))
        samples.append(RTTSample(from: "did:key:nan", to: network.landmarks[1], rttMilliseconds: .nan))
        var fitted = VivaldiModel()
        var observed = VivaldiModel()
        // A cold fit (every node new, all at the origin: random directions), then a warm one with a node added.
        for (rounds, batch) in [
            (3, samples),
            (2, samples + [RTTSample(from: "did:key:late", to: network.landmarks[2], rttMilliseconds: 9)]),
        ] {
            fitted.fit(batch, rounds: rounds)
            var order = Array(batch.indices)
            for _ in 0..<rounds {
                observed.shuffle(&order)
                for index in order {
                    observed.observe(batch[index].from, batch[index].to, rttMilliseconds: batch[index].rttMilliseconds)
                }
            }
            #expect(fitted.coordinates == observed.coordinates)
        }
        #expect(fitted.coordinates["did:key:late"] != nil)
        #expect(fitted.coordinates["did:key:alone"] == nil)
        #expect(fitted.coordinates["did:key:zero"] == nil)
        #expect(fitted.coordinates["did:key:nan"] == nil)
        #expect(fitted.coordinates.count == 40 + 4 + 1)
    }
}
