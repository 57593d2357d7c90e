internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO

/// Private images' pull tokens: the short-lived, pull-only bearer tokens a consumer obtained from its registry's
/// token service. Checked at submit, stored sealed to the orchestrator's own DID beside the deployment (in the same
/// transaction), and opened only to be resealed to the one device a replica is deployed to. Never logged, never
/// returned.
struct ImagePullTokens: Sendable {
    let client: PostgresClient
    let key: SigningKey
    let logger: Logger

    /// The longest token accepted.
    static let maximumBytes = 8192

    /// Each token must name an OCI allocation of `spec` and be a plausible bearer token.
    static func validate(_ tokens: [String: String], spec: Orrery_Orchestrator_V1_WorkloadSpec) throws {
        for (allocation, token) in tokens.sorted(by: { $0.key < $1.key }) {
            let field = "image_pull_tokens[\(allocation.prefix(63))]"
            guard spec.allocations.contains(where: { $0.name == allocation && $0.executor == .oci }) else {
                throw RPCError(code: .invalidArgument, message: "\(field): no EXECUTOR_OCI allocation has this name")
            }
            guard !token.isEmpty, token.utf8.count <= maximumBytes,
                token.utf8.allSatisfy({ (33...126).contains($0) })
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "\(field): a bearer token of 1…\(maximumBytes) printable characters without spaces")
            }
        }
    }

    /// The tokens sealed for storage, by allocation.
    func sealed(_ tokens: [String: String]) throws -> [String: Data] {
        try tokens.mapValues { Data(try SealedBox.seal(Array($0.utf8), to: key.did)) }
    }

    /// Stores sealed tokens for a deployment being created, on its transaction's connection.
    static func insert(
        _ sealed: [String: Data], deployment: String, connection: PostgresConnection, logger: Logger
    ) async throws {
        for (allocation, box) in sealed {
            try await connection.query(
                """
                INSERT INTO image_pull_tokens (deployment_id, allocation, sealed)
                VALUES (\(deployment), \(allocation), \(box))
                """, logger: logger)
        }
    }

    /// `deploy` with its image's pull token sealed to `device`, when its deployment has one.
    func attach(_ deploy: Orrery_Orchestrator_V1_Deploy, device: String) async throws -> Orrery_Orchestrator_V1_Deploy {
        guard deploy.spec.executor == .oci else { return deploy }
        let rows = try await client.query(
            """
            SELECT sealed FROM image_pull_tokens
            WHERE deployment_id = \(deploy.deploymentID) AND allocation = \(deploy.allocation)
            """, logger: logger)
        var stored: Data?
        for try await box in rows.decode(Data.self) { stored = box }
        guard let stored else { return deploy }
        let token = try SealedBox.open(Array(stored), with: key)
        var attached = deploy
        attached.imagePullToken = Data(try SealedBox.seal(token, to: try DID(device)))
        return attached
    }
}
