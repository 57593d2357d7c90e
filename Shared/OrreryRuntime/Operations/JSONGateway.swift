internal import Foundation
public import GRPCCore
public import Hummingbird
public import Logging
internal import NIOCore
public import OrreryAuth
public import SwiftProtobuf

/// gRPC methods over HTTP with JSON, for curl: `POST /<package>.<Service>/<Method>` with
/// `Content-Type: application/json` (the proto3 JSON mapping), the unary convention of the Connect protocol;
/// server-streaming methods answer newline-delimited JSON. The `authorization` header carries the same
/// `Bearer <UCAN container>` as gRPC metadata and goes through the same capability check. A gRPC status
/// becomes an HTTP status in `httpStatus(for:)`, the one place they are mapped, with a body
/// `{"code": "not_found", "message": "…"}`.
public struct JSONGateway: Sendable {
    let authorizer: CapabilityInterceptor
    let logger: Logger
    /// The service's database, when it has one: calls are refused with UNAVAILABLE (503) while it does not answer.
    let database: DatabaseWatch?

    public init(authorizer: CapabilityInterceptor, logger: Logger, database: DatabaseWatch? = nil) {
        self.authorizer = authorizer
        self.logger = logger
        self.database = database
    }

    /// The largest request body read.
    public static let maximumBody = 4 << 20

    /// Serves a unary method; `handler` runs with `Authorization.current` set as in a gRPC handler.
    public func unary<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message & Sendable>(
        _ router: Router<OrreryRequestContext>, method: String, _: Request.Type,
        _ handler: @escaping @Sendable (Request) async throws -> Response
    ) {
        router.post(RouterPath(stringLiteral: "/\(method)")) { httpRequest, context -> Response_ in
            do {
                let (request, authorization): (Request, Authorization?) = try await self.accept(
                    httpRequest, context: context, method: method)
                let response = try await Authorization.$current.withValue(authorization) { try await handler(request) }
                return Self.json(.ok, try response.jsonString() + "\n")
            } catch {
                return self.failure(error, method: method)
            }
        }
    }

    /// Serves a server-streaming method as newline-delimited JSON; an error after the first message ends the
    /// stream with a final `{"error": {…}}` line.
    public func serverStreaming<Request: SwiftProtobuf.Message & Sendable, Message: SwiftProtobuf.Message & Sendable>(
        _ router: Router<OrreryRequestContext>, method: String, _: Request.Type,
        _ handler: @escaping @Sendable (Request, _ send: (Message) async throws -> Void) async throws -> Void
    ) {
        router.post(RouterPath(stringLiteral: "/\(method)")) { httpRequest, context -> Response_ in
            let request: Request
            let authorization: Authorization?
            do {
                (request, authorization) = try await self.accept(httpRequest, context: context, method: method)
            } catch {
                return self.failure(error, method: method)
            }
            let body = ResponseBody { writer in
                do {
                    try await Authorization.$current.withValue(authorization) {
                        try await handler(request) { message in
                            try await writer.write(ByteBuffer(string: try message.jsonString() + "\n"))
                        }
                    }
                } catch {
                    let status = RPCError(answering: error)
                    try await writer.write(
                        ByteBuffer(string: "{\"error\": \(Self.errorBody(status).trimmingCharacters(in: .newlines))}\n")
                    )
                }
                try await writer.finish(nil)
            }
            return Response_(status: .ok, headers: [.contentType: "application/x-ndjson"], body: body)
        }
    }

    typealias Response_ = Hummingbird.Response

    private func accept<Request: SwiftProtobuf.Message>(
        _ httpRequest: Request_, context: OrreryRequestContext, method: String
    ) async throws -> (Request, Authorization?) {
        let contentType = httpRequest.headers[.contentType] ?? ""
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        guard mediaType == "application/json" else {
            throw GatewayRefusal(
                status: .unsupportedMediaType,
                error: RPCError(
                    code: .invalidArgument, message: "Content-Type must be application/json, got '\(contentType)'"))
        }
        if let database, !database.isReachable { throw DatabaseWatch.refusal }
        // The capability first: an unauthenticated caller costs no body read or JSON decoding.
        let authorization = try await authorizer.authorizeCaller(
            authorizationHeader: httpRequest.headers[.authorization], method: method, peer: context.remotePeer)
        let buffer: ByteBuffer
        do {
            buffer = try await httpRequest.body.collect(upTo: Self.maximumBody)
        } catch is NIOTooManyBytesError {
            throw GatewayRefusal(
                status: .contentTooLarge,
                error: RPCError(
                    code: .resourceExhausted, message: "the body is larger than \(Self.maximumBody) bytes"))
        } catch {
            throw RPCError(code: .invalidArgument, message: "the body could not be read: \(error)")
        }
        let request = try JSONRequestReader(schemas: authorizer.schemas).read(
            buffer.readableBytesView, as: Request.self)
        try authorizer.checkRequest(request, method: method, authorization: authorization)
        return (request, authorization)
    }

    typealias Request_ = Hummingbird.Request

    private func failure(_ error: any Error, method: String) -> Response_ {
        if let refusal = error as? GatewayRefusal {
            return Self.json(refusal.status, Self.errorBody(refusal.error))
        }
        let status = RPCError(answering: error)
        if status.code == .internalError || status.code == .unknown {
            logger.error("JSON gateway call failed", metadata: ["method": "\(method)", "error": "\(error)"])
        }
        return Self.json(Self.httpStatus(for: status.code), Self.errorBody(status))
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response_ {
        Response_(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// `{"code": "invalid_argument", "message": "…"}`.
    static func errorBody(_ error: RPCError) -> String {
        let message = error.withBoundedMessage.message.unicodeScalars.map { scalar -> String in
            switch scalar {
            case "\"": return "\\\""
            case "\\": return "\\\\"
            case "\n": return "\\n"
            case _ where scalar.value < 0x20: return String(format: "\\u%04x", scalar.value)
            default: return String(scalar)
            }
        }.joined()
        return "{\"code\": \"\(codeName(error.code))\", \"message\": \"\(message)\"}\n"
    }

    /// The gRPC status code as Connect names it.
    public static func codeName(_ code: RPCError.Code) -> String {
        switch code {
        case .cancelled: "canceled"
        case .unknown: "unknown"
        case .invalidArgument: "invalid_argument"
        case .deadlineExceeded: "deadline_exceeded"
        case .notFound: "not_found"
        case .alreadyExists: "already_exists"
        case .permissionDenied: "permission_denied"
        case .resourceExhausted: "resource_exhausted"
        case .failedPrecondition: "failed_precondition"
        case .aborted: "aborted"
        case .outOfRange: "out_of_range"
        case .unimplemented: "unimplemented"
        case .internalError: "internal"
        case .unavailable: "unavailable"
        case .dataLoss: "data_loss"
        case .unauthenticated: "unauthenticated"
        default: "unknown"
        }
    }

    /// The HTTP status for a gRPC status, as the Connect protocol maps them.
    public static func httpStatus(for code: RPCError.Code) -> HTTPResponse.Status {
        switch code {
        case .cancelled: .init(code: 499, reasonPhrase: "Client Closed Request")
        case .invalidArgument, .failedPrecondition, .outOfRange: .badRequest
        case .deadlineExceeded: .gatewayTimeout
        case .notFound: .notFound
        case .alreadyExists, .aborted: .conflict
        case .permissionDenied: .forbidden
        case .resourceExhausted: .tooManyRequests
        case .unimplemented: .notImplemented
        case .unavailable: .serviceUnavailable
        case .unauthenticated: .unauthorized
        default: .internalServerError
        }
    }
}

/// A refusal whose HTTP status is not the one its gRPC code maps to (415 for a wrong media type, 413 for a body too
/// large).
struct GatewayRefusal: Error {
    let status: HTTPResponse.Status
    let error: RPCError
}
