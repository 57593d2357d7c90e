import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// Raw bytes on the wire: lets a test call any method with any (here: empty) request.
struct RawBytes: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// Every RPC of every service, generated from the method catalog (so a new method cannot escape), called with
/// each kind of bad capability over real gRPC.
@Suite(
    "Zero trust on every RPC", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct AuthorizationMatrixTests {
    /// How a call ended: refused by the capability check, or let through to the handler.
    enum Outcome: Equatable, CustomStringConvertible {
        case refused(RPCError.Code)
        case passed
        /// Neither a refusal nor the server's acceptance within the deadline: never what a case expects.
        case noAnswer

        var description: String {
            switch self {
            case .refused(let code): return "refused \(code)"
            case .passed: return "passed"
            case .noAnswer: return "no answer"
            }
        }
    }

    /// Calls `method` with an empty request and `authorization`. Passed only on positive evidence: the server
    /// accepted the call (it sends its headers only once the capability check and the request's check are done),
    /// or the handler itself refused it (an error without the capability check's trailer).
    static func call(_ address: ServiceAddress, _ entry: MethodCatalog.Entry, authorization: String?) async throws
        -> Outcome
    {
        var headers = Metadata()
        if let authorization { headers.addString(authorization, forKey: "authorization") }
        let metadata = headers
        let parts = entry.fullName.split(separator: "/")
        let descriptor = MethodDescriptor(fullyQualifiedService: String(parts[0]), method: String(parts[1]))
        return try await ServiceProbe.withClient(address) { client in
            try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask {
                    let request = StreamingClientRequest<[UInt8]>(metadata: metadata) { writer in
                        if !entry.isClientStreaming { try await writer.write([]) }
                    }
                    return try await client.bidirectionalStreaming(
                        request: request, descriptor: descriptor, serializer: RawBytes(), deserializer: RawBytes(),
                        options: .defaults
                    ) { response in
                        switch response.accepted {
                        case .failure(let error): return Self.outcome(error)
                        case .success: return .passed
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(60))
                    return .noAnswer
                }
                defer { group.cancelAll() }
                return try await group.next() ?? .noAnswer
            }
        }
    }

    /// Refused by the capability check (its trailer says so), or let through to the handler.
    static func outcome(_ error: RPCError) -> Outcome {
        error.metadata[stringValues: CapabilityInterceptor.refusalTrailer].contains("refused")
            ? .refused(error.code) : .passed
    }

    @Test(
        "every method of every service: each bad capability refused with the right code; replays refused only for mutating methods"
    )
    func matrix() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-authz") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                // Every bad capability of every method from one address: the failed-authentication throttle (tested in
                // TransportLimitsTests) is off here, so each refusal is the capability check's own.
                let constellation = try await TestConstellation.start(
                    database: database, network: network, directory: directory,
                    environment: ["ORRERY_AUTH_FAILURES_PER_MINUTE": "0"])
                defer { constellation.kill() }
                let running = constellation.services
                let identity = try #require(running["identity"])

                let catalog = try MethodCatalog(
                    descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
                let tester = SigningKey()
                let now = Int64(Date().timeIntervalSince1970)
                let operatorKey = network.operatorKey
                let grant = Delegation.issue(
                    by: operatorKey, to: tester.did, subject: operatorKey.did, command: try Command("/orrery"),
                    expiration: now + 3600)
                let early = Delegation.issue(
                    by: operatorKey, to: tester.did, subject: operatorKey.did, command: try Command("/orrery"),
                    notBefore: now + 3600, expiration: now + 7200)
                let strict = Delegation.issue(
                    by: operatorKey, to: tester.did, subject: operatorKey.did, command: try Command("/orrery"),
                    policy: try Policy(try IPLDJSON.parse(#"[["==", ".must_be_present", 1]]"#)), expiration: now + 3600)
                let doomed = Delegation.issue(
                    by: operatorKey, to: tester.did, subject: operatorKey.did, command: try Command("/orrery"),
                    expiration: now + 3600)
                let stranger = SigningKey()
                let untrusted = Delegation.issue(
                    by: stranger, to: tester.did, subject: stranger.did, command: try Command("/orrery"),
                    expiration: now + 3600)

                // Revoke `doomed` first, and wait until every service refuses it (their feeds are live).
                let revokeInvocation = Invocation.issue(
                    by: operatorKey, subject: operatorKey.did, audience: try DID(identity.ready.did),
                    command: try Command("/ucan/revoke"),
                    arguments: [
                        "revoke": .link(doomed.cid), "path": .list([.link(doomed.cid)]),
                        "idempotency_key": .string("k1"),
                    ],
                    expiration: now + 120)
                var revokeMetadata = Metadata()
                revokeMetadata.addString(
                    "Bearer "
                        + (try UCANContainer.encodeText([revokeInvocation.envelope.bytes, doomed.envelope.bytes])),
                    forKey: "authorization")
                let revocation = try await ServiceProbe.withClient(identity.grpcAddress) { client in
                    try await Orrery_Identity_V1_Identity.Client(wrapping: client).revoke(
                        .with { $0.idempotencyKey = "k1" }, metadata: revokeMetadata)
                }
                #expect(revocation.revocation.cid == doomed.cid.string)

                func container(_ invocation: Invocation, _ proofs: [Delegation]) throws -> String {
                    "Bearer "
                        + (try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes)))
                }

                var checked = 0
                for (name, service) in running.sorted(by: { $0.key < $1.key }) {
                    let audience = try DID(service.ready.did)
                    let listed = try await ServiceProbe.withClient(service.grpcAddress) {
                        try await ServiceProbe.listServices($0)
                    }
                    let entries = catalog.entries.values.filter { entry in
                        listed.contains(where: { entry.fullName.hasPrefix($0 + "/") })
                    }.sorted { $0.fullName < $1.fullName }
                    #expect(!entries.isEmpty)
                    for entry in entries {
                        let address = service.grpcAddress
                        if entry.isOpen {
                            #expect(
                                try await Self.call(address, entry, authorization: nil) == .passed,
                                "\(entry.fullName) is open")
                            continue
                        }
                        // The invocation a legitimate caller sends; each case spoils one thing.
                        func invocation(
                            command: Command? = nil, audience aud: DID? = nil, expiration: Int64? = nil,
                            proofs: [Delegation]
                        ) -> Invocation {
                            let selfIssued = entry.selfAuthorised
                            // Each signed at the time of its call, so a slow machine never sees a valid one expire.
                            let signedAt = Int64(Date().timeIntervalSince1970)
                            return Invocation.issue(
                                by: tester, subject: selfIssued ? tester.did : operatorKey.did,
                                audience: aud ?? audience,
                                command: command ?? entry.command, proofs: selfIssued ? [] : proofs.map(\.cid),
                                expiration: expiration ?? signedAt + 120, issuedAt: signedAt)
                        }
                        let chain = entry.selfAuthorised ? [] : [grant]
                        func expect(_ label: String, _ authorization: String?, _ expected: Outcome) async throws {
                            let outcome = try await Self.call(address, entry, authorization: authorization)
                            #expect(
                                outcome == expected,
                                "\(name) \(entry.fullName) \(label): \(outcome), expected \(expected)")
                            checked += 1
                        }
                        try await expect("valid", try container(invocation(proofs: chain), chain), .passed)
                        try await expect("no token", nil, .refused(.unauthenticated))
                        try await expect("malformed", "Bearer C!!not-a-container", .refused(.unauthenticated))
                        try await expect("not bearer", "Basic abc", .refused(.unauthenticated))
                        try await expect(
                            "wrong audience", try container(invocation(audience: stranger.did, proofs: chain), chain),
                            .refused(.unauthenticated))
                        try await expect(
                            "expired",
                            try container(
                                invocation(expiration: Int64(Date().timeIntervalSince1970) - 300, proofs: chain), chain),
                            .refused(.permissionDenied))
                        try await expect(
                            "wrong command",
                            try container(
                                invocation(command: try Command("/orrery/elsewhere/x"), proofs: chain), chain),
                            .refused(.permissionDenied))
                        var tamperedBytes = invocation(proofs: chain).envelope.bytes
                        tamperedBytes[10] ^= 0x01  // inside the signature
                        try await expect(
                            "tampered",
                            "Bearer " + (try UCANContainer.encodeText([tamperedBytes] + chain.map(\.envelope.bytes))),
                            .refused(.unauthenticated))
                        if !entry.selfAuthorised {
                            try await expect(
                                "not yet valid", try container(invocation(proofs: [early]), [early]),
                                .refused(.permissionDenied))
                            try await expect(
                                "policy violated", try container(invocation(proofs: [strict]), [strict]),
                                .refused(.permissionDenied))
                            try await expect(
                                "revoked", try container(invocation(proofs: [doomed]), [doomed]),
                                .refused(.permissionDenied))
                            try await expect(
                                "untrusted root", try container(invocation(proofs: [untrusted]), [untrusted]),
                                .refused(.permissionDenied))
                            try await expect(
                                "missing proof", try container(invocation(proofs: [grant]), []),
                                .refused(.permissionDenied)
                            )
                        }
                        let replayed = try container(invocation(proofs: chain), chain)
                        try await expect("first use", replayed, .passed)
                        try await expect(
                            "replayed", replayed, entry.isReplayGuarded ? .refused(.permissionDenied) : .passed)
                    }
                }
                #expect(checked >= 60)
            }
        }
    }

    @Test(
        "a revocation reaches every service within 2 s; a retried Revoke (new invocation, same key) returns the first result"
    )
    func revocationPropagates() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-revoke") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let constellation = try await TestConstellation.start(
                    ["identity", "registry"], database: database, network: network, directory: directory)
                defer { constellation.kill() }
                let identity = try #require(constellation["identity"])
                let registry = try #require(constellation["registry"])
                let catalog = try MethodCatalog(
                    descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
                let getDevice = try #require(catalog["orrery.registry.v1.Registry/GetDevice"])
                let operatorKey = network.operatorKey
                let consumer = SigningKey()
                let now = Int64(Date().timeIntervalSince1970)
                let grant = Delegation.issue(
                    by: operatorKey, to: consumer.did, subject: operatorKey.did,
                    command: try Command("/orrery/registry"),
                    expiration: now + 3600)
                let registryDID = try DID(registry.ready.did)
                func authorization() throws -> String {
                    let invocation = Invocation.issue(
                        by: consumer, subject: operatorKey.did, audience: registryDID, command: getDevice.command,
                        proofs: [grant.cid], expiration: Int64(Date().timeIntervalSince1970) + 120)
                    return "Bearer "
                        + (try UCANContainer.encodeText([invocation.envelope.bytes, grant.envelope.bytes]))
                }
                #expect(
                    try await Self.call(registry.grpcAddress, getDevice, authorization: try authorization()) == .passed)

                func revoke(_ key: String) async throws -> Orrery_Identity_V1_Revocation {
                    let invocation = Invocation.issue(
                        by: operatorKey, subject: operatorKey.did, audience: try DID(identity.ready.did),
                        command: try Command("/ucan/revoke"),
                        arguments: [
                            "revoke": .link(grant.cid), "path": .list([.link(grant.cid)]),
                            "idempotency_key": .string(key),
                        ],
                        expiration: Int64(Date().timeIntervalSince1970) + 120)
                    var metadata = Metadata()
                    metadata.addString(
                        "Bearer " + (try UCANContainer.encodeText([invocation.envelope.bytes, grant.envelope.bytes])),
                        forKey: "authorization")
                    return try await ServiceProbe.withClient(identity.grpcAddress) { client in
                        try await Orrery_Identity_V1_Identity.Client(wrapping: client).revoke(
                            .with { $0.idempotencyKey = key }, metadata: metadata
                        ).revocation
                    }
                }
                let first = try await revoke("retry-key")
                let revokedAt = ContinuousClock.now
                var refused = false
                while ContinuousClock.now - revokedAt < .seconds(2) {
                    if try await Self.call(registry.grpcAddress, getDevice, authorization: try authorization())
                        == .refused(.permissionDenied)
                    {
                        refused = true
                        break
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(refused, "the registry still accepted the revoked chain 2 s after the revocation")
                let retry = try await revoke("retry-key")
                #expect(retry == first)

                // Only an issuer on the chain may revoke: a stranger's revocation is refused.
                let stranger = SigningKey()
                let strangers = Invocation.issue(
                    by: stranger, subject: stranger.did, audience: try DID(identity.ready.did),
                    command: try Command("/ucan/revoke"),
                    arguments: [
                        "revoke": .link(grant.cid), "path": .list([.link(grant.cid)]), "idempotency_key": .string("s"),
                    ],
                    expiration: Int64(Date().timeIntervalSince1970) + 120)
                var metadata = Metadata()
                metadata.addString(
                    "Bearer " + (try UCANContainer.encodeText([strangers.envelope.bytes, grant.envelope.bytes])),
                    forKey: "authorization")
                await #expect(throws: RPCError.self) {
                    try await ServiceProbe.withClient(identity.grpcAddress) { client in
                        try await Orrery_Identity_V1_Identity.Client(wrapping: client).revoke(
                            .with { $0.idempotencyKey = "s" }, metadata: metadata)
                    }
                }
            }
        }
    }
}
