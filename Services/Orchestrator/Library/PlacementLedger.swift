internal import Foundation
internal import OrreryPlacement

/// The reservations of this replica's placements that the database may not show yet. Placements run at once (a
/// submit, a device's bid advancing another deployment, the periodic round), each reading the committed reservations
/// and then moving its deployment to `matched`; two that read before either committed would both fill the same
/// cheapest device, whose agent then declines one of them. So each placement solves under this ledger's lock with
/// the committed reservations plus those of the placements that were not committed when its own read began, and holds
/// its choice here until its transition committed (or did not). Two placements of one deployment (a submit and the
/// periodic round, say) are alternatives — only one can commit its transition — so neither counts the other's choice.
/// An actor: a placement waiting for another's solve is suspended, not a blocked thread.
actor PlacementLedger {
    /// A placement in progress: of which deployment, and when it began (its database read starts after), by the
    /// ledger's clock.
    struct Ticket: Sendable, Hashable {
        let id: UUID
        let deployment: String
        let began: Int
    }

    private struct Held {
        var deployment: String
        var reserved: [String: Reservation]
        /// The clock when its transition committed; nil while it has not.
        var committedAt: Int?
    }

    private struct State {
        var clock = 0
        var inProgress: [UUID: Int] = [:]
        var held: [UUID: Held] = [:]
    }

    private var state = State()

    /// Starts a placement of `deployment`; call before reading the committed reservations.
    func begin(_ deployment: String) -> Ticket {
        state.clock += 1
        let ticket = Ticket(id: UUID(), deployment: deployment, began: state.clock)
        state.inProgress[ticket.id] = ticket.began
        return ticket
    }

    /// Runs `choose` under the ledger's lock with `committed` (read after `begin`) plus every held reservation the
    /// read may have missed; the reservations it returns are held for `ticket` until `finish`. `doubted` says whether
    /// another placement's reservation was counted: one committed while the read ran may be counted twice (the read
    /// may have seen it), one not committed may yet not be — so a placement that found no room should begin again,
    /// a moment later, rather than give up.
    func choose<Outcome: Sendable>(
        _ ticket: Ticket, committed: [String: Reservation],
        _ choose: @Sendable ([String: Reservation]) -> (Outcome, reserving: [String: Reservation])
    ) -> (outcome: Outcome, doubted: Bool) {
        var reserved = committed
        var doubted = false
        for (id, held) in state.held where id != ticket.id && held.deployment != ticket.deployment {
            // Committed before this placement began: its read saw it already.
            if let committedAt = held.committedAt, committedAt < ticket.began { continue }
            doubted = true
            for (device, amount) in held.reserved {
                reserved[device] = reserved[device, default: Reservation()].adding(amount)
            }
        }
        let (outcome, reserving) = choose(reserved)
        if !reserving.isEmpty {
            state.held[ticket.id] = Held(deployment: ticket.deployment, reserved: reserving, committedAt: nil)
        }
        return (outcome, doubted)
    }

    /// Ends a placement: its reservations stay counted for the placements that began before `committed` was known
    /// (their reads may have missed it), and are forgotten once none is left; a placement not committed drops them.
    func finish(_ ticket: Ticket, committed: Bool) {
        state.clock += 1
        let now = state.clock
        state.inProgress.removeValue(forKey: ticket.id)
        if committed, state.held[ticket.id] != nil {
            state.held[ticket.id]?.committedAt = now
        } else {
            state.held.removeValue(forKey: ticket.id)
        }
        let oldest = state.inProgress.values.min() ?? Int.max
        state.held = state.held.filter { $0.value.committedAt.map { $0 >= oldest } ?? true }
    }

    /// Placements whose reservations are held now (committed or not).
    var heldCount: Int { state.held.count }
}
