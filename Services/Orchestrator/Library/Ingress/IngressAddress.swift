internal import Synchronization

/// The ingress's settings and the port it listens on once it does (the settings may ask for any free port), read by
/// the API for the URLs a deployment's status shows.
final class IngressAddress: Sendable {
    let settings: IngressSettings
    private let bound = Mutex<Int?>(nil)

    init(_ settings: IngressSettings) { self.settings = settings }

    /// The port the listener got.
    var boundPort: Int? { bound.withLock { $0 } }

    func listening(on port: Int) { bound.withLock { $0 = port } }
}
