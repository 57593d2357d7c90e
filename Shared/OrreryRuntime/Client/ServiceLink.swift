public import GRPCCore
public import GRPCNIOTransportHTTP2Posix
internal import Logging
public import OrreryIdentity
internal import OrreryAuth
internal import OrreryProto
internal import Synchronization
public import SwiftProtobuf

/// One service's long-lived line to another Orrery service: a gRPC client kept connected (reconnecting with
/// back-off), the peer's DID learnt from its `Info`, and each call carrying an invocation signed for that peer —
/// under the service's operator chain, or under a party's own delegation when acting for it.
public final class ServiceLink: Sendable {
    public let address: ServiceAddress
    /// What the peer is, for messages ("notary", "settlement gateway").
    public let peer: String
    let environment: ServiceEnvironment
    private let connected = Mutex<(client: GRPCClient<HTTP2ClientTransport.Posix>, did: DID)?>(nil)

    public init(address: ServiceAddress, peer: String, environment: ServiceEnvironment) {
        self.address = address
        self.peer = peer
        self.environment = environment
    }

    /// Keeps the client connected until cancelled.
    public func run() async {
        let (address, peer, logger, trustRoots) = (
            address, peer, environment.logger, environment.settings.tlsTrustRoots
        )
        await Reconnecting.run(onFailure: { error in
            logger.warning("\(peer) unreachable; retrying", metadata: ["address": "\(address)", "error": "\(error)"])
        }) {
            let did = try await ServiceProbe.withClient(address, trustRoots: trustRoots) {
                try DID(try await ServiceProbe.info($0).did)
            }
            try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots),
                    config: ServiceProbe.longLivedLine)
            ) { client in
                connected.withLock { $0 = (client, did) }
                defer { connected.withLock { $0 = nil } }
                logger.info("\(peer) connected", metadata: ["address": "\(address)", "did": "\(did)"])
                while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
            }
        }
    }

    /// The service's own chain from the operator (to carry, uncited, when invoking under a party's delegation).
    public var environmentProofs: [Delegation] { environment.proofs }

    /// The peer's DID once connected.
    public var peerDID: DID? { connected.withLock { $0?.did } }

    /// Calls `method` with an invocation for `subject` (the operator by default) under `proofs` (the service's own
    /// chain by default), `alsoCarrying` further delegations uncited.
    public func invoke<Request: SwiftProtobuf.Message & Sendable, Response: Sendable>(
        _ method: MethodDescriptor, _ request: Request, subject: DID? = nil, proofs: [Delegation]? = nil,
        alsoCarrying: [Delegation] = [],
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>, Request, Metadata) async throws -> Response
    ) async throws -> Response {
        guard let (client, did) = connected.withLock({ $0 }) else {
            throw RPCError(code: .unavailable, message: "the \(peer) at \(address) is not connected yet")
        }
        var metadata = Metadata()
        metadata.addString(
            try InvocationSigner.authorization(
                for: request, method: method.fullyQualifiedMethod, key: environment.key,
                subject: subject ?? environment.operatorDID, audience: did, proofs: proofs ?? environment.proofs,
                catalog: environment.catalog, alsoCarrying: alsoCarrying),
            forKey: "authorization")
        return try await body(client, request, metadata)
    }
}
