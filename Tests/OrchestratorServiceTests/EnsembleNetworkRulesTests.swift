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

    static let other = "dep_" + String(repeating: "b", count: 26)

    /// `web` of the spec above listing another deployment's `store` (port 5432) as `db`.
    static var reaching: Orrery_Orchestrator_V1_WorkloadSpec {
        var spec = Self.spec
        spec.allocations[1].reaches = [
            .with {
                $0.name = "db"
                $0.deploymentID = other
                $0.allocation = "store"
                $0.ports = [5432]
            }
        ]
        return spec
    }

    @Test("another deployment's partners come after the spec's own, by the names `reaches` gives them, on 127.78.0.x")
    func foreignPeers() {
        let peers = EnsembleNetwork.peers(of: Self.reaching, for: "web")
        #expect(peers.map(\.allocation) == ["cache", "api", "store"])
        #expect(peers.last?.address == "127.78.0.2" && peers.last?.name == "db" && peers.last?.ports == [5432])
        #expect(peers.last?.deploymentID == Self.other && peers.first?.deploymentID == "")
        #expect(EnsembleNetwork.peers(of: Self.reaching, for: "cache").allSatisfy { $0.deploymentID.isEmpty })
    }

    @Test(
        "another deployment's partner: only when the allocation lists it (that port too), it declares the port, and its consumer granted access"
    )
    func judgeForeign() {
        let open = Orrery_Orchestrator_V1_PeerTunnelOpen.with {
            $0.offerID = "off_web"
            $0.allocation = "store"
            $0.port = 5432
            $0.deploymentID = Self.other
        }
        let own = (deployment: "dep_a", allocation: "web", device: "did:key:web", isRunning: true)
        let partner = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.allocations = [
                .with {
                    $0.name = "store"
                    $0.ports = [.with { $0.port = 5432 }]
                }
            ]
        }
        #expect(
            EnsembleNetwork.judge(
                open, device: "did:key:web", offer: own, spec: Self.reaching, partnerSpec: partner, granted: true)
                == .reach(deployment: Self.other))
        guard
            case .refuse(.permissionDenied, let ungranted) = EnsembleNetwork.judge(
                open, device: "did:key:web", offer: own, spec: Self.reaching, partnerSpec: partner, granted: false)
        else { Issue.record("an ungranted reach was not refused"); return }
        #expect(ungranted.contains("has not granted dep_a access"))
        // Not listed by this allocation (`cache` lists nothing), or not that port: refused even when granted.
        let cacheOffer = (deployment: "dep_a", allocation: "cache", device: "did:key:web", isRunning: true)
        guard
            case .refuse(.permissionDenied, _) = EnsembleNetwork.judge(
                open, device: "did:key:web", offer: cacheOffer, spec: Self.reaching, partnerSpec: partner,
                granted: true)
        else { Issue.record("an unlisted reach was not refused"); return }
        var otherPort = open
        otherPort.port = 22
        guard
            case .refuse(.permissionDenied, _) = EnsembleNetwork.judge(
                otherPort, device: "did:key:web", offer: own, spec: Self.reaching, partnerSpec: partner,
                granted: true)
        else { Issue.record("an unlisted port was not refused"); return }
        // Listed, but the partner does not declare the port (or is gone).
        var undeclared = partner
        undeclared.allocations[0].ports = []
        #expect(
            EnsembleNetwork.judge(
                open, device: "did:key:web", offer: own, spec: Self.reaching, partnerSpec: undeclared, granted: true)
                == .refuse(.notFound, "store declares no port 5432"))
        guard
            case .refuse(.notFound, _) = EnsembleNetwork.judge(
                open, device: "did:key:web", offer: own, spec: Self.reaching, partnerSpec: nil, granted: true)
        else { Issue.record("a missing partner deployment was not refused"); return }
    }
}
