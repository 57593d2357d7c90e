#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import GRPCCore
internal import Metrics

/// Counts every RPC by method and status code and times it (swift-metrics; exported at `/metrics`).
public struct MetricsServerInterceptor: ServerInterceptor {
    public init() {}

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.fullyQualifiedMethod
        let start = ContinuousClock.now
        func record(_ code: String) {
            Counter(label: "grpc_server_handled_total", dimensions: [("method", method), ("code", code)]).increment()
            let elapsed = start.duration(to: .now).components
            Metrics.Timer(
                label: "grpc_server_handling_seconds", dimensions: [("method", method)], preferredDisplayUnit: .seconds
            )
            .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        }
        do {
            let response = try await next(request, context)
            record(response.accepted.failureCode ?? "ok")
            return response
        } catch let error as RPCError {
            record("\(error.code)")
            throw error
        } catch {
            record("unknown")
            throw error
        }
    }
}

extension Result where Failure == RPCError {
    fileprivate var failureCode: String? {
        if case .failure(let error) = self { return "\(error.code)" }
        return nil
    }
}
