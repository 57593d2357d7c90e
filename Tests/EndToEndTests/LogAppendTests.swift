import Foundation
import Logging
import OrreryProto
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

@testable import OrchestratorService

@Suite("Log chunks: a resent tail with other boundaries stores each byte once")
struct LogAppendTests {
    @Test(
        "the uncovered parts of a chunk: none, all, before, between and after stored ranges, unsorted and overlapping")
    func uncovered() {
        #expect(LogCoverage.uncovered(0..<10, stored: []) == [0..<10])
        #expect(LogCoverage.uncovered(0..<10, stored: [0..<10]) == [])
        #expect(LogCoverage.uncovered(0..<10, stored: [0..<4, 4..<7]) == [7..<10])
        #expect(LogCoverage.uncovered(0..<10, stored: [6..<8, 2..<4]) == [0..<2, 4..<6, 8..<10])
        #expect(LogCoverage.uncovered(5..<10, stored: [0..<6, 3..<8]) == [8..<10])
        #expect(LogCoverage.uncovered(5..<10, stored: [12..<20, 0..<2]) == [5..<10])
        #expect(LogCoverage.uncovered(5..<10, stored: [0..<20]) == [])
        // Against a model: every byte of the chunk is either stored or in exactly one gap.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let start = Int64.random(in: 0..<50, using: &generator)
            let chunk = start..<(start + Int64.random(in: 1..<30, using: &generator))
            let stored: [Range<Int64>] = (0..<Int.random(in: 0..<5, using: &generator)).map { _ in
                let lower = Int64.random(in: 0..<80, using: &generator)
                return lower..<(lower + Int64.random(in: 1..<20, using: &generator))
            }
            let gaps = LogCoverage.uncovered(chunk, stored: stored)
            for byte in chunk {
                let isStored = stored.contains { $0.contains(byte) }
                #expect(gaps.filter { $0.contains(byte) }.count == (isStored ? 0 : 1), "\(chunk) \(stored) \(gaps)")
            }
            #expect(
                gaps.allSatisfy {
                    !$0.isEmpty && chunk.lowerBound <= $0.lowerBound && $0.upperBound <= chunk.upperBound
                })
            #expect(zip(gaps, gaps.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound })
        }
    }

    static func chunk(_ text: Substring, at offset: Int, stream: Orrery_Orchestrator_V1_LogStream = .stdout)
        -> Orrery_Orchestrator_V1_LogChunk
    {
        .with {
            $0.offerID = "off_log"
            $0.stream = stream
            $0.offset = UInt64(offset)
            $0.data = Data(text.utf8)
        }
    }

    static func storedText(_ client: PostgresClient, logger: Logger) async throws -> String {
        let rows = try await client.query(
            """
            SELECT data FROM allocation_logs WHERE offer_id = 'off_log' AND stream = 1 ORDER BY "offset"
            """, logger: logger)
        var text = Data()
        for try await data in rows.decode(Data.self) { text.append(data) }
        return String(decoding: text, as: UTF8.self)
    }

    static let device = "did:key:z6MkDevice"

    /// An orchestrator schema with one running offer, `off_log`, of `device`.
    static func withRunningOffer(_ body: @escaping @Sendable (OfferStore, PostgresClient, Logger) async throws -> Void)
        async throws
    {
        try await SettlementPlannerTests.withOrchestratorSchema { client, logger in
            try await client.query(
                """
                INSERT INTO deployments (id, consumer_did, idempotency_key, state, record, revision)
                VALUES ('dep_log', 'did:key:z6MkConsumer', 'k', 1, ''::bytea, 1)
                """, logger: logger)
            try await client.query(
                """
                INSERT INTO offers (id, deployment_id, allocation, replica, device_did, state, record, expires_at)
                VALUES ('off_log', 'dep_log', 'a', 0, \(device), 6, ''::bytea, now())
                """, logger: logger)
            try await body(OfferStore(client: client, logger: logger), client, logger)
        }
    }

    @Test(
        "a restarted agent's tail from offset 0 adds what the orchestrator missed; overlaps in any order store each byte once; another device's chunk is refused",
        .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
    func resentTail() async throws {
        try await Self.withRunningOffer { store, client, logger async throws in
            let device = Self.device
            let text: Substring = "line 1\nline 2\nline 3\nline 4\nline 5\n"
            // Before the crash: the first two lines arrived, in two chunks.
            #expect(try await store.append(Self.chunk(text.prefix(7), at: 0), device: device))
            #expect(try await store.append(Self.chunk(text.dropFirst(7).prefix(7), at: 7), device: device))
            // After it: the agent re-reads the file from 0, all of it in one chunk.
            #expect(try await store.append(Self.chunk(text, at: 0), device: device))
            #expect(try await Self.storedText(client, logger: logger) == String(text))
            // Repeats and overlaps with other boundaries store nothing new.
            #expect(try await !store.append(Self.chunk(text.dropFirst(3).prefix(20), at: 3), device: device))
            #expect(try await !store.append(Self.chunk(text, at: 0), device: device))
            // A later chunk arriving before an earlier one (a gap), then the earlier one.
            let more: Substring = "line 6\nline 7\n"
            let all = String(text) + more
            #expect(try await store.append(Self.chunk(more.dropFirst(7), at: text.count + 7), device: device))
            #expect(try await store.append(Self.chunk(Substring(all).dropFirst(30), at: 30), device: device))
            #expect(try await Self.storedText(client, logger: logger) == all)
            // Not this device's offer; an empty chunk.
            #expect(try await !store.append(Self.chunk("x", at: all.count), device: "did:key:z6MkOther"))
            #expect(try await !store.append(Self.chunk("", at: all.count), device: device))
            // A stream no client knows (it once overflowed a 16-bit column code) and an offset past any size.
            #expect(
                try await !store.append(Self.chunk("x", at: all.count, stream: .UNRECOGNIZED(99_999)), device: device))
            #expect(try await !store.append(Self.chunk("x", at: Int(Int64.max)), device: device))
            #expect(try await Self.storedText(client, logger: logger) == all)
        }
    }

    @Test(
        "only the last MiB is kept, and a resent chunk from before it is not stored again",
        .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
    func lastMebibyte() async throws {
        try await Self.withRunningOffer { store, client, logger async throws in
            let device = Self.device
            let block = Substring(String(repeating: "x", count: 512 * 1024))
            for index in 0..<3 {
                #expect(try await store.append(Self.chunk(block, at: index * block.count), device: device))
            }
            #expect(try await Self.storedText(client, logger: logger).count == 2 * block.count)
            // The first block again, as a resend would bring it: older than the last MiB.
            #expect(try await !store.append(Self.chunk(block, at: 0), device: device))
            #expect(try await Self.storedText(client, logger: logger).count == 2 * block.count)
        }
    }
}
