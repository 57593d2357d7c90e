public import Hummingbird
internal import HummingbirdCore
internal import HummingbirdTLS
public import Logging
internal import GRPCCore
internal import NIOCore
internal import NIOSSL
public import Prometheus
internal import Synchronization

/// The HTTP listener for operators: Prometheus text at `GET /metrics` and liveness at `GET /healthz`.
public enum OperationsHTTPServer {
    /// How the listener treats its connections.
    public struct Limits: Sendable {
        /// Shared with the process's gRPC listener.
        public var budget: ConnectionBudget
        /// A connection with no request in progress for this long is closed (a request whose head never completes
        /// counts as none).
        public var idleTimeout: Duration

        public init(budget: ConnectionBudget, idleTimeout: Duration) {
            self.budget = budget
            self.idleTimeout = idleTimeout
        }
    }

    /// Builds the application; `onBound` receives the bound port once it listens (port 0 picks a free one).
    /// With `tls` (PEM certificate chain and key files) it serves HTTPS.
    /// - Throws: when the TLS files cannot be read.
    public static func make(
        host: String,
        port: Int,
        metrics: PrometheusCollectorRegistry,
        health: HealthStatusBook,
        logger: Logger,
        tls: (certificate: String, key: String)? = nil,
        limits: Limits = Limits(budget: ConnectionBudget(limit: 4096), idleTimeout: .seconds(120)),
        routes: (Router<OrreryRequestContext>) -> Void = { _ in },
        onBound: @escaping @Sendable (Int) async -> Void
    ) throws -> some ApplicationProtocol {
        let router = Router(context: OrreryRequestContext.self)
        router.add(middleware: UnroutedRequestMiddleware())
        routes(router)
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            metrics.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
        router.get("/healthz") { _, _ -> Response in
            let serving = health.overallStatus == .serving
            return Response(
                status: serving ? .ok : .serviceUnavailable,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: serving ? "ok\n" : "not serving\n"))
            )
        }
        let budget = limits.budget
        let http1 = HTTPServerBuilder.http1(
            configuration: .init(
                additionalChannelHandlers: [ConnectionBudgetHandler(budget: budget)],
                idleTimeout: TimeAmount(limits.idleTimeout)))
        let server: HTTPServerBuilder
        if let tls {
            let configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem)))
            server = try .tls(http1, tlsConfiguration: configuration)
        } else {
            server = http1
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                await onBound(channel.localAddress?.port ?? port)
            },
            logger: logger
        )
    }
}

/// Answers what no route serves with a JSON body a person can read: 405 with `Allow` for a known path asked with
/// another method (the gateway's methods are POST, /metrics and /healthz GET), 404 for an unknown path.
struct UnroutedRequestMiddleware: RouterMiddleware {
    typealias Context = OrreryRequestContext

    func handle(
        _ request: Request, context: OrreryRequestContext,
        next: (Request, OrreryRequestContext) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            let allowed: HTTPRequest.Method? =
                path == "/metrics" || path == "/healthz"
                ? .get : (path.hasPrefix("/orrery.") || path.hasPrefix("/grpc.")) && path.contains("/") ? .post : nil
            if let allowed, request.method != allowed {
                var response = JSONGateway.json(
                    .methodNotAllowed,
                    JSONGateway.errorBody(
                        RPCError(code: .unimplemented, message: "\(path) answers \(allowed.rawValue) only")))
                response.headers[.allow] = allowed.rawValue
                return response
            }
            return JSONGateway.json(
                .notFound,
                JSONGateway.errorBody(
                    RPCError(
                        code: .notFound,
                        message:
                            "nothing at \(path): gRPC methods are POST /<package>.<Service>/<Method>, with /metrics and /healthz"
                    )))
        }
    }
}
