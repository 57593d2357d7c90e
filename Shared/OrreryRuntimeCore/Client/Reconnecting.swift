/// Keeps a long-lived connection going: runs `attempt` again whenever it ends, waiting between attempts with
/// exponential backoff (from `initial`, doubling up to `maximum`, reset after an attempt that ended cleanly) and
/// ±50 % jitter, so a fleet of clients does not return in step. Returns when the task is cancelled.
public enum Reconnecting {
    public static func run(
        initial: Duration = .milliseconds(100),
        maximum: Duration = .seconds(10),
        onFailure: (any Error) -> Void,
        _ attempt: () async throws -> Void
    ) async {
        var backoff = initial
        while !Task.isCancelled {
            do {
                try await attempt()
                backoff = initial
            } catch is CancellationError {
                return
            } catch {
                onFailure(error)
            }
            try? await Task.sleep(for: backoff * Double.random(in: 0.5...1.5))
            backoff = min(backoff * 2, maximum)
        }
    }
}
