public import OrreryProto

/// Envelopes for actors that are moving, held until they resume: bounded per actor (count and bytes), delivered in
/// arrival order, and dropped (and counted) once expired.
public struct HeldEnvelopes: Sendable {
    public enum Outcome: Sendable, Equatable {
        case held
        /// The actor's queue is at its limit: the sender is told to retry later.
        case full
    }

    private struct Held: Sendable {
        var envelope: Orrery_Actors_V1_Envelope
        var expiresAt: Int64
        var size: Int
    }

    public let limitPerActor: Int
    public let byteLimitPerActor: Int
    private var queues: [ActorAddress: [Held]] = [:]
    /// Envelopes dropped because they expired while held.
    public private(set) var droppedExpired = 0

    public init(limitPerActor: Int = 1000, byteLimitPerActor: Int = 16 << 20) {
        self.limitPerActor = limitPerActor
        self.byteLimitPerActor = byteLimitPerActor
    }

    /// Holds `envelope` for `actor` until `expiresAt` (Unix seconds).
    public mutating func hold(
        _ envelope: Orrery_Actors_V1_Envelope, for actor: ActorAddress, expiresAt: Int64, now: Int64
    )
        -> Outcome
    {
        prune(actor, now: now)
        let size = envelope.authority.count + envelope.payload.count
        let queue = queues[actor, default: []]
        // A sender's retry of an envelope already held is the same envelope: held once.
        if queue.contains(where: { $0.envelope == envelope }) { return .held }
        guard queue.count < limitPerActor, queue.reduce(0, { $0 + $1.size }) + size <= byteLimitPerActor else {
            return .full
        }
        queues[actor, default: []].append(Held(envelope: envelope, expiresAt: expiresAt, size: size))
        return .held
    }

    /// Everything held for `actor` that has not expired, oldest first; the queue is emptied.
    public mutating func release(_ actor: ActorAddress, now: Int64) -> [Orrery_Actors_V1_Envelope] {
        prune(actor, now: now)
        return (queues.removeValue(forKey: actor) ?? []).map(\.envelope)
    }

    /// The actors with envelopes held.
    public var actors: [ActorAddress] { Array(queues.keys) }

    /// How many envelopes are held for `actor`.
    public func count(for actor: ActorAddress) -> Int { queues[actor]?.count ?? 0 }

    private mutating func prune(_ actor: ActorAddress, now: Int64) {
        guard let queue = queues[actor] else { return }
        let live = queue.filter { $0.expiresAt >= now }
        droppedExpired += queue.count - live.count
        queues[actor] = live.isEmpty ? nil : live
    }
}
