internal import Foundation
internal import Logging
internal import NIOCore
internal import OrreryAuth
internal import OrreryProto

/// What every ingress connection shares: where host names lead, who may call private ports, the limits, and how a
/// tunnel to a replica is opened.
struct IngressProxy: Sendable {
    let settings: IngressSettings
    let directory: IngressDirectory
    let authority: IngressAuthority
    let limits: IngressLimits
    let throttle: FailedAuthenticationThrottle
    let tunnels: ReplicaTunnels
    let logger: Logger

    /// Requests one connection may have forwarded and not yet answered (HTTP pipelining).
    static let pipelineDepth = 16
    /// How long a client has to send a request head once it began.
    static let headTimeout = Duration.seconds(30)
    /// How long a device has to connect a tunnel.
    static let openingLimit = Duration.seconds(10)

    /// A tunnel to a replica serving `entry`'s route, `first` its first bytes, its bytes going to `backend`.
    func openTunnel(to entry: IngressDirectory.Entry, backend: IngressBackend, first: Data) async throws(IngressAnswer)
        -> TunnelBroker.Session
    {
        do {
            return try await tunnels.open(
                entry.deployment, allocation: entry.route.allocation, port: entry.route.port, first: first,
                within: Self.openingLimit, deliver: { data in try await backend.deliver(data) }
            ).session
        } catch .noReplica(let reason) {
            throw IngressAnswer(status: 503, reason, headers: [("Retry-After", "5")])
        } catch {
            throw IngressAnswer(status: 502, error.description)
        }
    }
}

/// A response the ingress gives itself (an error, the session sign-in); the connection closes after it.
struct IngressAnswer: Error {
    let status: Int
    let message: String
    var headers: [(String, String)] = []

    init(status: Int, _ message: String, headers: [(String, String)] = []) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    /// The response's bytes.
    func bytes() -> ByteBuffer {
        let body = message + "\n"
        var buffer = ByteBuffer()
        buffer.writeString("HTTP/1.1 \(status) \(Self.reason(status))\r\n")
        buffer.writeString("Content-Type: text/plain; charset=utf-8\r\n")
        buffer.writeString("Content-Length: \(body.utf8.count)\r\n")
        buffer.writeString("Cache-Control: no-store\r\nConnection: close\r\n")
        for (name, value) in headers { buffer.writeString("\(name): \(value)\r\n") }
        buffer.writeString("\r\n")
        buffer.writeString(body)
        return buffer
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 303: "See Other"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 413: "Content Too Large"
        case 421: "Misdirected Request"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
    }
}
