internal import Foundation
internal import Logging
internal import NIOCore
internal import GRPCCore
internal import OrreryAuth
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// One client connection through the ingress. Requests are read one head at a time: the head names the route (by
/// Host), is authorised (private ports), rewritten (no `Authorization` or client-sent `X-Orrery-*` reaches the
/// service; a verified `X-Orrery-Caller` does) and forwarded over a tunnel to one replica — the same one for the
/// connection's life. Bodies pass through unchanged, only followed to find their ends; responses come back the same
/// way (`IngressBackend`). After a `101 Switching Protocols` (WebSocket) the connection is a byte stream both ways.
/// Whatever the ingress answers itself (errors, the cookie sign-in) goes out after every earlier response, and then
/// the connection closes.
final class IngressConnection {
    private let proxy: IngressProxy
    private let channel: any Channel
    private let outbound: any IngressClientOutput
    private let client: String
    private let peer: String
    private let secure: Bool

    private enum Mode {
        case head
        case body(HTTPBodyFramer, read: Int64, upgrade: Bool)
        case switched
    }

    private var mode = Mode.head
    private var buffer = ByteBuffer()
    private var entry: IngressDirectory.Entry?
    private var admitted: String?
    private var backend: IngressBackend?
    private var session: TunnelBroker.Session?
    private var watcher: Task<Void, Never>?
    private var headDeadline: Scheduled<Void>?

    /// - Parameters:
    ///   - client: The client's IP address (for X-Forwarded-For and the per-address limit).
    ///   - peer: The client's address in gRPC's form, for the failed-authentication throttle.
    init(
        proxy: IngressProxy, channel: any Channel, outbound: any IngressClientOutput,
        client: String, peer: String, secure: Bool
    ) {
        self.proxy = proxy
        self.channel = channel
        self.outbound = outbound
        self.client = client
        self.peer = peer
        self.secure = secure
    }

    /// Serves the connection until either side closes it.
    func run<Inbound: AsyncSequence<ByteBuffer, any Error>>(_ inbound: Inbound) async {
        defer { finish() }
        do {
            for try await chunk in inbound {
                var chunk = chunk
                buffer.writeBuffer(&chunk)
                guard try await process() else { return }
            }
        } catch let answer as IngressAnswer {
            await reply(answer)
            return
        } catch {
            return
        }
        // The client closed its side: the service's side is half-closed too, and its responses still come back.
        guard let session, let backend, !backend.isEnded else { return }
        try? await session.toDevice.write(.with { $0.end = true })
        await session.waitUntilDeviceEnded()
    }

    /// Handles what the buffer holds; false once the connection is to close.
    private func process() async throws -> Bool {
        while buffer.readableBytes > 0 {
            if backend?.isEnded == true { return false }
            switch mode {
            case .switched:
                try await forward(buffer)
                buffer.clear()
            case .body(var framer, let read, let upgrade):
                let slice: ByteBuffer
                do {
                    slice = try framer.take(from: &buffer)
                } catch {
                    throw IngressAnswer(status: error.status, error.description)
                }
                let total = read + Int64(slice.readableBytes)
                // A chunked body over the limit (a declared length over it was refused before): the request is
                // half-sent already, so the connection just ends.
                guard total <= proxy.settings.maximumBodyBytes else { return false }
                try await forward(slice)
                guard framer.isDone else {
                    mode = .body(framer, read: total, upgrade: upgrade)
                    continue
                }
                mode = .head
                if upgrade { try await awaitUpgrade() }
            case .head:
                let head: HTTPMessageHead?
                do {
                    head = try HTTPMessageHead.take(from: &buffer)
                } catch {
                    throw IngressAnswer(status: error.status, error.description)
                }
                guard let head else {
                    startHeadDeadline()
                    return true
                }
                headDeadline?.cancel()
                headDeadline = nil
                let (length, upgrade) = try await forward(head)
                let framer = HTTPBodyFramer(length)
                if framer.isDone {
                    if upgrade { try await awaitUpgrade() }
                } else {
                    mode = .body(framer, read: 0, upgrade: upgrade)
                }
            }
        }
        return true
    }

    /// After an upgrade request went out whole: a byte stream both ways once the service switched, else HTTP on.
    private func awaitUpgrade() async throws {
        guard let backend else { return }
        if await backend.waitForUpgrade() {
            mode = .switched
            if buffer.readableBytes > 0 {
                try await forward(buffer)
                buffer.clear()
            }
        }
    }

    /// Checks, rewrites and forwards one request head; how its body is delimited and whether it asks to upgrade.
    private func forward(_ head: HTTPMessageHead) async throws -> (HTTPBodyLength, Bool) {
        guard head.third == "HTTP/1.1" || head.third == "HTTP/1.0" else {
            throw IngressAnswer(status: 505, "HTTP/1.1 or HTTP/1.0 only")
        }
        guard head.first.utf8.allSatisfy(HTTPMessageHead.isTokenCharacter) else {
            throw IngressAnswer(status: 400, "the method is not a token")
        }
        guard head.first != "CONNECT" else { throw IngressAnswer(status: 405, "the ingress is not a forward proxy") }
        guard head.second.hasPrefix("/") || (head.second == "*" && head.first == "OPTIONS") else {
            throw IngressAnswer(status: 400, "the request target must be a path (origin-form)")
        }
        let hosts = head.values("Host")
        guard hosts.count == 1, let host = hosts.first, let label = proxy.directory.label(ofHost: host) else {
            throw IngressAnswer(
                status: 404, "no service is served at this host name here (one Host: <label>.\(proxy.directory.domain))"
            )
        }
        if let entry, entry.route.label != label {
            throw IngressAnswer(status: 421, "this connection is for \(entry.route.label); open another one")
        }
        let entry = try await route(label)
        let length: HTTPBodyLength
        do {
            length = try head.requestBodyLength()
        } catch {
            throw IngressAnswer(status: error.status, error.description)
        }
        if case .bytes(let count) = length, count > proxy.settings.maximumBodyBytes {
            throw IngressAnswer(status: 413, "a request body may have at most \(proxy.settings.maximumBodyBytes) bytes")
        }
        let hostName = host.lowercased().split(separator: ":").first.map(String.init) ?? host
        var caller: String?
        // A private port's callers prove who they are first (failures are throttled per address): nobody else can
        // spend its deployment's request allowance.
        if entry.route.isPrivate {
            if head.second == "/.orrery/session" || head.second.hasPrefix("/.orrery/session?") {
                throw signIn(head, route: entry.route, host: hostName)
            }
            caller = try authenticate(head, route: entry.route, host: hostName)
        }
        if let wait = proxy.limits.takeRequest(of: entry.route.deploymentID) {
            throw IngressAnswer(
                status: 429,
                "\(entry.route.deploymentID) gets at most \(Int(proxy.limits.requestsPerSecond)) requests a second here",
                headers: [("Retry-After", "\(max(1, Int(wait.rounded(.up))))")])
        }
        let upgrade = !head.values("Upgrade").isEmpty && head.tokens("Connection").contains("upgrade")
        var rewritten = Self.rewrite(
            head, caller: caller, upgrade: upgrade, isPrivate: entry.route.isPrivate, client: client, secure: secure)
        rewritten.fields.append(("X-Forwarded-Host", hostName))
        var bytes = ByteBuffer()
        rewritten.write(to: &bytes)
        let request = HTTPResponseTracker.Request(method: head.first, upgrade: upgrade)
        if let backend {
            await backend.waitUntilFewerPending(than: Self.pipelineDepthLimit)
            backend.expect(request)
            try await forward(bytes)
        } else {
            try await connect(entry, first: request, bytes: bytes)
        }
        return (length, upgrade)
    }

    private static let pipelineDepthLimit = IngressProxy.pipelineDepth

    /// The route `label` leads to; the connection's first also counts against its deployment's connections.
    private func route(_ label: String) async throws -> IngressDirectory.Entry {
        if let entry { return entry }
        let found: IngressDirectory.Entry?
        do {
            found = try await proxy.directory.entry(forLabel: label)
        } catch is IngressDirectoryBusy {
            throw IngressAnswer(status: 503, "the ingress is busy; try again", headers: [("Retry-After", "1")])
        } catch {
            proxy.logger.warning("ingress could not read a route", metadata: ["error": "\(error)"])
            throw IngressAnswer(status: 503, "the ingress cannot read its routes now", headers: [("Retry-After", "5")])
        }
        guard let found else {
            throw IngressAnswer(
                status: 404,
                "no exposed port has the host name \(label).\(proxy.directory.domain) (or its deployment ended)")
        }
        guard proxy.limits.admitConnection(to: found.route.deploymentID) else {
            throw IngressAnswer(
                status: 503,
                "\(found.route.deploymentID) has \(proxy.limits.connectionsPerDeployment) connections open through this ingress already",
                headers: [("Retry-After", "5")])
        }
        admitted = found.route.deploymentID
        entry = found
        return found
    }

    /// The tunnel of this connection, opened to a replica for its first request (`bytes`, the rewritten head),
    /// which rides with the opening.
    private func connect(
        _ entry: IngressDirectory.Entry, first request: HTTPResponseTracker.Request, bytes: ByteBuffer
    ) async throws {
        let backend = IngressBackend(toClient: outbound)
        backend.expect(request)
        let session = try await proxy.openTunnel(to: entry, backend: backend, first: Data(bytes.readableBytesView))
        self.backend = backend
        self.session = session
        // When the service's side ends, the client's does too (after every byte the service sent).
        let outbound = outbound
        watcher = Task {
            await session.waitUntilDeviceEnded()
            backend.end()
            outbound.finish()
        }
        channel.closeFuture.whenComplete { _ in backend.end() }
    }

    /// The caller of a private port: a `Bearer` capability, else the session cookie.
    private func authenticate(_ head: HTTPMessageHead, route: IngressRoute, host: String) throws -> String {
        if let authorization = head.values("Authorization").first,
            let container = CapabilityInterceptor.bearerCredentials(authorization)
        {
            return try verify(container, route: route).did
        }
        if let cookie = Self.cookie(IngressAuthority.cookieName, in: head) {
            if let caller = proxy.authority.caller(cookie: cookie, host: host) { return caller }
            throw IngressAnswer(
                status: 401, "the session cookie has expired or is not valid here: sign in again",
                headers: Self.challenge)
        }
        throw IngressAnswer(
            status: 401,
            "this port is private: send 'Authorization: Bearer <invocation of \(IngressAuthority.command)>' "
                + "(`orrery ingress-token \(route.deploymentID)`), or sign in at /.orrery/session?token=<it>",
            headers: Self.challenge)
    }

    private static let challenge = [("WWW-Authenticate", "Bearer realm=\"orrery\"")]

    private func verify(_ container: String, route: IngressRoute) throws -> IngressAuthority.Caller {
        if case .refuse(_, let retryAfter) = proxy.throttle.verdict(peer: peer) {
            throw IngressAnswer(
                status: 429, "too many invalid capabilities from your address",
                headers: [("Retry-After", "\(Int(retryAfter.rounded(.up)))")])
        }
        do {
            let caller = try proxy.authority.caller(bearer: container, for: route)
            proxy.throttle.recordSuccess(peer: peer)
            return caller
        } catch {
            switch error {
            case .unauthenticated(let reason):
                proxy.throttle.recordFailure(peer: peer)
                throw IngressAnswer(status: 401, reason, headers: Self.challenge)
            case .forbidden(let reason):
                throw IngressAnswer(status: 403, reason)
            }
        }
    }

    /// `/.orrery/session?token=<container>&to=<path>`: a browser trades one invocation for a cookie of this host
    /// alone, and is sent on to `to` (a path on the same host; `/` by default).
    private func signIn(_ head: HTTPMessageHead, route: IngressRoute, host: String) -> IngressAnswer {
        let query = URLComponents(string: "http://x" + head.second)?.queryItems ?? []
        guard let token = query.first(where: { $0.name == "token" })?.value, !token.isEmpty else {
            return IngressAnswer(status: 400, "sign in with /.orrery/session?token=<invocation>&to=<path>")
        }
        let caller: IngressAuthority.Caller
        do {
            caller = try verify(token, route: route)
        } catch {
            return error as? IngressAnswer ?? IngressAnswer(status: 403, "\(error)")
        }
        let target = query.first(where: { $0.name == "to" })?.value ?? "/"
        let location =
            target.hasPrefix("/") && !target.hasPrefix("//") && !target.contains("\\")
                && target.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) ? target : "/"
        let cookie = proxy.authority.cookie(for: caller, host: host)
        let maxAge = max(0, cookie.expires - proxy.authority.clock())
        let attributes = "Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Lax\(secure ? "; Secure" : "")"
        return IngressAnswer(
            status: 303, "signed in as \(caller.did)",
            headers: [
                ("Location", location), ("Set-Cookie", "\(IngressAuthority.cookieName)=\(cookie.value); \(attributes)"),
            ])
    }

    /// The value of cookie `name` among the request's Cookie fields.
    static func cookie(_ name: String, in head: HTTPMessageHead) -> String? {
        for field in head.values("Cookie") {
            for pair in field.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0].trimmingHTTPWhitespace() == name {
                    return parts[1].trimmingHTTPWhitespace()
                }
            }
        }
        return nil
    }

    /// Hop-by-hop fields, fields a client could forge the ingress's word with, and (private ports) its credentials
    /// go; what the ingress vouches for comes in.
    static func rewrite(
        _ head: HTTPMessageHead, caller: String?, upgrade: Bool, isPrivate: Bool, client: String, secure: Bool
    ) -> HTTPMessageHead {
        // Fields the Connection field names are hop-by-hop too — except those the framing depends on.
        let named = Set(head.tokens("Connection")).subtracting(["content-length", "transfer-encoding", "host"])
        var rewritten = head
        rewritten.fields = head.fields.compactMap { field in
            let name = field.name.lowercased()
            if hopByHop.contains(name) || named.contains(name) || name.hasPrefix("x-orrery-")
                || name.hasPrefix("x-forwarded-") || name == "forwarded"
            {
                return nil
            }
            if isPrivate && name == "authorization" { return nil }
            if isPrivate && name == "cookie" {
                let kept = field.value.split(separator: ";").filter {
                    $0.split(separator: "=", maxSplits: 1).first?.trimmingHTTPWhitespace()
                        != IngressAuthority.cookieName
                }.map { $0.trimmingHTTPWhitespace() }
                return kept.isEmpty ? nil : (field.name, kept.joined(separator: "; "))
            }
            return field
        }
        if upgrade {
            rewritten.fields.append(("Connection", "Upgrade"))
            rewritten.fields += head.values("Upgrade").map { ("Upgrade", $0) }
        } else if head.tokens("Connection").contains("close")
            || (head.third == "HTTP/1.0" && !head.tokens("Connection").contains("keep-alive"))
        {
            rewritten.fields.append(("Connection", "close"))
        }
        rewritten.fields.append(("X-Forwarded-For", client))
        rewritten.fields.append(("X-Forwarded-Proto", secure ? "https" : "http"))
        if let caller { rewritten.fields.append(("X-Orrery-Caller", caller)) }
        return rewritten
    }

    private static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer",
        "upgrade",
    ]

    /// Bytes for the service, in frames of at most 64 KiB.
    private func forward(_ bytes: ByteBuffer) async throws {
        guard let session else { return }
        var bytes = bytes
        while let slice = bytes.readSlice(length: min(bytes.readableBytes, 64 << 10)), slice.readableBytes > 0 {
            try await session.toDevice.write(.with { $0.data = Data(slice.readableBytesView) })
        }
    }

    /// Answers the client itself, after every response already under way, and closes.
    private func reply(_ answer: IngressAnswer) async {
        if let backend {
            guard await backend.waitUntilAnswered() || backend.pendingCount == 0 else { return }
        }
        try? await outbound.write(answer.bytes())
        outbound.finish()
    }

    private func startHeadDeadline() {
        guard headDeadline == nil else { return }
        let channel = channel
        headDeadline = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(Self.headTimeoutNanoseconds))) {
            channel.close(promise: nil)
        }
    }

    private static let headTimeoutNanoseconds = IngressProxy.headTimeout.components.seconds * 1_000_000_000

    private func finish() {
        headDeadline?.cancel()
        watcher?.cancel()
        session?.close()
        backend?.end()
        if let admitted { proxy.limits.releaseConnection(to: admitted) }
    }
}
