import GRPCCore
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// Who reaches whom on the ensemble network, and the names a sandbox is given.
@Suite("Ensemble network rules")
struct EnsembleNetworkRulesTests {
    static let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
        $0.allocations = [
            .with {
                $0.name = "cache"
                $0.ports = [
                    .with {
                        $0.name = "redis"; $0.port = 6379
                    }
                ]
            },
            .with { $0.name = "web" },
            .with {
                $0.name = "api"
                $0.ports = [
                    .with {
                        $0.name = "http"; $0.port = 8080
                    },
                    .with {
                        $0.name = "grpc"; $0.port = 9090
                    },
                ]
            },
        ]
    }

    @Test("each partner with ports gets its own loopback address, fixed by its place in the spec; never itself")
    func peers() {
        let forWeb = EnsembleNetwork.peers(of: Self.spec, for: "web")
        #expect(forWeb.map(\.allocation) == ["cache", "api"])
        #expect(forWeb.map(\.address) == ["127.77.0.2", "127.77.0.4"])
        #expect(forWeb.last?.ports == [8080, 9090])
        #expect(EnsembleNetwork.peers(of: Self.spec, for: "cache").map(\.allocation) == ["api"])
    }

    @Test(
        "a device reaches a partner only for a running offer of its own, of the same deployment, on a declared port"
    )
    func judge() {
        let open = Orrery_Orchestrator_V1_PeerTunnelOpen.with {
            $0.offerID = "off_web"
            $0.allocation = "cache"
            $0.port = 6379
        }
        let own = (deployment: "dep_a", allocation: "web", device: "did:key:web", isRunning: true)
        #expect(
            EnsembleNetwork.judge(open, device: "did:key:web", offer: own, spec: Self.spec)
                == .reach(deployment: "dep_a"))
        // Another device's offer: a forged claim.
        guard
            case .refuse(.permissionDenied, _) = EnsembleNetwork.judge(
                open, device: "did:key:intruder", offer: own, spec: Self.spec)
        else { Issue.record("another device's offer was not refused"); return }
        guard
            case .refuse(.permissionDenied, _) = EnsembleNetwork.judge(
                open, device: "did:key:web", offer: nil, spec: nil)
        else { Issue.record("an unknown offer was not refused"); return }
        var stopped = own
        stopped.isRunning = false
        #expect(
            EnsembleNetwork.judge(open, device: "did:key:web", offer: stopped, spec: Self.spec)
                == .refuse(.failedPrecondition, "offer off_web does not run"))
        var elsewhere = open
        elsewhere.allocation = "db"
        #expect(
            EnsembleNetwork.judge(elsewhere, device: "did:key:web", offer: own, spec: Self.spec)
                == .refuse(.notFound, "dep_a has no allocation 'db'"))
        var undeclared = open
        undeclared.port = 22
        #expect(
            EnsembleNetwork.judge(undeclared, device: "did:key:web", offer: own, spec: Self.spec)
                == .refuse(.notFound, "cache declares no port 22"))
    }
}
