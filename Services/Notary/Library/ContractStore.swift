internal import Foundation
internal import OrreryAuth
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import NIOCore
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// The `contracts` table: proposals staged until the device accepts, then the log's index of each contract's
/// state, entries and receipts. Changed only by proposals (insert) and by the sequencer.
enum ContractStore {
    /// Stages a proposal; a second proposal with the same id is accepted only when it is byte for byte the same.
    /// Returns the row as stored.
    static func stage(
        _ contract: Orrery_Notary_V1_Contract, proposal: Orrery_Common_V1_Signed, relocations: Int,
        client: PostgresClient, logger: Logger
    ) async throws -> ContractRow {
        let bytes = try proposal.serializedData()
        let replaces: String? = contract.replaces.isEmpty ? nil : contract.replaces
        try await client.query(
            """
            INSERT INTO contracts (id, consumer_did, device_did, owner_did, orchestrator_did, deployment_id, state,
                                   proposal, replaces, relocations, sla_availability)
            VALUES (\(contract.id), \(contract.consumerDid), \(contract.deviceDid), \(contract.ownerDid),
                    \(contract.orchestratorDid), \(contract.deploymentID),
                    \(Int16(Orrery_Notary_V1_ContractState.proposed.rawValue)), \(bytes), \(replaces),
                    \(Int32(relocations)), \(contract.sla.availability))
            ON CONFLICT (id) DO NOTHING
            """,
            logger: logger)
        guard let row = try await rows(ids: [contract.id], on: client, logger: logger)[contract.id] else {
            throw NotaryFailure.internalError("the staged contract \(contract.id) cannot be read back")
        }
        guard row.proposal == proposal else {
            throw NotaryFailure.alreadyExists(
                "contract \(contract.id) was already proposed with different terms; propose a new id")
        }
        return row
    }

    static func rows(ids: [String], on client: some PostgresQueryable, logger: Logger) async throws
        -> [String: ContractRow]
    {
        guard !ids.isEmpty else { return [:] }
        let rows = try await client.runQuery(
            """
            SELECT id, state, proposal, acceptance, relocations, last_sequence, entry_indexes, sla_checked
            FROM contracts WHERE id = ANY(\(ids)::text[])
            """,
            logger: logger)
        var result: [String: ContractRow] = [:]
        for try await (id, state, proposal, acceptance, relocations, lastSequence, indexes, slaChecked) in rows.decode(
            (String, Int16, Data, Data?, Int32, Int64, [Int64], Bool).self)
        {
            let signed = try Orrery_Common_V1_Signed(serializedBytes: proposal)
            result[id] = ContractRow(
                contract: try Orrery_Notary_V1_Contract(serializedBytes: signed.payload),
                state: Orrery_Notary_V1_ContractState(rawValue: Int(state)) ?? .unspecified,
                proposal: signed,
                acceptance: try acceptance.map { try Orrery_Common_V1_Signed(serializedBytes: $0) },
                relocations: Int(relocations),
                lastSequence: UInt64(lastSequence),
                entryIndexes: indexes.map { UInt64($0) }, slaChecked: slaChecked)
        }
        for (id, breaches) in try await BreachIndex.breaches(of: Array(result.keys), on: client, logger: logger) {
            result[id]?.breaches = breaches
        }
        return result
    }

    /// Writes the sequencer's view of changed contracts, in one statement.
    static func update(_ changed: [ContractRow], on connection: PostgresConnection, logger: Logger) async throws {
        guard !changed.isEmpty else { return }
        let ids = changed.map(\.contract.id)
        let states = changed.map { Int16($0.state.rawValue) }
        let acceptances = try changed.map { ByteBuffer(bytes: try $0.acceptance?.serializedData() ?? Data()) }
        let sequences = changed.map { Int64($0.lastSequence) }
        let indexes = changed.map { $0.entryIndexes.map(String.init).joined(separator: ",") }
        let checked = changed.map(\.slaChecked)
        try await connection.query(
            """
            UPDATE contracts c SET
                state = u.state,
                acceptance = NULLIF(u.acceptance, ''::bytea),
                last_sequence = u.last_sequence,
                entry_indexes = string_to_array(NULLIF(u.indexes, ''), ',')::bigint[],
                sla_checked = u.sla_checked,
                active_at = CASE WHEN u.state = 2 AND c.active_at IS NULL THEN now() ELSE c.active_at END,
                ended_at = CASE WHEN u.state IN (3, 4) AND c.ended_at IS NULL THEN now() ELSE c.ended_at END,
                updated_at = now()
            FROM unnest(\(ids)::text[], \(states)::smallint[], \(acceptances)::bytea[], \(sequences)::bigint[],
                        \(indexes)::text[], \(checked)::boolean[])
                AS u(id, state, acceptance, last_sequence, indexes, sla_checked)
            WHERE c.id = u.id
            """,
            logger: logger)
    }

    /// Ended contracts with an availability term not checked yet: their device and when they were active.
    static func uncheckedAvailability(limit: Int, client: PostgresClient, logger: Logger) async throws -> [(
        id: String, device: String, from: Date, to: Date
    )] {
        let rows = try await client.query(
            """
            SELECT id, device_did, coalesce(active_at, proposed_at), ended_at FROM contracts
            WHERE NOT sla_checked AND sla_availability > 0 AND ended_at IS NOT NULL
            ORDER BY ended_at LIMIT \(limit)
            """,
            logger: logger)
        var found: [(id: String, device: String, from: Date, to: Date)] = []
        for try await row in rows.decode((String, String, Date, Date).self) { found.append(row) }
        return found
    }

    /// The stored response to an earlier call with the same idempotency key, if any.
    /// - Throws: `FAILED_PRECONDITION` when the key was used for a different request.
    static func earlierResult(_ key: RetryKey, client: PostgresClient, logger: Logger) async throws -> Data? {
        let rows = try await client.query(
            """
            SELECT request_sha256, response FROM idempotent_results
            WHERE invoker = \(key.invoker) AND method = \(key.method) AND idempotency_key = \(key.key)
            """,
            logger: logger)
        for try await (digest, response) in rows.decode((Data, Data).self) {
            guard digest == key.requestSHA256 else {
                throw NotaryFailure.failedPrecondition(
                    "idempotency key '\(key.key)' was already used for a different request")
            }
            return response
        }
        return nil
    }

    /// Stores the response of a call that appended nothing (a proposal), for its retries.
    static func remember(_ key: RetryKey, response: Data, client: PostgresClient, logger: Logger) async throws {
        try await client.query(
            """
            INSERT INTO idempotent_results (invoker, method, idempotency_key, request_sha256, response)
            VALUES (\(key.invoker), \(key.method), \(key.key), \(key.requestSHA256), \(response))
            ON CONFLICT DO NOTHING
            """,
            logger: logger)
    }
}

/// A refusal with its gRPC status.
enum NotaryFailure {
    static func invalid(_ message: String) -> RPCError { RPCError(code: .invalidArgument, message: message) }
    static func notFound(_ message: String) -> RPCError { RPCError(code: .notFound, message: message) }
    static func alreadyExists(_ message: String) -> RPCError { RPCError(code: .alreadyExists, message: message) }
    static func failedPrecondition(_ message: String) -> RPCError {
        RPCError(code: .failedPrecondition, message: message)
    }
    static func denied(_ message: String) -> RPCError { RPCError(code: .permissionDenied, message: message) }
    static func internalError(_ message: String) -> RPCError { RPCError(code: .internalError, message: message) }
    static func unavailable(_ message: String) -> RPCError { RPCError(code: .unavailable, message: message) }
}
