internal import Logging
internal import Synchronization

/// Advances deployments beside the callers that ask for it — an agent's line, which reads its device's bids and
/// reports in order: the line goes on reading while the notary, the settlement gateway and the database do their
/// part of the step (inline, one slow step held every later answer of that device back, until its offers expired
/// unanswered). A deployment asked for again while it advances is advanced once more afterwards, never twice at once.
final class DeploymentAdvances: Sendable {
    private let advance: @Sendable (String) async throws -> Void
    private let logger: Logger
    /// The deployments advancing now, each with whether it was asked for again meanwhile.
    private let advancing = Mutex<[String: Bool]>([:])

    init(logger: Logger, advance: @escaping @Sendable (String) async throws -> Void) {
        self.advance = advance
        self.logger = logger
    }

    /// Advances deployment `id` soon; returns at once.
    func request(_ id: String) {
        let start = advancing.withLock { advancing -> Bool in
            guard advancing[id] == nil else {
                advancing[id] = true
                return false
            }
            advancing[id] = false
            return true
        }
        if start { Task { await self.drain(id) } }
    }

    /// How many deployments are advancing now.
    var inFlight: Int { advancing.withLock { $0.count } }

    private func drain(_ id: String) async {
        while true {
            do {
                try await advance(id)
            } catch {
                // The driver's periodic round takes it up again.
                logger.warning("advancing a deployment failed", metadata: ["deployment": "\(id)", "error": "\(error)"])
            }
            let again = advancing.withLock { advancing -> Bool in
                if advancing[id] == true {
                    advancing[id] = false
                    return true
                }
                advancing[id] = nil
                return false
            }
            guard again else { return }
        }
    }
}
