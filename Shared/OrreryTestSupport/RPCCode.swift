public import GRPCCore

/// The gRPC status code `body` ends with: nil when it succeeds, `.unknown` for an error that is not an `RPCError`.
public func rpcCode(_ body: () async throws -> Void) async -> RPCError.Code? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error.code
    } catch {
        return .unknown
    }
}
