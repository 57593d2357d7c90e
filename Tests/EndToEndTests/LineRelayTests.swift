import Foundation
import Logging
import OrreryDatabase
import OrreryProto
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// Two orchestrator replicas' relays on one database: a message for a line the other replica holds reaches it, in
/// order, once; one for a line nobody holds expires and is counted.
@Suite(
    "Line relay between orchestrator replicas", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct LineRelayTests {
    static func replica(_ client: PostgresClient) -> LineRelay {
        let logger = Logger(label: "test.relay")
        return LineRelay(
            client: client,
            hub: AgentHub(offers: OfferStore(client: client, logger: logger), checkpoints: nil, logger: logger),
            logger: logger)
    }

    static func request(_ reason: String) -> Orrery_Orchestrator_V1_OrchestratorMessage {
        .with {
            $0.checkpointRequest = .with {
                $0.offerID = "off_1"; $0.reason = reason
            }
        }
    }

    @Test("a message for the other replica's line arrives there in order, once; expired ones are dropped and counted")
    func relays() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient(schema: "orchestrator") { client in
                try await SchemaMigrator(schema: SchemaName("orchestrator"), migrations: OrchestratorMigrations.all)
                    .migrate(using: client, logger: Logger(label: "test.migrate"))
                let (first, second) = (Self.replica(client), Self.replica(client))
                let device = "did:key:z6MkDevice"
                let (_, line) = second.hub.open(device: device)
                var received = line.makeAsyncIterator()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await second.run() }
                    for reason in ["one", "two", "three"] {
                        await first.send(Self.request(reason), to: device)
                    }
                    var reasons: [String] = []
                    for _ in 0..<3 {
                        if let message = await received.next() { reasons.append(message.checkpointRequest.reason) }
                    }
                    #expect(reasons == ["one", "two", "three"])
                    #expect(first.totals.relayed == 3)
                    // Taken means gone: nothing is left to deliver twice.
                    try await second.take(for: [device])
                    #expect(second.totals.delivered == 3)
                    group.cancelAll()
                }
                // For a device no replica holds: kept until it expires, then dropped and counted; an already expired
                // one is not even written.
                await first.send(Self.request("late"), to: "did:key:z6MkNobody", until: Date().addingTimeInterval(1))
                await first.send(Self.request("stale"), to: "did:key:z6MkNobody", until: Date().addingTimeInterval(-1))
                #expect(first.totals.relayed == 4)
                try await Task.sleep(for: .milliseconds(1200))
                try await first.purgeExpired()
                #expect(first.totals.expired == 1)
                let left = try await client.query("SELECT count(*) FROM line_relay")
                for try await count in left.decode(Int.self) { #expect(count == 0) }
            }
        }
    }
}
