internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryActors
internal import OrreryData
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO

/// What a consumer hands on for its devices and nobody else: private images' pull tokens (short-lived, pull-only
/// bearer tokens from the registry's token service) and presigned S3 URLs for its inputs and outputs. Checked at
/// submit, stored sealed to the orchestrator's own DID beside the deployment (in the same transaction), and opened
/// only to be resealed to the one device a replica is deployed to — again to its new device when it moves. Never
/// logged, never returned.
struct DeploymentSecrets: Sendable {
    let client: PostgresClient
    let key: SigningKey
    let logger: Logger

    /// The longest token or URL accepted.
    static let maximumBytes = 8192

    /// The secrets of one submission, checked.
    struct Submitted {
        var pullTokens: [String: String]
        /// By allocation, then `in/NAME`, `out/REPLICA/PATH` or `tok/NAME` (a private oci:// input's pull token).
        var urls: [String: [String: String]]
    }

    /// Checks the request's tokens and URLs against its spec: each names an allocation, input or output that needs
    /// it, and (unless `requireURLs` is false: none are given) every s3:// input and output to S3 has its URL.
    static func validate(_ request: Orrery_Orchestrator_V1_SubmitWorkloadRequest, requireURLs: Bool = true) throws
        -> Submitted
    {
        let spec = request.spec
        for (allocation, token) in request.imagePullTokens.sorted(by: { $0.key < $1.key }) {
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
        var urls: [String: [String: String]] = [:]
        var wanted: [String: String] = [:]  // "input_urls[…]" or "output_urls[…]" → allocation/name
        for allocation in spec.allocations {
            for input in allocation.inputs where input.source.hasPrefix("s3://") {
                wanted["input_urls[\(allocation.name)/\(input.name)]"] = "\(allocation.name)\u{0}in/\(input.name)"
            }
            guard !allocation.outputsTo.isEmpty else { continue }
            for replica in 0..<max(1, allocation.replicas) {
                for path in allocation.outputs {
                    wanted["output_urls[\(allocation.name)/\(replica)/\(path)]"] =
                        "\(allocation.name)\u{0}out/\(replica)/\(path)"
                }
            }
        }
        for (key, token) in request.inputTokens.sorted(by: { $0.key < $1.key }) {
            let field = "input_tokens[\(key.prefix(1200))]"
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2,
                spec.allocations.contains(where: { allocation in
                    allocation.name == parts[0]
                        && allocation.inputs.contains { $0.name == parts[1] && $0.source.hasPrefix("oci://") }
                })
            else {
                throw RPCError(
                    code: .invalidArgument, message: "\(field): names no oci:// input of the spec (ALLOCATION/INPUT)")
            }
            guard !token.isEmpty, token.utf8.count <= maximumBytes, token.utf8.allSatisfy({ (33...126).contains($0) })
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "\(field): a bearer token of 1…\(maximumBytes) printable characters without spaces")
            }
            urls[parts[0], default: [:]]["tok/\(parts[1])"] = token
        }
        let given =
            request.inputUrls.map { ("input_urls[\($0.key.prefix(1200))]", $0.value) }
            + request.outputUrls.map { ("output_urls[\($0.key.prefix(1200))]", $0.value) }
        for (field, url) in given.sorted(by: { $0.0 < $1.0 }) {
            guard let target = wanted.removeValue(forKey: field) else {
                let what =
                    field.hasPrefix("input")
                    ? "s3:// input of the spec (ALLOCATION/INPUT)"
                    : "output of the spec (ALLOCATION/REPLICA/PATH of an allocation with outputs_to)"
                throw RPCError(code: .invalidArgument, message: "\(field): names no \(what)")
            }
            guard url.utf8.count <= maximumBytes, let parsed = URL(string: url),
                let scheme = parsed.scheme?.lowercased(), scheme == "https" || scheme == "http", parsed.host != nil
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "\(field): a presigned http(s) URL of at most \(maximumBytes) bytes")
            }
            let parts = target.split(separator: "\u{0}", maxSplits: 1).map(String.init)
            urls[parts[0], default: [:]][parts[1]] = url
        }
        if requireURLs, let missing = wanted.keys.sorted().first {
            throw RPCError(
                code: .invalidArgument,
                message: "\(missing): required (a presigned URL: `orrery run` makes it from your S3 credentials)")
        }
        return Submitted(pullTokens: request.imagePullTokens, urls: urls)
    }

    /// The secrets sealed for storage: by allocation and name (`image`, `in/NAME`, `out/REPLICA/PATH`).
    func sealed(_ submitted: Submitted) throws -> [(allocation: String, name: String, box: Data)] {
        var sealed: [(allocation: String, name: String, box: Data)] = []
        for (allocation, token) in submitted.pullTokens {
            sealed.append((allocation, "image", Data(try SealedBox.seal(Array(token.utf8), to: key.did))))
        }
        for (allocation, urls) in submitted.urls {
            for (name, url) in urls {
                sealed.append((allocation, name, Data(try SealedBox.seal(Array(url.utf8), to: key.did))))
            }
        }
        return sealed
    }

    /// Stores sealed secrets for a deployment being created, on its transaction's connection.
    static func insert(
        _ sealed: [(allocation: String, name: String, box: Data)], deployment: String, connection: PostgresConnection,
        logger: Logger
    ) async throws {
        for (allocation, name, box) in sealed {
            if name == "image" {
                try await connection.query(
                    """
                    INSERT INTO image_pull_tokens (deployment_id, allocation, sealed)
                    VALUES (\(deployment), \(allocation), \(box))
                    """, logger: logger)
            } else {
                try await connection.query(
                    """
                    INSERT INTO data_urls (deployment_id, allocation, name, sealed)
                    VALUES (\(deployment), \(allocation), \(name), \(box))
                    """, logger: logger)
            }
        }
    }

    /// Replaces a deployment's stored secrets with renewed ones, in one transaction: the pull tokens of the
    /// allocations named, and (`replacingURLs`) every data URL.
    /// - Returns: how many pull tokens and URLs it holds now.
    func replace(deployment: String, with submitted: Submitted, replacingURLs: Bool) async throws
        -> (pullTokens: Int, urls: Int)
    {
        let sealed = try sealed(submitted)
        return try await client.transaction(logger: logger) { connection in
            for allocation in submitted.pullTokens.keys {
                try await connection.query(
                    "DELETE FROM image_pull_tokens WHERE deployment_id = \(deployment) AND allocation = \(allocation)",
                    logger: logger)
            }
            if replacingURLs {
                try await connection.query(
                    "DELETE FROM data_urls WHERE deployment_id = \(deployment) AND NOT starts_with(name, 'tok/')",
                    logger: logger)
            }
            for (allocation, names) in submitted.urls {
                for name in names.keys where name.hasPrefix("tok/") {
                    try await connection.query(
                        """
                        DELETE FROM data_urls
                        WHERE deployment_id = \(deployment) AND allocation = \(allocation) AND name = \(name)
                        """, logger: logger)
                }
            }
            try await Self.insert(sealed, deployment: deployment, connection: connection, logger: logger)
            let rows = try await connection.query(
                """
                SELECT (SELECT count(*) FROM image_pull_tokens WHERE deployment_id = \(deployment))
                         + (SELECT count(*) FROM data_urls WHERE deployment_id = \(deployment) AND starts_with(name, 'tok/')),
                       (SELECT count(*) FROM data_urls WHERE deployment_id = \(deployment) AND NOT starts_with(name, 'tok/'))
                """, logger: logger)
            for try await (tokens, urls) in rows.decode((Int64, Int64).self) { return (Int(tokens), Int(urls)) }
            return (0, 0)
        }
    }

    /// `deploy` with its image's pull token and its replica's data URLs sealed to `device`.
    func attach(_ deploy: Orrery_Orchestrator_V1_Deploy, device: String) async throws -> Orrery_Orchestrator_V1_Deploy {
        let spec = deploy.spec
        let usesURLs =
            spec.inputs.contains { $0.source.hasPrefix("s3://") || $0.source.hasPrefix("oci://") }
            || !spec.outputsTo.isEmpty
        guard spec.executor == .oci || usesURLs else { return deploy }
        let recipient = try DID(device)
        func reseal(_ box: Data) throws -> Data {
            Data(try SealedBox.seal(try SealedBox.open(Array(box), with: key), to: recipient))
        }
        var attached = deploy
        if spec.executor == .oci {
            let rows = try await client.query(
                """
                SELECT sealed FROM image_pull_tokens
                WHERE deployment_id = \(deploy.deploymentID) AND allocation = \(deploy.allocation)
                """, logger: logger)
            for try await box in rows.decode(Data.self) { attached.imagePullToken = try reseal(box) }
        }
        if usesURLs {
            let outputs = "out/\(deploy.replica)/"
            let rows = try await client.query(
                """
                SELECT name, sealed FROM data_urls
                WHERE deployment_id = \(deploy.deploymentID) AND allocation = \(deploy.allocation)
                  AND (name LIKE 'in/%' OR name LIKE 'tok/%' OR starts_with(name, \(outputs)))
                """, logger: logger)
            for try await (name, box) in rows.decode((String, Data).self) {
                if name.hasPrefix("in/") {
                    attached.inputUrls[String(name.dropFirst(3))] = try reseal(box)
                } else if name.hasPrefix("tok/") {
                    attached.inputTokens[String(name.dropFirst(4))] = try reseal(box)
                } else if name.hasPrefix(outputs) {
                    attached.outputUrls[String(name.dropFirst(outputs.count))] = try reseal(box)
                }
            }
        }
        return attached
    }
}
