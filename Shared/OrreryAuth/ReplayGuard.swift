public import OrreryIdentity
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Synchronization

/// Records single-use invocations so that a replay is refused.
public protocol ReplayGuard: Sendable {
    /// Records `cid`; false when it was already recorded (a replay).
    func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool
}

/// The replay guard of a process without a database (the device agent, which runs as one process).
public final class InMemoryReplayGuard: ReplayGuard {
    private let consumed = Mutex<[CID: Int64]>([:])

    public init() {}

    public func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool {
        consumed.withLock { consumed in
            if consumed.count > 100_000 {
                let now = Int64(Date().timeIntervalSince1970)
                consumed = consumed.filter { $0.value > now }
            }
            return consumed.updateValue(expiresAt, forKey: cid) == nil
        }
    }
}
