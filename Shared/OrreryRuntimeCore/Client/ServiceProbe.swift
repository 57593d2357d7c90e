public import GRPCCore
internal import SwiftProtobuf
public import GRPCNIOTransportHTTP2Posix
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import GRPCProtobuf
internal import OrreryAuth
public import OrreryProto

/// Asks a running service who it is and whether it serves, through the open RPCs only (health, reflection, Info).
public enum ServiceProbe {
    /// The full names of the services a server lists through reflection (v1).
    public static func listServices(_ client: GRPCClient<some ClientTransport>) async throws -> [String] {
        let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
        let request = Grpc_Reflection_V1_ServerReflectionRequest.with { $0.listServices = "" }
        return try await reflection.serverReflectionInfo(request: .init { writer in try await writer.write(request) }) {
            response in
            var names: [String] = []
            for try await message in response.messages {
                names += message.listServicesResponse.service.map(\.name)
            }
            return names
        }
    }

    /// Every Orrery service with an `Info` method, from the embedded descriptor set.
    static let servicesWithInfo: Set<String> = {
        guard let catalog = try? MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        else { return [] }
        return Set(catalog.entries.keys.filter { $0.hasSuffix("/Info") }.map { String($0.dropLast("/Info".count)) })
    }()

    /// The `Info` of the Orrery service a server registers (found through reflection).
    /// - Throws: `RPCError(.notFound)` when the server registers no `orrery.*` service.
    public static func info(_ client: GRPCClient<some ClientTransport>) async throws -> Orrery_Common_V1_InfoResponse {
        let services = try await listServices(client)
        // The service that has an Info method (a server may also carry, e.g., the agent channel, which has none).
        guard let service = services.first(where: { $0.hasPrefix("orrery.") && servicesWithInfo.contains($0) }) else {
            throw RPCError(code: .notFound, message: "the server lists no orrery.* service (it lists \(services))")
        }
        return try await client.unary(
            request: ClientRequest(message: Orrery_Common_V1_InfoRequest()),
            descriptor: MethodDescriptor(fullyQualifiedService: service, method: "Info"),
            serializer: ProtobufSerializer<Orrery_Common_V1_InfoRequest>(),
            deserializer: ProtobufDeserializer<Orrery_Common_V1_InfoResponse>(),
            options: .defaults
        ) { try $0.message }
    }

    /// The health status of `service` ("" for the whole server).
    public static func health(
        _ client: GRPCClient<some ClientTransport>,
        service: String = ""
    ) async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        return try await health.check(.with { $0.service = service }).status
    }

    /// TLS verified against the PEM roots at `trustRoots`, or plaintext when nil.
    public static func security(trustRoots: String?) -> HTTP2ClientTransport.Posix.TransportSecurity {
        guard let trustRoots else { return .plaintext }
        return .tls { config in
            config.trustRoots = .certificates([.file(path: trustRoots, format: .pem)])
        }
    }

    /// Transport settings for a line kept open to a peer for the life of a process: reconnection attempts at most
    /// 5 s apart. (gRPC's default back-off grows to 2 minutes: a peer back after a minute's outage went unused for
    /// up to 40 s more, and work waiting on it — a receipt to record — waited with it.)
    /// Its writes go out at once, as `prompt`'s.
    public static let longLivedLine = {
        var config = prompt
        config.backoff = .init(initial: .milliseconds(250), max: .seconds(5), multiplier: 1.6, jitter: 0.2)
        return config
    }()

    /// Transport settings whose writes go out at once: gRPC's flush coalescing holds each flush up to 100 µs for more
    /// writes to join it, which on a call that sends one message and waits for the answer is only a delay.
    public static let prompt = HTTP2ClientTransport.Posix.Config.defaults { $0.connection.flushCoalescing = nil }

    /// Runs `body` with a client connected to `address`: TLS against `trustRoots` when given, else plaintext.
    public static func withClient<Result: Sendable>(
        _ address: ServiceAddress,
        trustRoots: String? = nil,
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: address.target, transportSecurity: security(trustRoots: trustRoots), config: prompt)
        ) { client in
            try await body(client)
        }
    }
}
