public import Hummingbird
public import Logging
internal import NIOCore
public import Prometheus
internal import Synchronization

/// The HTTP listener for operators: Prometheus text at `GET /metrics` and liveness at `GET /healthz`.
public enum OperationsHTTPServer {
    /// Builds the application; `onBound` receives the bound port once it listens (port 0 picks a free one).
    public static func make(
        host: String,
        port: Int,
        metrics: PrometheusCollectorRegistry,
        health: HealthStatusBook,
        logger: Logger,
        routes: (Router<BasicRequestContext>) -> Void = { _ in },
        onBound: @escaping @Sendable (Int) async -> Void
    ) -> some ApplicationProtocol {
        let router = Router()
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
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                await onBound(channel.localAddress?.port ?? port)
            },
            logger: logger
        )
    }
}
