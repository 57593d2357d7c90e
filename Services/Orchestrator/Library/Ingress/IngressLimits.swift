internal import Foundation
internal import Synchronization

/// What one orchestrator's ingress lets through: connections per deployment and per client address, and requests
/// per second per deployment (a token bucket: `rate` a second, bursts of twice that).
final class IngressLimits: Sendable {
    let connectionsPerDeployment: Int
    let connectionsPerClient: Int
    let requestsPerSecond: Double

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private struct State {
        var byDeployment: [String: Int] = [:]
        var byClient: [String: Int] = [:]
        var buckets: [String: Bucket] = [:]
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> ContinuousClock.Instant

    init(
        connectionsPerDeployment: Int, connectionsPerClient: Int = 256, requestsPerSecond: Int,
        clock: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        self.connectionsPerDeployment = connectionsPerDeployment
        self.connectionsPerClient = connectionsPerClient
        self.requestsPerSecond = Double(requestsPerSecond)
        self.clock = clock
    }

    /// Counts a connection from `client` in, unless it has its limit open already.
    func admitClient(_ client: String) -> Bool {
        state.withLock { state in
            guard state.byClient[client, default: 0] < connectionsPerClient else { return false }
            state.byClient[client, default: 0] += 1
            return true
        }
    }

    func releaseClient(_ client: String) {
        state.withLock { state in
            let left = state.byClient[client, default: 1] - 1
            state.byClient[client] = left > 0 ? left : nil
        }
    }

    /// Counts a connection to `deployment` in, unless it has its limit open already.
    func admitConnection(to deployment: String) -> Bool {
        state.withLock { state in
            guard state.byDeployment[deployment, default: 0] < connectionsPerDeployment else { return false }
            state.byDeployment[deployment, default: 0] += 1
            return true
        }
    }

    func releaseConnection(to deployment: String) {
        state.withLock { state in
            let left = state.byDeployment[deployment, default: 1] - 1
            state.byDeployment[deployment] = left > 0 ? left : nil
        }
    }

    /// Takes one request of `deployment`'s allowance; nil when it may go, else the seconds until it could.
    func takeRequest(of deployment: String) -> Double? {
        let now = clock()
        let burst = requestsPerSecond * 2
        return state.withLock { state in
            var bucket = state.buckets[deployment] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + seconds * requestsPerSecond)
            bucket.updated = now
            defer {
                // Full buckets are forgotten (a new one starts full): the table holds busy deployments only.
                if bucket.tokens >= burst {
                    state.buckets[deployment] = nil
                } else {
                    state.buckets[deployment] = bucket
                }
            }
            guard bucket.tokens >= 1 else { return (1 - bucket.tokens) / requestsPerSecond }
            bucket.tokens -= 1
            return nil
        }
    }
}
