internal import Synchronization

/// How many of something (port-forwards, exec sessions) each deployment has open through this orchestrator replica,
/// each count bounded by a limit.
final class DeploymentQuota: Sendable {
    private let open = Mutex<[String: Int]>([:])

    /// Counts one of `deployment`'s in, unless `limit` are open already.
    func admit(_ deployment: String, limit: Int) -> Bool {
        open.withLock { open in
            guard open[deployment, default: 0] < limit else { return false }
            open[deployment, default: 0] += 1
            return true
        }
    }

    /// Counts one of `deployment`'s out.
    func release(_ deployment: String) {
        open.withLock { open in
            let left = open[deployment, default: 1] - 1
            open[deployment] = left > 0 ? left : nil
        }
    }
}
