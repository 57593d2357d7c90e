internal import Foundation
internal import OrreryRuntimeCore
public import GRPCCore
public import Logging
internal import NIOCore
internal import PostgresNIO
internal import _ConnectionPoolModule

/// Answers every error a handler throws with a precise status and a message a person understands: an `RPCError`
/// passes with its message bounded (`RPCError.maximumMessageBytes`); a database error is UNAVAILABLE ("retry"); a cancellation is CANCELLED; anything else is
/// INTERNAL with an incident id that is logged with the error — never gRPC's bare UNKNOWN with an empty message.
public struct ErrorStatusInterceptor: ServerInterceptor {
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.fullyQualifiedMethod
        let logger = logger
        do {
            var response = try await next(request, context)
            switch response.accepted {
            case .failure(let refusal):
                // What the handler (or an interceptor inside this one) threw arrives here as a rejected response.
                response.accepted = .failure(Self.answer(refusal, method: method, logger: logger))
            case .success(var contents):
                // A streaming response's errors come from its producer, after the handler returned.
                let producer = contents.producer
                contents.producer = { writer in
                    do {
                        return try await producer(writer)
                    } catch {
                        throw Self.status(for: error, method: method, logger: logger)
                    }
                }
                response.accepted = .success(contents)
            }
            return response
        } catch {
            throw Self.status(for: error, method: method, logger: logger)
        }
    }

    /// The status a rejected response is answered with. gRPC turns an error thrown inside this interceptor that is
    /// not an `RPCError` into UNKNOWN with an empty message, the error as its cause: that cause is answered here.
    static func answer(_ refusal: RPCError, method: String, logger: Logger) -> RPCError {
        if refusal.code == .unknown, refusal.message.isEmpty, let cause = refusal.cause {
            return status(for: cause, method: method, logger: logger)
        }
        return refusal.withBoundedMessage
    }

    /// The status an error is answered with.
    static func status(for error: any Error, method: String, logger: Logger) -> RPCError {
        switch error {
        case is RPCError, is any RPCErrorConvertible:
            return RPCError(answering: error)
        case is CancellationError:
            return RPCError(code: .cancelled, message: "the call was cancelled")
        case let database as PSQLError where isTransient(database):
            logger.warning(
                "a call failed on the database",
                metadata: ["method": "\(method)", "error": "\(String(reflecting: database))"])
            return RPCError(code: .unavailable, message: "the service's database did not answer; retry")
        case let pool as ConnectionPoolError where pool != .requestCancelled:
            // No connection could be made for a while (the database is down or unreachable), or the service is
            // shutting down: another try, or another replica, may succeed.
            logger.warning(
                "a call found no database connection",
                metadata: ["method": "\(method)", "error": "\(String(reflecting: pool))"])
            return RPCError(code: .unavailable, message: "the service's database cannot be reached now; retry")
        case let pool as ConnectionPoolError where pool == .requestCancelled:
            return RPCError(code: .cancelled, message: "the call was cancelled")
        case let channel as ChannelError where [.ioOnClosedChannel, .alreadyClosed, .outputClosed].contains(channel):
            // The caller went away while its stream was being answered (a watch it closed): no incident.
            logger.debug("a call's caller went away", metadata: ["method": "\(method)"])
            return RPCError(code: .cancelled, message: "the caller closed the call")
        default:
            let incident = UUID().uuidString.prefix(8).lowercased()
            logger.error(
                "a call failed with an unexpected error",
                metadata: ["method": "\(method)", "incident": "\(incident)", "error": "\(String(reflecting: error))"])
            return RPCError(
                code: .internalError, message: "an internal error (incident \(incident), in the service's log)")
        }
    }

    /// A database error that retrying may cure: the connection failed or closed, or the server says it is shutting
    /// down, out of resources, or the transaction lost a conflict. A statement the server refused is a bug: INTERNAL.
    static func isTransient(_ error: PSQLError) -> Bool {
        guard error.code == .server else { return true }
        let state = error.serverInfo?[.sqlState] ?? ""
        return ["08", "53", "57", "40"].contains { state.hasPrefix($0) }
    }
}
