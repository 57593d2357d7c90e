internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Settlement steps the orchestrator holds because the settlement gateway refused their proofs (`SettlementClerk`),
/// and the operator's decisions on them: retry; or forgo — a release is given up (the contract's refund goes ahead),
/// a refund is made without the breaches' penalties.
struct SettlementIncidents: Sendable {
    let client: PostgresClient
    let logger: Logger

    func list(includeResolved: Bool) async throws -> [Orrery_Orchestrator_V1_SettlementIncident] {
        let rows = try await client.query(
            """
            SELECT contract_id, kind, receipt_entry, last_error, held_at, resolution FROM settlement_tasks
            WHERE held_at IS NOT NULL AND (resolution = '' OR \(includeResolved))
            ORDER BY held_at LIMIT 1000
            """, logger: logger)
        var incidents: [Orrery_Orchestrator_V1_SettlementIncident] = []
        for try await (contract, kind, entry, reason, heldAt, resolution) in rows.decode(
            (String, String, Int64, String, Date, String).self)
        {
            incidents.append(
                .with {
                    $0.contractID = contract
                    $0.step = kind
                    $0.receiptEntry = UInt64(max(entry, 0))
                    $0.reason = reason
                    $0.heldAt = Google_Protobuf_Timestamp(date: heldAt)
                    $0.resolution = resolution
                })
        }
        return incidents
    }

    /// Applies the operator's decision to a held release; repeating the same decision returns the same answer.
    /// - Throws: NOT_FOUND for no such incident, FAILED_PRECONDITION when it was resolved otherwise already.
    func resolve(_ request: Orrery_Orchestrator_V1_ResolveSettlementIncidentRequest) async throws
        -> Orrery_Orchestrator_V1_SettlementIncident
    {
        let resolution: String
        switch request.resolution {
        case .retry: resolution = "retry"
        case .forgo: resolution = "forgo"
        default:
            throw RPCError(code: .invalidArgument, message: "resolution: RESOLUTION_RETRY or RESOLUTION_FORGO")
        }
        guard request.note.count <= 500 else {
            throw RPCError(code: .invalidArgument, message: "note: at most 500 characters")
        }
        guard request.receiptEntry <= UInt64(Int64.max) else {
            throw RPCError(code: .invalidArgument, message: "receipt_entry: out of range")
        }
        let (kind, entry) = request.refund ? ("refund", Int64(-1)) : ("release", Int64(request.receiptEntry))
        // Retry: the step goes back to the queue. Forgo: a release is done, so the contract's refund goes ahead; a
        // refund goes back to the queue, to be made without the penalties (`SettlementClerk`).
        let updated = try await client.query(
            """
            UPDATE settlement_tasks
            SET resolution = \(resolution), resolution_note = \(request.note), attempts = 0,
                done_at = CASE WHEN \(resolution) = 'forgo' AND kind = 'release' THEN now() ELSE NULL END
            WHERE contract_id = \(request.contractID) AND kind = \(kind) AND receipt_entry = \(entry)
              AND held_at IS NOT NULL AND resolution = ''
            RETURNING contract_id
            """, logger: logger
        ).collect()
        let incident = try await list(includeResolved: true).first {
            $0.contractID == request.contractID && $0.step == kind
                && (request.refund || $0.receiptEntry == request.receiptEntry)
        }
        guard let incident else {
            let step = request.refund ? "its refund" : "receipt entry \(request.receiptEntry)"
            throw RPCError(
                code: .notFound, message: "no settlement incident for contract \(request.contractID), \(step)")
        }
        guard incident.resolution == resolution else {
            throw RPCError(
                code: .failedPrecondition, message: "the incident was resolved already: \(incident.resolution)")
        }
        if !updated.isEmpty {
            logger.notice(
                "settlement incident resolved by the operator",
                metadata: [
                    "contract": "\(request.contractID)", "step": "\(kind)", "receipt_entry": "\(entry)",
                    "resolution": "\(resolution)",
                    "note": "\(request.note)",
                ])
        }
        return incident
    }
}
