import OrreryProto
import Testing

@testable import OrchestratorService

/// The deployment lifecycle's rules as data: every state × state pair, and random walks that must keep its
/// invariants.
@Suite("Deployment lifecycle rules")
struct DeploymentLifecycleTests {
    typealias State = Orrery_Orchestrator_V1_DeploymentState

    static let states: [State] = [
        .unspecified, .submitted, .matched, .offered, .contracted, .escrowed, .deploying, .running, .completed, .failed,
        .cancelled,
    ]

    /// Every allowed move, written out: anything else is illegal.
    static let legal: Set<String> = [
        "submitted→submitted", "submitted→matched", "submitted→failed", "submitted→cancelled",
        "matched→matched", "matched→offered", "matched→failed", "matched→cancelled",
        "offered→offered", "offered→contracted", "offered→matched", "offered→failed", "offered→cancelled",
        "contracted→contracted", "contracted→escrowed", "contracted→failed", "contracted→cancelled",
        "escrowed→escrowed", "escrowed→deploying", "escrowed→failed", "escrowed→cancelled",
        "deploying→deploying", "deploying→running", "deploying→failed", "deploying→cancelled",
        "running→running", "running→deploying", "running→completed", "running→failed", "running→cancelled",
    ]

    @Test("every state × state pair: the 30 legal moves allowed, the other 91 refused")
    func table() {
        var allowed = 0
        for from in Self.states {
            for to in Self.states {
                let name = "\(from)→\(to)"
                #expect(DeploymentLifecycle.allows(from, to) == Self.legal.contains(name), "\(name)")
                if DeploymentLifecycle.allows(from, to) { allowed += 1 }
            }
        }
        #expect(allowed == Self.legal.count && Self.legal.count == 30)
    }

    @Test(
        "random walks of allowed moves keep the invariants: a final state is final, nothing deploys unescrowed, nothing completes without running"
    )
    func randomWalks() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var state = State.submitted
            var visited: [State] = [state]
            for _ in 0..<30 {
                let next = Self.states.filter { DeploymentLifecycle.allows(state, $0) }
                guard let chosen = next.randomElement(using: &generator) else {
                    #expect(state.isTerminal, "\(state) has no move but is not final")
                    break
                }
                #expect(!state.isTerminal, "a move out of \(state)")
                state = chosen
                visited.append(state)
            }
            if let deploying = visited.firstIndex(of: .deploying) {
                #expect(visited[..<deploying].contains(.escrowed), "deployed unescrowed: \(visited)")
            }
            if let completed = visited.firstIndex(of: .completed) {
                #expect(visited[..<completed].contains(.running), "completed without running: \(visited)")
            }
            if let end = visited.firstIndex(where: \.isTerminal) {
                #expect(visited[end...].allSatisfy { $0 == visited[end] }, "left a final state: \(visited)")
            }
        }
    }
}
