import Logging
import Synchronization
import Testing

@testable import OrchestratorService

/// Deployments advanced beside the line that asked: coalesced per deployment, never two at once.
@Suite("Deployment advances beside the agent's line")
struct DeploymentAdvancesTests {
    /// What the advances did: how many ran per deployment, how many at once at most, and which run now.
    final class Record: Sendable {
        private let state = Mutex((runs: [String: Int](), running: Set<String>(), overlapped: false))
        func begin(_ id: String) {
            state.withLock {
                $0.runs[id, default: 0] += 1
                if !$0.running.insert(id).inserted { $0.overlapped = true }
            }
        }
        func end(_ id: String) { _ = state.withLock { $0.running.remove(id) } }
        var runs: [String: Int] { state.withLock { $0.runs } }
        var overlapped: Bool { state.withLock { $0.overlapped } }
    }

    @Test(
        "asked while the caller goes on: a deployment asked for again while it advances runs once more after, never twice at once; others advance meanwhile"
    )
    func coalesced() async throws {
        let record = Record()
        let (gate, opened) = AsyncStream<Void>.makeStream()
        let held = Mutex(true)
        let advances = DeploymentAdvances(logger: Logger(label: "test.advances")) { id in
            record.begin(id)
            defer { record.end(id) }
            // The first run of "slow" waits until the test lets it go.
            if id == "slow", held.withLock({ $0 }) {
                for await _ in gate { break }
            }
        }
        advances.request("slow")
        while record.runs["slow"] != 1 { try await Task.sleep(for: .milliseconds(5)) }
        // Asked ten times more while its first run is held: one more run, after it.
        for _ in 0..<10 { advances.request("slow") }
        // Another deployment is not held behind it.
        advances.request("other")
        while record.runs["other"] != 1 || advances.inFlight != 1 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(record.runs["slow"] == 1)
        held.withLock { $0 = false }
        opened.yield()
        while advances.inFlight > 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(record.runs == ["slow": 2, "other": 1])
        #expect(!record.overlapped)
        // Asked again once idle: it runs again.
        advances.request("slow")
        while record.runs["slow"] != 3 || advances.inFlight > 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(!record.overlapped)
    }
}
