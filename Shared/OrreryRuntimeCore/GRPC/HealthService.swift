public import GRPCCore
internal import SwiftProtobuf
public import OrreryProto

/// The standard `grpc.health.v1.Health` service over a `HealthStatusBook`.
public struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
    private let book: HealthStatusBook

    public init(book: HealthStatusBook) {
        self.book = book
    }

    public func check(
        request: Grpc_Health_V1_HealthCheckRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthCheckResponse {
        guard let status = book.status(of: request.service) else {
            throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
        }
        return .with { $0.status = Self.wire(status) }
    }

    public func list(
        request: Grpc_Health_V1_HealthListRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthListResponse {
        .with { response in
            for (service, status) in book.all {
                response.statuses[service] = .with { $0.status = Self.wire(status) }
            }
        }
    }

    public func watch(
        request: Grpc_Health_V1_HealthCheckRequest,
        response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
        context: ServerContext
    ) async throws {
        for await status in book.watch(request.service) {
            // SERVICE_UNKNOWN while the server does not know the service (the protocol's Watch semantics).
            let known = book.status(of: request.service) != nil
            try await response.write(.with { $0.status = known ? Self.wire(status) : .serviceUnknown })
        }
    }

    private static func wire(_ status: HealthStatusBook.Status) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
        switch status {
        case .serving: return .serving
        case .notServing: return .notServing
        case .unknown: return .unknown
        }
    }
}
