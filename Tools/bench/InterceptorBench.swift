import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import OrreryAuth
import OrreryIdentity
import OrreryProto
import SwiftProtobuf

/// The latency the capability interceptor adds to a unary call over loopback gRPC.
struct InterceptorBench {
    struct Percentiles {
        let p50: Duration
        let p99: Duration
    }

    let seconds: Double

    /// Resolves DIDs (pure, read-only); the rest of the API is not what is measured.
    struct BenchIdentity: Orrery_Identity_V1_Identity.SimpleServiceProtocol {
        func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
            -> Orrery_Common_V1_InfoResponse
        { .init() }
        func resolveDid(request: Orrery_Identity_V1_ResolveDidRequest, context: ServerContext) async throws
            -> Orrery_Identity_V1_ResolveDidResponse
        {
            .with { $0.documentJson = (try? DIDDocument(resolving: try DID(request.did)).json()) ?? "" }
        }
        func revoke(request: Orrery_Identity_V1_RevokeRequest, context: ServerContext) async throws
            -> Orrery_Identity_V1_RevokeResponse
        {
            throw RPCError(code: .unimplemented, message: "not measured")
        }
        func issueDelegation(request: Orrery_Identity_V1_IssueDelegationRequest, context: ServerContext) async throws
            -> Orrery_Identity_V1_IssueDelegationResponse
        {
            throw RPCError(code: .unimplemented, message: "not measured")
        }
        func listRevocations(request: Orrery_Identity_V1_ListRevocationsRequest, context: ServerContext) async throws
            -> Orrery_Identity_V1_ListRevocationsResponse
        {
            throw RPCError(code: .unimplemented, message: "not measured")
        }
        func watchRevocations(
            request: Orrery_Identity_V1_WatchRevocationsRequest, response: RPCWriter<Orrery_Identity_V1_Revocation>,
            context: ServerContext
        ) async throws {
            throw RPCError(code: .unimplemented, message: "not measured")
        }
    }

    func run() async throws -> (open: Percentiles, authorised: Percentiles) {
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let operatorKey = SigningKey()
        let serviceKey = SigningKey()
        let caller = SigningKey()
        let grant = Delegation.issue(
            by: operatorKey, to: caller.did, subject: operatorKey.did, command: try Command("/orrery"),
            expiration: 4_000_000_000)
        let validator = ChainValidator()
        let interceptor = CapabilityInterceptor(
            serviceDID: serviceKey.did, trustedRoots: [operatorKey.did], catalog: catalog, validator: validator,
            revocations: RevocationBook(validator: validator), replayGuard: InMemoryReplayGuard(),
            logger: Logger(label: "bench"))
        let open = try await measure(interceptors: [], clientInterceptors: [])
        let signer = InvocationSigner(
            key: caller, subject: operatorKey.did, audience: serviceKey.did, proofs: [grant], catalog: catalog)
        let authorised = try await measure(interceptors: [interceptor], clientInterceptors: [signer])
        return (open, authorised)
    }

    private func measure(interceptors: [any ServerInterceptor], clientInterceptors: [any ClientInterceptor])
        async throws -> Percentiles
    {
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
            services: [BenchIdentity()], interceptors: interceptors)
        return try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let address = try await server.listeningAddress
            let port = address?.ipv4?.port ?? 0
            var samples: [Duration] = []
            try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext),
                interceptors: clientInterceptors
            ) { client in
                let identity = Orrery_Identity_V1_Identity.Client(wrapping: client)
                let request = Orrery_Identity_V1_ResolveDidRequest.with {
                    $0.did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
                }
                for _ in 0..<200 { _ = try await identity.resolveDid(request) }  // warm up
                let clock = ContinuousClock()
                let end = clock.now + .milliseconds(Int(seconds * 1000))
                while clock.now < end {
                    let start = clock.now
                    _ = try await identity.resolveDid(request)
                    samples.append(clock.now - start)
                }
            }
            server.beginGracefulShutdown()
            samples.sort()
            return Percentiles(
                p50: samples[samples.count / 2], p99: samples[min(samples.count - 1, samples.count * 99 / 100)])
        }
    }
}
