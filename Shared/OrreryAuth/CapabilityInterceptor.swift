#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import GRPCCore
public import Logging
public import OrreryIdentity
public import SwiftProtobuf

/// Zero trust on every RPC: verifies the `authorization: Bearer <UCAN container>` a call carries — signature, chain,
/// time bounds, audience, command, policy, revocation, replay — before the handler runs, and checks that the
/// request agrees with the invocation's `args`. Only health, reflection and `Info` are open.
public struct CapabilityInterceptor: ServerInterceptor {
    /// The trailer a refusal by this interceptor carries, so clients can tell it from a handler's own answer.
    public static let refusalTrailer = "orrery-capability"

    /// Invocations may live at most this long (a read-only one may be reused until it expires).
    public static let maximumLifetime: Int64 = 300

    /// The longest `authorization` header read; a longer one is refused before it is decoded.
    public static let maximumAuthorizationLength = 16 * 1024
    /// The largest container body once base64 and gzip are undone.
    public static let maximumContainerSize = 64 * 1024
    /// The most tokens one container may hold (an invocation and its proofs).
    public static let maximumTokens = 32

    private static let invocationTagBytes = Array(UCANEnvelope.invocationTag.utf8)

    /// Whether `token` contains the invocation tag's bytes (every invocation does, as its payload's key).
    static func mayBeInvocation(_ token: [UInt8]) -> Bool {
        let tag = invocationTagBytes
        guard token.count >= tag.count, let first = tag.first else { return false }
        var index = 0
        while index <= token.count - tag.count {
            if token[index] == first, token[index..<(index + tag.count)].elementsEqual(tag) { return true }
            index += 1
        }
        return false
    }

    /// The credentials of a `Bearer` authorization header (the scheme is case-insensitive, RFC 9110 §11.1), or nil.
    public static func bearerCredentials(_ header: String) -> String? {
        let bytes = header.utf8
        guard bytes.count > 7, String(decoding: bytes.prefix(6), as: UTF8.self).lowercased() == "bearer",
            bytes.dropFirst(6).first == UInt8(ascii: " ")
        else { return nil }
        let credentials = header.utf8.dropFirst(7).drop { $0 == UInt8(ascii: " ") }
        return credentials.isEmpty ? nil : String(decoding: credentials, as: UTF8.self)
    }

    private let serviceDID: DID
    private let trustedRoots: Set<DID>
    private let catalog: MethodCatalog
    private let validator: ChainValidator
    private let revocations: RevocationBook
    private let replayGuard: any ReplayGuard
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let throttle: FailedAuthenticationThrottle?

    /// - Parameters:
    ///   - serviceDID: The DID invocations must be addressed to (`aud`).
    ///   - trustedRoots: Subjects a chain may root in (the operator).
    public init(
        serviceDID: DID,
        trustedRoots: Set<DID>,
        catalog: MethodCatalog,
        validator: ChainValidator,
        revocations: RevocationBook,
        replayGuard: any ReplayGuard,
        logger: Logger,
        throttle: FailedAuthenticationThrottle? = nil,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
        self.throttle = throttle
        self.serviceDID = serviceDID
        self.trustedRoots = trustedRoots
        self.catalog = catalog
        self.validator = validator
        self.revocations = revocations
        self.replayGuard = replayGuard
        self.logger = logger
        self.clock = clock
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.fullyQualifiedMethod
        guard let entry = catalog[method] else {
            throw RPCError(code: .permissionDenied, message: "\(method) is not in this server's method catalog")
        }
        if entry.isOpen { return try await next(request, context) }

        let authorization: Authorization
        do {
            authorization = try await authorize(request.metadata, entry: entry, peer: context.remotePeer)
        } catch var error as RPCError {
            // Marks the refusal as the capability check's, not the handler's.
            error.metadata.replaceOrAddString("refused", forKey: Self.refusalTrailer)
            throw error
        }
        var request = request
        if !entry.isClientStreaming {
            // The request must agree with what the invoker signed, and the chain's policies hold over the request
            // itself: checked on each message before the handler sees it.
            let messages = request.messages
            let schemas = catalog.schemas
            request.messages = RPCAsyncSequence(
                wrapping: messages.map { message in
                    do {
                        try Self.checkRequest(message, authorization: authorization, entry: entry, schemas: schemas)
                    } catch var error as RPCError {
                        error.metadata.replaceOrAddString("refused", forKey: Self.refusalTrailer)
                        throw error
                    }
                    return message
                })
        }
        let response = try await Authorization.$current.withValue(authorization) {
            try await next(request, context)
        }
        guard case .success(let contents) = response.accepted else { return response }
        return StreamingServerResponse(of: Output.self, metadata: contents.metadata) { writer in
            try await Authorization.$current.withValue(authorization) {
                try await contents.producer(writer)
            }
        }
    }

    /// Every message's fields (for readers of requests in other encodings, such as the JSON gateway).
    public var schemas: MessageSchemas { catalog.schemas }

    /// The first half of `authorize(authorizationHeader:method:request:)`, for a caller that has not read the
    /// request yet: the capability alone (signature, chain, audience, command, time, revocation, replay), so that
    /// nothing costly is done for an unauthenticated caller. Returns nil for an open method; `checkRequest` must
    /// follow once the request is read.
    /// `peer` is the caller's address in gRPC's form (`ipv4:1.2.3.4:5678`), for the failed-authentication throttle.
    public func authorizeCaller(
        authorizationHeader: String?, method: String, peer: String? = nil
    ) async throws -> Authorization? {
        guard let entry = catalog[method] else {
            throw RPCError(code: .unimplemented, message: "\(method) is not a method of this service")
        }
        if entry.isOpen { return nil }
        var metadata = Metadata()
        if let authorizationHeader { metadata.addString(authorizationHeader, forKey: "authorization") }
        return try await authorize(metadata, entry: entry, peer: peer)
    }

    /// The second half: the request against the capability `authorizeCaller` returned (args agree, policies
    /// hold over the request).
    public func checkRequest(
        _ request: any SwiftProtobuf.Message, method: String, authorization: Authorization?
    ) throws {
        guard let authorization, let entry = catalog[method] else { return }
        try Self.checkRequest(request, authorization: authorization, entry: entry, schemas: catalog.schemas)
    }

    /// Authorises a call that arrives outside gRPC (the JSON gateway) with exactly the checks a gRPC call gets:
    /// the `authorization` header's container for `method`, then the request against the invocation's args.
    /// Returns nil for an open method.
    public func authorize(
        authorizationHeader: String?, method: String, request: any SwiftProtobuf.Message, peer: String? = nil
    ) async throws -> Authorization? {
        let authorization = try await authorizeCaller(
            authorizationHeader: authorizationHeader, method: method, peer: peer)
        try checkRequest(request, method: method, authorization: authorization)
        return authorization
    }

    /// Checks the caller's container for `entry`; returns the validated authorization. The chain's policies are
    /// left to `checkRequest` (over the request itself), except for a client-streaming method, which has no single
    /// request: its policies hold over the invocation's `args`.
    func authorize(_ metadata: Metadata, entry: MethodCatalog.Entry, peer: String?) async throws -> Authorization {
        guard let text = metadata.authorizationHeader else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "no capability: send 'authorization: Bearer <UCAN container>' (make one with `orrery ucan invoke`)")
        }
        guard text.utf8.count <= Self.maximumAuthorizationLength else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "the authorization header is \(text.utf8.count) bytes; at most \(Self.maximumAuthorizationLength) are read"
            )
        }
        guard let container = Self.bearerCredentials(text) else {
            throw RPCError(
                code: .unauthenticated, message: "the authorization header must be 'Bearer <UCAN container>'")
        }
        if let throttle, let peer, case .refuse(let source, let retryAfter) = throttle.verdict(peer: peer) {
            throw RPCError(
                code: .resourceExhausted,
                message:
                    "too many forged or invalid capabilities from \(source): calls from its connections that have not authenticated are refused for about \(Int(retryAfter.rounded(.up))) s"
            )
        }
        // The invocation first, and what can be refused from it alone (audience, command, time); the delegations'
        // envelopes are parsed only for an invocation meant for this call.
        var invocations: [Invocation] = []
        var otherTokens: [[UInt8]] = []
        do {
            let tokens = try UCANContainer.decode(container, maximumSize: Self.maximumContainerSize)
            guard tokens.count <= Self.maximumTokens else {
                throw UCANError(
                    .malformedToken, "the container holds \(tokens.count) tokens; at most \(Self.maximumTokens)")
            }
            // A token whose bytes lack the invocation tag cannot be an invocation: it is decoded later, if at all.
            for token in tokens {
                guard Self.mayBeInvocation(token) else {
                    otherTokens.append(token)
                    continue
                }
                let envelope = try UCANEnvelope(bytes: token)
                if envelope.tag == UCANEnvelope.invocationTag {
                    invocations.append(try Invocation(envelope: envelope))
                } else {
                    otherTokens.append(token)
                }
            }
        } catch let error as UCANError {
            throw RPCError(code: .unauthenticated, message: "malformed capability: \(error.reason)")
        }
        guard invocations.count == 1, let invocation = invocations.first else {
            throw RPCError(
                code: .unauthenticated,
                message: "the container must hold exactly one invocation (it holds \(invocations.count))")
        }
        // Checked before the signature, so a token for another service costs no verification: it does not
        // authenticate anyone here, forged or not.
        guard invocation.executor == serviceDID else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "the invocation is addressed to \(invocation.executor), not to this service (\(serviceDID)): set its aud to the DID that Info returns"
            )
        }
        guard invocation.command == entry.command else {
            throw RPCError(
                code: .permissionDenied,
                message: "the invocation is for \(invocation.command), but \(entry.fullName) needs \(entry.command)")
        }
        let now = clock()
        guard let expiration = invocation.expiration else {
            throw RPCError(
                code: .permissionDenied,
                message: "the invocation never expires; give it an exp within \(Self.maximumLifetime) s")
        }
        guard expiration - now <= Self.maximumLifetime else {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "the invocation lives until \(expiration), more than \(Self.maximumLifetime) s from now; shorten its exp"
            )
        }
        guard now <= expiration + validator.clockSkew else {
            throw RPCError(
                code: .permissionDenied, message: "expired: the invocation expired at \(expiration) (now \(now))")
        }
        var delegations: [CID: Delegation] = [:]
        do {
            for token in otherTokens {
                let envelope = try UCANEnvelope(bytes: token)
                guard envelope.tag == UCANEnvelope.delegationTag else {
                    throw UCANError(.malformedToken, "the container holds more than one invocation")
                }
                let delegation = try Delegation(envelope: envelope)
                delegations[delegation.cid] = delegation
            }
        } catch let error as UCANError {
            throw RPCError(code: .unauthenticated, message: "malformed capability: \(error.reason)")
        }
        // From here on a refusal may have cost signature verifications: each counts against the caller's source
        // (a chain rooted in the caller's own key verifies and is then refused — as costly as a forgery).
        func refuse(_ error: RPCError) -> RPCError {
            if let throttle, let peer { throttle.recordFailure(peer: peer) }
            return error
        }
        let validated: ChainValidator.Validated
        do {
            validated = try validator.validate(
                invocation, proofs: delegations, now: now, isRevoked: revocations.isRevoked,
                deferringPolicies: !entry.isClientStreaming)
        } catch let error as UCANError {
            throw refuse(Self.status(for: error))
        }
        if !entry.selfAuthorised && !entry.actsForSubject && !trustedRoots.contains(validated.subject) {
            throw refuse(
                RPCError(
                    code: .permissionDenied,
                    message:
                        "the chain roots in \(validated.subject), which this service does not trust; it trusts \(trustedRoots.map(\.string).sorted().joined(separator: ", "))"
                ))
        }
        if entry.selfAuthorised && invocation.subject != invocation.issuer {
            throw refuse(
                RPCError(code: .permissionDenied, message: "\(entry.command) must be invoked by its own subject"))
        }
        if entry.isReplayGuarded {
            let fresh = try await replayGuard.consume(
                invocation.cid, command: entry.command.string, issuer: invocation.issuer, expiresAt: expiration)
            guard fresh else {
                throw refuse(
                    RPCError(
                        code: .permissionDenied,
                        message:
                            "invocation \(invocation.cid) was already used: a retry needs a new invocation (with the same idempotency key)"
                    ))
            }
        }
        if let throttle, let peer { throttle.recordSuccess(peer: peer) }
        return Authorization(validated: validated, delegations: delegations)
    }

    /// The gRPC status of a chain failure: a bad signature or token is UNAUTHENTICATED, the rest PERMISSION_DENIED.
    static func status(for error: UCANError) -> RPCError {
        switch error.name {
        case .invalidSignature, .malformedToken:
            return RPCError(code: .unauthenticated, message: "\(error.name.rawValue): \(error.reason)")
        default:
            return RPCError(code: .permissionDenied, message: "\(error.name.rawValue): \(error.reason)")
        }
    }

    /// Checks a request against its invocation: every request field the invocation's `args` name must equal the
    /// request's value (exactly, at any integer width; a decimal amount may be signed as its text or as an
    /// integer); a mutating request's idempotency key must be in `args`; and every policy of the chain must hold
    /// over the request itself (`RequestView`: scalars, enums by name, lists, maps, nested messages), together
    /// with the `args` that are not request fields.
    static func checkRequest<Message>(
        _ message: Message, authorization: Authorization, entry: MethodCatalog.Entry, schemas: MessageSchemas
    ) throws {
        guard let message = message as? any SwiftProtobuf.Message else { return }
        let arguments = authorization.invocation.arguments
        let chain = authorization.validated.chain
        let fields = schemas[message: entry.inputType] ?? [:]
        let kinds = Dictionary(fields.values.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        let signedFields = Set(arguments.keys.filter { kinds[$0] != nil })
        let policed = chain.contains { !$0.policy.statements.isEmpty }
        let needed = signedFields.union(entry.isReadOnly ? [] : ["idempotency_key"])
        let view = try RequestView.of(message, schemas: schemas, only: policed ? nil : needed).mapValue ?? [:]
        for name in signedFields.sorted() {
            guard let signed = arguments[name], Self.agrees(signed, with: view[name] ?? .null, kind: kinds[name])
            else {
                throw RPCError(
                    code: .permissionDenied,
                    message: "the request's \(name) differs from the invocation's args: sign the request you send")
            }
        }
        if !entry.isReadOnly, case .string(let key)? = view["idempotency_key"], !key.isEmpty,
            arguments["idempotency_key"] != .string(key)
        {
            throw RPCError(
                code: .permissionDenied, message: "the invocation's args must carry the request's idempotency_key")
        }
        guard policed else { return }
        do {
            try ChainValidator.checkPolicies(
                of: chain, over: .map(arguments.merging(view) { _, request in request }))
        } catch let error as UCANError {
            throw Self.status(for: error)
        }
    }

    /// Whether a signed argument is the request's value: equal IPLD, numbers by exact value, a decimal amount also
    /// as its text.
    private static func agrees(_ signed: IPLD, with actual: IPLD, kind: MessageSchemas.Kind?) -> Bool {
        if Policy.deepEqual(signed, actual) { return true }
        guard kind == .decimalAmount, case .string(let text) = signed else { return false }
        if text.isEmpty { return actual == .null }
        return ExactInteger(decimal: text).map { IPLD.exact($0) == actual } ?? false
    }
}
