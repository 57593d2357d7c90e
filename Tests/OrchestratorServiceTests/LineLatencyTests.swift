import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// When a watch tells about a deployment's latency edges again, and how it sums them up.
@Suite("Line latency")
struct LineLatencyTests {
    static func edge(path: Double?, estimate: Double? = 0.4, pairs: UInt32 = 1) -> Orrery_Orchestrator_V1_EdgeLatency {
        .with {
            $0.from = "web"
            $0.to = "cache"
            $0.maxRttMs = 5
            $0.pairs = pairs
            if let path { $0.pathRttMs = path }
            if let estimate { $0.placementRttMs = estimate }
        }
    }

    @Test("a value appearing, a replica pair more, or a move over 10 % and 0.5 ms is a change; jitter is not")
    func changes() {
        #expect(LineLatency.changed([Self.edge(path: 1.2)], since: []))
        #expect(LineLatency.changed([Self.edge(path: 1.2)], since: [Self.edge(path: nil)]))
        #expect(LineLatency.changed([Self.edge(path: nil)], since: [Self.edge(path: 1.2)]))
        #expect(LineLatency.changed([Self.edge(path: 1.2, pairs: 2)], since: [Self.edge(path: 1.2)]))
        #expect(!LineLatency.changed([Self.edge(path: 1.5)], since: [Self.edge(path: 1.2)]))  // 0.3 ms
        #expect(!LineLatency.changed([Self.edge(path: 40.3)], since: [Self.edge(path: 39.0)]))  // 3 %
        #expect(LineLatency.changed([Self.edge(path: 2.0)], since: [Self.edge(path: 1.2)]))
        #expect(LineLatency.changed([Self.edge(path: 1.2, estimate: 9)], since: [Self.edge(path: 1.2, estimate: 0.4)]))
    }

    @Test("the summary names each edge, both RTTs to a tenth of a millisecond, and its bound")
    func summary() {
        #expect(
            LineLatency.summary([Self.edge(path: 1.26), Self.edge(path: nil, estimate: nil)])
                == "web → cache: devices 0.4 ms, path 1.3 ms (at most 5.0 ms); web → cache: devices unknown, path not measured (at most 5.0 ms)"
        )
    }
}
