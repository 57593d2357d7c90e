internal import Foundation
internal import PostgresNIO

/// An offer's state as stored in `offers.state` (smallint). SQL names states as `\(OfferState.running)` or a named set
/// `\(OfferState.live)`, never as bare numbers (the codes are written into the statement, not bound, so the partial
/// indexes on them still apply); an unknown stored code is an error, never a guess.
enum OfferState: Int16, Sendable, CaseIterable, CustomStringConvertible {
    /// Sent to its device; waiting for a bid or a decline.
    case pending = 0
    /// The device bid; waiting for every replica's bid, the contract and the escrow.
    case accepted
    case declined
    /// No answer before the offer's deadline.
    case expired
    /// Withdrawn before it ran: placed again, or its deployment ended.
    case withdrawn
    /// Its device is told to start it.
    case deploying
    case running
    /// It ended; the report says how.
    case exited
    case failedToStart
    /// Its device is told to stop it (cancelled, or its deployment failed).
    case stopping
    /// It moved to another device: before it started, or it was moved away and its device reported its end.
    case relocated
    /// Moved to another device while its device may still run it: that device is told to stop it.
    case movedAway

    /// The state a stored code names.
    /// - Throws: `UnknownOfferState` for a code no state has (a newer schema, or a damaged row).
    init(stored code: Int16) throws {
        guard let state = OfferState(rawValue: code) else { throw UnknownOfferState(code: code) }
        self = state
    }

    // Named sets.
    /// Every offer of a replica that is, was or may be carried out (not refused, retired or moved).
    static let live: [OfferState] = [.pending, .accepted, .deploying, .running, .exited, .failedToStart, .stopping]
    /// Its device may be running it.
    static let mayRun: [OfferState] = [.deploying, .running, .stopping]
    /// The replica's current offer, which a move retires.
    static let current: [OfferState] = [.pending, .accepted, .deploying, .running, .stopping]
    /// Its device has an instruction to carry out (start, or stop).
    static let instructed: [OfferState] = [.deploying, .stopping, .movedAway]
    /// Its device may still report how it ended.
    static let reporting: [OfferState] = [.deploying, .running, .stopping, .movedAway]
    /// It was deployed: told to start, and perhaps running or ended.
    static let deployed: [OfferState] = [.deploying, .running, .exited, .failedToStart, .stopping]
    /// No longer the replica's: withdrawn, or moved away.
    static let retired: [OfferState] = [.withdrawn, .relocated, .movedAway]
    /// Its contract ends once its device reported the end with its receipts recorded, or its grace ran out.
    static let endingAfterReport: [OfferState] = [.exited, .stopping, .relocated, .movedAway]

    var description: String {
        switch self {
        case .pending: "pending"
        case .accepted: "accepted"
        case .declined: "declined"
        case .expired: "expired"
        case .withdrawn: "withdrawn"
        case .deploying: "deploying"
        case .running: "running"
        case .exited: "exited"
        case .failedToStart: "failed to start"
        case .stopping: "stopping"
        case .relocated: "relocated"
        case .movedAway: "moved away"
        }
    }
}

/// A stored offer state no `OfferState` names.
struct UnknownOfferState: Error, CustomStringConvertible {
    let code: Int16
    var description: String {
        "offers.state holds \(code), which no offer state names (a newer schema, or a damaged row)"
    }
}

extension PostgresQuery.StringInterpolation {
    /// An offer state's code, written into the statement (not bound): `state = \(OfferState.running)`.
    mutating func appendInterpolation(_ state: OfferState) {
        appendInterpolation(unescaped: String(state.rawValue))
    }

    /// Offer states' codes, comma-separated, written into the statement: `state IN (\(OfferState.live))`.
    mutating func appendInterpolation(_ states: [OfferState]) {
        appendInterpolation(unescaped: states.map { String($0.rawValue) }.joined(separator: ", "))
    }
}
