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
        let known = book.status(of: request.service) != nil
        for await status in book.watch(request.service) {
            let wire: Grpc_Health_V1_HealthCheckResponse.ServingStatus =
                (status == .unknown && !known && book.status(of: request.service) == nil)
                ? .serviceUnknown : Self.wire(status)
            try await response.write(.with { $0.status = wire })
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
