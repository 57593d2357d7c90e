import Foundation
import GRPCCore
import Logging
import OrreryDatabase
import OrreryIdentity
import OrreryTestSupport
import PostgresNIO
import Testing

@testable import NotaryService

/// The notary's log sequencer does not wait on one batch for ever: a batch whose transaction does not end within
/// the limit is refused with UNAVAILABLE, and the next batch is taken (seen in a database failover, where a batch's
/// transaction never returned and every act queued behind it waited with it).
@Suite(
    "The log sequencer's batch limit", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct LogSequencerLimitTests {
    @Test(
        "a batch held past its limit (the log's lock taken by another transaction) is refused UNAVAILABLE in time, and so is the next: the sequencer answers instead of waiting for good"
    )
    func batchLimit() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient(schema: "notary") { client in
                let logger = Logger(label: "test.sequencer")
                try await SchemaMigrator(schema: SchemaName("notary"), migrations: NotaryMigrations.all)
                    .migrate(using: client, logger: logger)
                let sequencer = LogSequencer(
                    client: client, key: SigningKey(), logger: logger, batchLimit: .seconds(1))
                let running = Task { await sequencer.run() }
                defer {
                    sequencer.finish()
                    running.cancel()
                }
                let act = LogAct(
                    contractID: "ctr_unknownunknownunknownun", apply: { _, _ in [] }, idempotency: nil,
                    respond: { _, _ in Data() })

                // Another transaction holds the log's lock: the batch waits on it, and is refused at its limit.
                let holding = AsyncStream<Void>.makeStream()
                let release = AsyncStream<Void>.makeStream()
                let holder = Task {
                    try await client.transaction(logger: logger) { connection in
                        try await connection.query(
                            "SELECT pg_advisory_xact_lock(\(LogSequencer.lockKey))", logger: logger)
                        holding.continuation.yield()
                        for await _ in release.stream { break }
                    }
                }
                for await _ in holding.stream { break }
                /// Appends `act`, which must be refused UNAVAILABLE within 30 s (at its limit, not when the lock is
                /// freed); the refusal's message.
                func refusedInTime(_ what: String) async throws -> String? {
                    let asked = ContinuousClock.now
                    defer { #expect(ContinuousClock.now - asked < .seconds(30), "\(what) refused at its limit") }
                    do {
                        _ = try await sequencer.append(act)
                        Issue.record("\(what) was decided while another transaction held the log's lock")
                        return nil
                    } catch let refusal as RPCError {
                        #expect(refusal.code == .unavailable, "\(refusal)")
                        return refusal.message
                    }
                }
                let message = try await refusedInTime("the batch")
                #expect(message?.contains("did not answer in time") == true, "\(String(describing: message))")

                // The sequencer still answers: the next batch, stuck behind the same lock, is refused in time too
                // (before the limit, every act queued behind a stuck batch waited for good).
                _ = try await refusedInTime("the next batch")
                release.continuation.yield()
                try await holder.value
            }
        }
    }
}
