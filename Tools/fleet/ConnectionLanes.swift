import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore

/// Signs each call as the device the calling task acts for (`ActingDeviceSigner.$member`): many devices' calls share a
/// connection, each with its own device's invocation and delegation chain, as each device's own connection would.
struct ActingDeviceSigner: ClientInterceptor {
    @TaskLocal static var member: FleetRoster.Member?

    let audience: DID
    let subject: DID
    let catalog: MethodCatalog

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>,
        context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        guard let member = Self.member else {
            throw RPCError(code: .internalError, message: "a fleet call made outside a device's task")
        }
        let signer = InvocationSigner(
            key: member.key, subject: subject, audience: audience, proofs: member.chain, catalog: catalog)
        return try await signer.intercept(request: request, context: context, next: next)
    }
}

/// A fixed set of HTTP/2 connections to one service, device `i` on connection `i / devicesPerConnection`: a
/// connection carries at most 100 streams at once (what the services advertise), and each device keeps one or two
/// open for good.
final class ConnectionLanes: Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    let address: ServiceAddress
    /// The service's DID (from its Info): the audience of every invocation.
    let audience: DID
    let devicesPerConnection: Int
    private let clients: [Client]

    init(
        address: ServiceAddress, devices: Int, devicesPerConnection: Int, subject: DID, trustRoots: String?
    ) async throws {
        self.address = address
        self.devicesPerConnection = max(1, devicesPerConnection)
        audience = try await ServiceProbe.withClient(address, trustRoots: trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = ActingDeviceSigner(audience: audience, subject: subject, catalog: catalog)
        let count = (devices + self.devicesPerConnection - 1) / self.devicesPerConnection
        clients = try (0..<max(1, count)).map { _ in
            Client(
                transport: try .http2NIOPosix(
                    target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots)),
                interceptors: [signer])
        }
    }

    var connections: Int { clients.count }

    /// The client device `index` calls through.
    func client(for index: Int) -> Client { clients[min(index / devicesPerConnection, clients.count - 1)] }

    /// Keeps every connection going until `shutdown`.
    func run() async {
        await withDiscardingTaskGroup { group in
            for client in clients { group.addTask { try? await client.runConnections() } }
        }
    }

    func shutdown() {
        for client in clients { client.beginGracefulShutdown() }
    }
}
