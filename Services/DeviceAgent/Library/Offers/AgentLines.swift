#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryProto
internal import Synchronization

/// The agent's open lines to orchestrators, each with its own outbox. A message about an allocation leaves on the
/// oldest open line to the orchestrator that placed it; when that line drops, the others stay open and the next
/// message takes one of them (the caller resends what may have been lost with the dropped line).
final class AgentLines: Sendable {
    typealias Outbox = AsyncStream<Orrery_Orchestrator_V1_AgentMessage>.Continuation

    private struct Line {
        let id: UUID
        let orchestrator: String
        let outbox: Outbox
    }

    private let lines = Mutex<[Line]>([])

    /// Registers a line to `orchestrator` (its DID); returns its identity for `close`.
    func open(orchestrator: String, outbox: Outbox) -> UUID {
        let id = UUID()
        lines.withLock { $0.append(Line(id: id, orchestrator: orchestrator, outbox: outbox)) }
        return id
    }

    /// Forgets one line (the others stay); returns whether any line is still open.
    @discardableResult
    func close(_ id: UUID) -> Bool {
        lines.withLock { lines in
            lines.removeAll { $0.id == id }
            return !lines.isEmpty
        }
    }

    /// The orchestrators with an open line.
    var orchestrators: Set<String> { lines.withLock { Set($0.map(\.orchestrator)) } }

    /// Sends on the oldest open line to `orchestrator`, or on the oldest open line at all when it is nil (an
    /// allocation from before lines were told apart). Returns false when no such line is open (nothing sent).
    @discardableResult
    func send(_ message: Orrery_Orchestrator_V1_AgentMessage, to orchestrator: String?) -> Bool {
        lines.withLock { lines in
            guard let line = lines.first(where: { orchestrator == nil || $0.orchestrator == orchestrator }) else {
                return false
            }
            line.outbox.yield(message)
            return true
        }
    }

    /// Sends on one particular line (a line's own inventory).
    func send(_ message: Orrery_Orchestrator_V1_AgentMessage, on id: UUID) {
        lines.withLock { lines in _ = lines.first { $0.id == id }?.outbox.yield(message) }
    }
}
