internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import OrreryRuntime
internal import OrrerySettlementClient
internal import Synchronization

/// The orchestrator's `Operate` stream to the settlement gateway over its link's current connection: opened on first
/// use, and again once it ended or the link reconnected. Each operation still carries its own invocation.
final class SettlementStreamLine: Sendable {
    private let current = Mutex<(client: ObjectIdentifier, operations: SettlementOperations)?>(nil)

    /// The open stream over `client`.
    func operations(on client: GRPCClient<HTTP2ClientTransport.Posix>) -> SettlementOperations {
        let id = ObjectIdentifier(client)
        let (operations, opened) = current.withLock { current in
            if let current, current.client == id, !current.operations.hasEnded {
                return (current.operations, false)
            }
            let operations = SettlementOperations()
            current = (id, operations)
            return (operations, true)
        }
        // Runs as long as the connection does (the old stream holds its client, so its identifier is not reused).
        if opened { Task { await operations.run(on: client) } }
        return operations
    }
}
