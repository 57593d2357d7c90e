public import OrreryIdentity
internal import Synchronization

/// The revocations this process knows, fed by the identity service's revocation log; every chain check consults it.
public final class RevocationBook: Sendable {
    private struct State {
        var revoked: Set<CID> = []
        var revision: Int64 = 0
    }

    private let state = Mutex(State())
    private let validator: ChainValidator

    /// - Parameter validator: Its memoized chains containing a revoked CID are forgotten as revocations arrive.
    public init(validator: ChainValidator) {
        self.validator = validator
    }

    public func isRevoked(_ cid: CID) -> Bool {
        state.withLock { $0.revoked.contains(cid) }
    }

    /// The last revision applied (a watch resumes after it).
    public var revision: Int64 {
        state.withLock { $0.revision }
    }

    public var count: Int {
        state.withLock { $0.revoked.count }
    }

    /// Records a revocation from the log at `revision`.
    public func apply(cid: CID, revision: Int64) {
        state.withLock { state in
            state.revoked.insert(cid)
            state.revision = max(state.revision, revision)
        }
        validator.forget(cid)
    }
}
