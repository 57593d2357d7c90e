internal import Logging
internal import Metrics
internal import OrreryDatabase
internal import OrreryProto
internal import PostgresNIO

/// The NTX the ledger moves, for `/metrics`: each new journal entry counts what it moved by its kind (escrow,
/// release, refund, deposit …; a retry answered with the first entry counts nothing), and the NTX held in escrow now
/// is read from the ledger's accounts (the same on every replica: one database).
enum MoneyMetrics {
    /// What a new entry moved: the sum of its lines that add to an account (an entry's lines sum to zero).
    static func count(_ entry: Orrery_Settlement_V1_JournalEntry) {
        let moved = entry.lines.reduce(0.0) { sum, line in
            guard let amount = Double(line.amount), amount > 0 else { return sum }
            return sum + amount
        }
        guard moved > 0 else { return }
        FloatingPointCounter(label: "orrery_settlement_ntx_total", dimensions: [("kind", entry.kind)]).increment(
            by: moved)
    }

    /// Records the NTX held in escrow accounts now.
    static func recordEscrowHeld(client: PostgresClient, logger: Logger) async throws {
        let rows = try await client.query(
            "SELECT coalesce(sum(balance), 0)::float8 FROM accounts WHERE kind = 'escrow'", logger: logger)
        for try await held in rows.decode(Double.self) {
            Gauge(label: "orrery_settlement_escrow_held_ntx").record(held)
        }
    }
}
