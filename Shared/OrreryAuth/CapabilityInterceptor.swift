public import Foundation
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

    private let serviceDID: DID
    private let trustedRoots: Set<DID>
    private let catalog: MethodCatalog
    private let validator: ChainValidator
    private let revocations: RevocationBook
    private let replayGuard: any ReplayGuard
    private let logger: Logger
    private let clock: @Sendable () -> Int64

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
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
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
            authorization = try await authorize(request.metadata, entry: entry)
        } catch var error as RPCError {
            // Marks the refusal as the capability check's, not the handler's.
            error.metadata.replaceOrAddString("refused", forKey: Self.refusalTrailer)
            throw error
        }
        var request = request
        if !entry.isClientStreaming {
            // The request must agree with what the invoker signed: checked on each message before the handler sees it.
            let messages = request.messages
            request.messages = RPCAsyncSequence(
                wrapping: messages.map { message in
                    try Self.checkArguments(message, against: authorization.invocation.arguments, entry: entry)
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

    /// Authorises a call that arrives outside gRPC (the JSON gateway) with exactly the checks a gRPC call gets:
    /// the `authorization` header's container for `method`, then the request against the invocation's args.
    /// Returns nil for an open method.
    public func authorize(
        authorizationHeader: String?, method: String, request: any SwiftProtobuf.Message
    ) async throws -> Authorization? {
        guard let entry = catalog[method] else {
            throw RPCError(code: .unimplemented, message: "\(method) is not a method of this service")
        }
        if entry.isOpen { return nil }
        var metadata = Metadata()
        if let authorizationHeader { metadata.addString(authorizationHeader, forKey: "authorization") }
        let authorization = try await authorize(metadata, entry: entry)
        try Self.checkArguments(request, against: authorization.invocation.arguments, entry: entry)
        return authorization
    }

    /// Checks the caller's container for `entry`; returns the validated authorization.
    func authorize(_ metadata: Metadata, entry: MethodCatalog.Entry) async throws -> Authorization {
        guard let text = metadata.authorizationHeader else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "no capability: send 'authorization: Bearer <UCAN container>' (make one with `orrery ucan invoke`)")
        }
        guard text.hasPrefix("Bearer ") else {
            throw RPCError(
                code: .unauthenticated, message: "the authorization header must be 'Bearer <UCAN container>'")
        }
        var invocations: [Invocation] = []
        var delegations: [CID: Delegation] = [:]
        do {
            for token in try UCANContainer.decode(String(text.dropFirst("Bearer ".count))) {
                let envelope = try UCANEnvelope(bytes: token)
                if envelope.tag == UCANEnvelope.invocationTag {
                    invocations.append(try Invocation(envelope: envelope))
                } else {
                    let delegation = try Delegation(envelope: envelope)
                    delegations[delegation.cid] = delegation
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
        guard invocation.executor == serviceDID else {
            throw RPCError(
                code: .permissionDenied,
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
        let validated: ChainValidator.Validated
        do {
            validated = try validator.validate(
                invocation, proofs: delegations, now: now, isRevoked: revocations.isRevoked)
        } catch let error as UCANError {
            throw Self.status(for: error)
        }
        if !entry.selfAuthorised && !entry.actsForSubject && !trustedRoots.contains(validated.subject) {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "the chain roots in \(validated.subject), which this service does not trust; it trusts \(trustedRoots.map(\.string).sorted().joined(separator: ", "))"
            )
        }
        if entry.selfAuthorised && invocation.subject != invocation.issuer {
            throw RPCError(code: .permissionDenied, message: "\(entry.command) must be invoked by its own subject")
        }
        if !entry.isReadOnly {
            let fresh = try await replayGuard.consume(
                invocation.cid, command: entry.command.string, issuer: invocation.issuer, expiresAt: expiration)
            guard fresh else {
                throw RPCError(
                    code: .permissionDenied,
                    message:
                        "invocation \(invocation.cid) was already used: a retry needs a new invocation (with the same idempotency key)"
                )
            }
        }
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

    /// The request's scalar fields must equal the invocation's `args` where both name them; a mutating request's
    /// idempotency key must be in `args`.
    static func checkArguments<Message>(
        _ message: Message, against arguments: [String: IPLD], entry: MethodCatalog.Entry
    ) throws {
        guard let message = message as? any SwiftProtobuf.Message else { return }
        let actual = RequestArguments.of(message, entry: entry)
        for (name, kind) in entry.requestFields {
            guard let signed = arguments[name] else { continue }
            let value = actual[name] ?? kind.defaultValue
            guard signed == value || (kind == .float && Self.sameNumber(signed, value)) else {
                throw RPCError(
                    code: .permissionDenied,
                    message: "the request's \(name) differs from the invocation's args: sign the request you send")
            }
        }
        if !entry.isReadOnly, let key = actual["idempotency_key"], arguments["idempotency_key"] != key {
            throw RPCError(
                code: .permissionDenied, message: "the invocation's args must carry the request's idempotency_key")
        }
    }

    private static func sameNumber(_ lhs: IPLD, _ rhs: IPLD) -> Bool {
        switch (lhs, rhs) {
        case (.integer(let a), .float(let b)), (.float(let b), .integer(let a)): return Double(a) == b
        default: return false
        }
    }
}

extension MethodCatalog.FieldKind {
    /// The proto3 default a request field has when it is not set.
    var defaultValue: IPLD {
        switch self {
        case .integer: return .integer(0)
        case .float: return .float(0)
        case .string: return .string("")
        case .bool: return .bool(false)
        case .bytes: return .bytes([])
        }
    }
}
