internal import Synchronization

/// Whether the process serves yet: set once its listeners are bound and health says SERVING. Background work that
/// judges others by what reached the process (the registry's liveness) starts its clock here, not at launch.
public final class ServingSignal: Sendable {
    private let serving: Atomic<Bool>
    private let port = Atomic<Int>(0)

    /// `serving`: already serving (an environment built by hand for a test).
    public init(serving: Bool = false) {
        self.serving = Atomic(serving)
    }

    public var isServing: Bool { serving.load(ordering: .acquiring) }

    /// The port the gRPC listener got, once it serves.
    public var grpcPort: Int? {
        let port = port.load(ordering: .acquiring)
        return port > 0 ? port : nil
    }

    package func markServing(grpcPort: Int? = nil) {
        if let grpcPort { port.store(grpcPort, ordering: .releasing) }
        serving.store(true, ordering: .releasing)
    }

    /// Returns once the process serves, or when the task is cancelled.
    public func wait() async {
        while !isServing && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
    }
}
