#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import GRPCCore
public import OrreryIdentity
public import SwiftProtobuf

/// Signs an invocation for each outgoing call, so services call each other the way every client calls them:
/// `aud` the callee's DID, `cmd` the method's command, `args` the request's scalar fields, proofs the caller's
/// delegation chain (root first).
public struct InvocationSigner: ClientInterceptor {
    private let key: SigningKey
    private let subject: DID
    private let audience: DID
    private let proofs: [Delegation]
    private let alsoCarrying: [Delegation]
    private let catalog: MethodCatalog
    private let lifetime: Int64

    /// - Parameters:
    ///   - subject: The resource owner the chain roots in (the operator).
    ///   - audience: The callee's DID (from its `Info`).
    ///   - proofs: The caller's delegation chain, root first (empty when the caller is the subject).
    ///   - alsoCarrying: Delegations sent in the container without being cited (e.g. the caller's own standing
    ///     with the operator, when it acts under someone else's chain).
    public init(
        key: SigningKey, subject: DID, audience: DID, proofs: [Delegation], catalog: MethodCatalog,
        alsoCarrying: [Delegation] = [], lifetime: Int64 = 120
    ) {
        self.key = key
        self.subject = subject
        self.audience = audience
        self.proofs = proofs
        self.alsoCarrying = alsoCarrying
        self.catalog = catalog
        self.lifetime = lifetime
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>,
        context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        guard let entry = catalog[context.descriptor.fullyQualifiedMethod], !entry.isOpen else {
            return try await next(request, context)
        }
        var request = request
        var arguments: [String: IPLD] = [:]
        if !entry.isClientStreaming {
            // Collect the (single) request message to sign its fields, then replay it to the transport.
            let collector = MessageCollector<Input>()
            try await request.producer(RPCWriter(wrapping: collector))
            let messages = collector.messages
            if let first = messages.first as? any SwiftProtobuf.Message {
                arguments = RequestArguments.of(first, entry: entry)
            }
            request.producer = { writer in try await writer.write(contentsOf: messages) }
        }
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: subject, audience: audience, command: entry.command, arguments: arguments,
            proofs: proofs.map(\.cid), expiration: now + lifetime, issuedAt: now)
        let container = try UCANContainer.encodeText(
            [invocation.envelope.bytes] + (proofs + alsoCarrying).map(\.envelope.bytes))
        request.metadata.replaceOrAddString("Bearer " + container, forKey: "authorization")
        return try await next(request, context)
    }
}

extension InvocationSigner {
    /// The `authorization` header value for one call of `method` with `request`, signed by `key` for `subject`
    /// with `proofs` — for a caller that acts under different chains call by call (the orchestrator proposing a
    /// contract under each consumer's own delegation).
    public static func authorization(
        for request: some SwiftProtobuf.Message, method: String, key: SigningKey, subject: DID, audience: DID,
        proofs: [Delegation], catalog: MethodCatalog, alsoCarrying: [Delegation] = [], lifetime: Int64 = 120
    ) throws -> String {
        guard let entry = catalog[method] else { throw UCANError(.malformedToken, "\(method) is not in the catalog") }
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: subject, audience: audience, command: entry.command,
            arguments: RequestArguments.of(request, entry: entry), proofs: proofs.map(\.cid),
            expiration: now + lifetime, issuedAt: now)
        return "Bearer "
            + (try UCANContainer.encodeText(
                [invocation.envelope.bytes] + (proofs + alsoCarrying).map(\.envelope.bytes)))
    }
}

/// An `RPCWriterProtocol` that keeps what is written.
final class MessageCollector<Element: Sendable>: RPCWriterProtocol, @unchecked Sendable {
    // @unchecked: written only by the request producer, read after it returns.
    private(set) var messages: [Element] = []

    func write(_ element: Element) async throws {
        messages.append(element)
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        messages.append(contentsOf: elements)
    }
}
