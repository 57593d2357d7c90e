internal import Foundation
public import GRPCCore
internal import OrreryAuth
internal import OrreryDatabase
internal import OrreryIdentity
public import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// `orrery.identity.v1.Identity`: DID resolution and the revocation log.
public struct IdentityRPCService: Orrery_Identity_V1_Identity.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let log: RevocationLog
    private let issuer: DelegationIssuer?

    init(environment: ServiceEnvironment, log: RevocationLog, issuer: DelegationIssuer?) {
        self.environment = environment
        self.log = log
        self.issuer = issuer
    }

    public func issueDelegation(request: Orrery_Identity_V1_IssueDelegationRequest, context: ServerContext) async throws
        -> Orrery_Identity_V1_IssueDelegationResponse
    {
        guard let issuer else {
            throw RPCError(
                code: .failedPrecondition,
                message: "this identity service holds no operator key (operator.key), so it issues no delegations")
        }
        return try await issuer.issue(request)
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }

    public func resolveDid(request: Orrery_Identity_V1_ResolveDidRequest, context: ServerContext) async throws
        -> Orrery_Identity_V1_ResolveDidResponse
    {
        let did: DID
        do {
            did = try DID(request.did)
        } catch {
            throw RPCError(code: .invalidArgument, message: "did: \(error)")
        }
        return .with { $0.documentJson = (try? DIDDocument(resolving: did).json()) ?? "" }
    }

    public func revoke(request: Orrery_Identity_V1_RevokeRequest, context: ServerContext) async throws
        -> Orrery_Identity_V1_RevokeResponse
    {
        guard let authorization = Authorization.current else {
            throw RPCError(code: .unauthenticated, message: "Revoke needs a /ucan/revoke invocation")
        }
        let checked: RevocationRequest
        do {
            checked = try RevocationRequest(authorization)
        } catch .malformed(let reason) {
            throw RPCError(code: .invalidArgument, message: reason)
        } catch .forbidden(let reason) {
            throw RPCError(code: .permissionDenied, message: reason)
        }
        guard let database = environment.database else { throw RPCError(code: .internalError, message: "no database") }
        // Revoking is idempotent: a retry (or a second revoker) gets the revocation already recorded. The writers'
        // lock is taken before the revision is drawn (the change feed's rule for revisions committed out of order).
        try await database.query(
            """
            WITH drawing AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(\(RevocationLog.writersLock)))
            INSERT INTO revocations (cid, revoked_by, invocation)
            SELECT \(checked.revoked.string), \(checked.revoker.string), \(Data(authorization.invocation.envelope.bytes))
            FROM drawing
            ON CONFLICT (cid) DO NOTHING
            """,
            logger: environment.logger
        )
        let rows = try await database.query(
            "SELECT revision, revoked_by, revoked_at FROM revocations WHERE cid = \(checked.revoked.string)",
            logger: environment.logger)
        for try await (revision, revokedBy, revokedAt) in rows.decode((Int64, String, Date).self) {
            // This replica refuses the capability before the caller hears it is revoked.
            try await log.catchUp(through: revision)
            environment.logger.info("revoked", metadata: ["cid": "\(checked.revoked)", "by": "\(revokedBy)"])
            return .with {
                $0.revocation = .with {
                    $0.revision = revision
                    $0.cid = checked.revoked.string
                    $0.revokedBy = revokedBy
                    $0.revokedAt = Google_Protobuf_Timestamp(date: revokedAt)
                }
            }
        }
        throw RPCError(code: .internalError, message: "the revocation was not recorded")
    }

    public func listRevocations(request: Orrery_Identity_V1_ListRevocationsRequest, context: ServerContext) async throws
        -> Orrery_Identity_V1_ListRevocationsResponse
    {
        guard request.afterRevision >= 0 else {
            throw RPCError(code: .invalidArgument, message: "after_revision must be ≥ 0")
        }
        guard (0...1000).contains(request.pageSize) else {
            throw RPCError(code: .invalidArgument, message: "page_size must be 1…1000 (0 for 100)")
        }
        let page = try await log.list(
            after: request.afterRevision, limit: request.pageSize == 0 ? 100 : Int(request.pageSize))
        return .with {
            $0.revocations = page
            $0.revision = page.last?.revision ?? request.afterRevision
        }
    }

    public func watchRevocations(
        request: Orrery_Identity_V1_WatchRevocationsRequest,
        response: RPCWriter<Orrery_Identity_V1_Revocation>,
        context: ServerContext
    ) async throws {
        guard request.afterRevision >= 0 else {
            throw RPCError(code: .invalidArgument, message: "after_revision must be ≥ 0")
        }
        try await log.feed.watch(after: request.afterRevision) { _, revocation in
            try await response.write(revocation)
        }
    }
}
