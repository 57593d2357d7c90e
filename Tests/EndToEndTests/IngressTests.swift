import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// The ingress end to end: a real HTTP service in a real sandbox, reached by curl and Python through the
/// orchestrator's ingress listener by its host name (`curl --resolve`), over the device's own outbound line.
@Suite(
    "Ingress: HTTP to services by host name over the devices' lines", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct IngressTests {
    static let domain = "apps.test"
    static let ingressArguments = [
        "--ingress-host", "127.0.0.1", "--ingress-port", "0", "--ingress-domain", domain,
    ]

    /// A service on 127.0.0.1:8080 (public) and 8081 (private) inside the sandbox: `/headers` answers with the
    /// request's header fields and `/work/where`; POST answers with the body's sha256 (its length stated or
    /// chunked); `/big` streams 256 MiB (`/big/N`: N MiB); `/stream` 64 KiB chunked, with their sha256 as a trailer; `/ws` is a
    /// WebSocket echo.
    static let server = #"""
        #!/bin/sh
        cat > /work/serve.py <<'EOF'
        import base64, hashlib, http.server, json, os, threading
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args): pass
            def reply(self, code, body, kind="application/json"):
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            def do_GET(self):
                if self.path == "/ok":
                    if os.path.exists("/work/broken"): return self.reply(503, "broken", "text/plain")
                    return self.reply(200, "ok", "text/plain")
                if self.path == "/headers":
                    try: where = open("/work/where").read().strip()
                    except OSError: where = ""
                    return self.reply(200, json.dumps({"port": self.server.server_port, "where": where,
                        "headers": [[k, v] for k, v in self.headers.items()]}))
                if self.path == "/big" or self.path.startswith("/big/"):
                    mib = int(self.path[5:] or "256")
                    self.send_response(200)
                    self.send_header("Content-Length", str(mib << 20))
                    self.end_headers()
                    block = b"x" * (1 << 20)
                    for _ in range(mib): self.wfile.write(block)
                    return
                if self.path == "/stream":
                    # A chunked response of 64 chunks of 1 KiB each, then a trailer with their sha256.
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Trailer", "X-Sha256")
                    self.end_headers()
                    digest = hashlib.sha256()
                    for i in range(64):
                        chunk = bytes([65 + i % 26]) * 1024
                        digest.update(chunk)
                        self.wfile.write(b"400\r\n" + chunk + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\nX-Sha256: " + digest.hexdigest().encode() + b"\r\n\r\n")
                    return
                if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
                    accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"]
                        + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                    self.send_response(101)
                    self.send_header("Upgrade", "websocket")
                    self.send_header("Connection", "Upgrade")
                    self.send_header("Sec-WebSocket-Accept", accept)
                    self.end_headers()
                    self.wfile.flush()
                    while True:
                        head = self.rfile.read(2)
                        if len(head) < 2: return
                        opcode, length = head[0] & 15, head[1] & 127
                        if length == 126: length = int.from_bytes(self.rfile.read(2), "big")
                        elif length == 127: length = int.from_bytes(self.rfile.read(8), "big")
                        mask = self.rfile.read(4)
                        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
                        if opcode == 8:
                            self.wfile.write(b"\x88\x00"); self.wfile.flush(); return
                        size = bytes([length]) if length < 126 else (bytes([126]) + length.to_bytes(2, "big")
                            if length < 65536 else bytes([127]) + length.to_bytes(8, "big"))
                        self.wfile.write(bytes([128 | opcode]) + size + data); self.wfile.flush()
                self.reply(404, "{}")
            def do_POST(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""): pass
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.reply(200, json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
                    "chunked": self.headers.get("Transfer-Encoding", "").lower() == "chunked"}))
        for port in (8081, 8080):
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        print("serving", flush=True)
        threading.Event().wait()
        EOF
        exec python3 /work/serve.py
        """#

    /// A WebSocket client (`ws PORT HOST`: a text and a 200 KiB binary message echoed) and a slow reader (`slow PORT
    /// HOST`: a 256 MiB download left unread while 20 other requests, each on its own connection, are answered).
    static let client = #"""
        import base64, json, os, socket, sys, time
        mode, port, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        def connect():
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            return s
        def head_of(s):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(1)
                if not chunk: raise SystemExit("closed before a head: " + repr(data))
                data += chunk
            return data.decode()
        def exact(s, n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk: raise SystemExit("closed early")
                data += chunk
            return data
        if mode == "ws":
            s = connect()
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            head = head_of(s)
            assert head.startswith("HTTP/1.1 101"), head
            for opcode, payload in ((1, "hello through the ingress".encode()), (2, os.urandom(200 << 10))):
                mask = os.urandom(4)
                n = len(payload)
                size = bytes([128 | n]) if n < 126 else (bytes([128 | 126]) + n.to_bytes(2, "big") if n < 65536
                    else bytes([128 | 127]) + n.to_bytes(8, "big"))
                s.sendall(bytes([128 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                first = exact(s, 2)
                n2 = first[1] & 127
                if n2 == 126: n2 = int.from_bytes(exact(s, 2), "big")
                elif n2 == 127: n2 = int.from_bytes(exact(s, 8), "big")
                echoed = exact(s, n2)
                assert first[0] & 15 == opcode and echoed == payload, (first, len(echoed))
                print("echoed", opcode, n2, flush=True)
            s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
            assert exact(s, 2) == b"\x88\x00"
            print("closed", flush=True)
        elif mode == "slow":
            stalled = connect()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(f"GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert head_of(stalled).startswith("HTTP/1.1 200")
            time.sleep(2)
            started = time.monotonic()
            for i in range(20):
                s = connect()
                s.sendall(f"GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                s.close()
            print(f"answered 20 while one stalled, {time.monotonic() - started:.2f} s", flush=True)
            stalled.close()
        elif mode == "h2":
            # `h2 PORT HOST`: one HTTP/2 connection (Python's h2, by prior knowledge). Its first stream asks for /big
            # (256 MiB) and is never read past its window; 8 more ask for /headers at once: each is answered whole
            # while the first stays stalled.
            import h2.config, h2.connection, h2.events
            s = connect()
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.increment_flow_control_window(1 << 30)  # the connection's window: only the stream's own stalls
            def ask(path):
                stream = conn.get_next_available_stream_id()
                conn.send_headers(stream, [(":method", "GET"), (":path", path), (":scheme", "http"),
                    (":authority", f"{host}:{port}")], end_stream=True)
                return stream
            big = ask("/big")
            others = [ask("/headers") for _ in range(8)]
            s.sendall(conn.data_to_send())
            statuses, bodies, ended, stalled = {}, {}, set(), 0
            while len(ended) < len(others):
                data = s.recv(65536)
                if not data: raise SystemExit(f"closed; answered {sorted(ended)}")
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        if event.stream_id == big:
                            stalled += len(event.data)
                        else:
                            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                    elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        raise SystemExit(f"reset: {event}")
                s.sendall(conn.data_to_send())
            assert all(statuses.get(i) == b"200" for i in others), statuses
            assert all(json.loads(bodies[i])["port"] == 8080 for i in others)
            assert big not in ended and stalled < (256 << 20), stalled
            print(f"answered {len(others)} on one connection while one stalled after {stalled} bytes", flush=True)
        elif mode == "h2window":
            # `h2window PORT HOST`: HTTP/2 with a stream window of 0 bytes, so the service's whole response (and its
            # end) waits in the ingress; opened a second later, the response comes whole and ends (not reset).
            import h2.config, h2.connection, h2.events, h2.settings
            s = connect()
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, [(":method", "GET"), (":path", "/headers"), (":scheme", "http"),
                (":authority", f"{host}:{port}")], end_stream=True)
            s.sendall(conn.data_to_send())
            body, opened, ended = b"", False, False
            s.settimeout(1)
            while not ended:
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    if opened: raise SystemExit(f"nothing more after the window opened; {len(body)} bytes")
                    assert not body, "data came through a closed window"
                    conn.increment_flow_control_window(1 << 20, stream)
                    s.sendall(conn.data_to_send())
                    opened = True
                    s.settimeout(60)
                    continue
                if not data: raise SystemExit(f"closed after {len(body)} bytes")
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        body += event.data
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                    elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        raise SystemExit(f"reset after {len(body)} bytes (window opened: {opened}): {event}")
                s.sendall(conn.data_to_send())
            assert opened and json.loads(body)["port"] == 8080, body[:200]
            print(f"ended whole after its window opened: {len(body)} bytes", flush=True)
        elif mode == "limit":
            # `limit PORT HOST N`: N + 50 connections, each with a request's head but its last line: the ingress
            # closes 50 of them unanswered (which 50 depends on the order it takes them in) and keeps N waiting; those
            # N, their heads ended, are answered. Once all close, a new connection is answered again.
            import select
            limit = int(sys.argv[4])
            sockets = [connect() for _ in range(limit + 50)]
            for s in sockets:
                s.sendall(f"GET /none HTTP/1.1\r\nHost: {host}\r\n".encode())
            open_ones, deadline = set(sockets), time.monotonic() + 60
            while len(open_ones) > limit and time.monotonic() < deadline:
                readable, _, _ = select.select(list(open_ones), [], [], 1)
                for s in readable:
                    try:
                        data = s.recv(1)
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", f"a connection past the limit was answered: {data!r}"
                    open_ones.discard(s)
            assert len(open_ones) == limit, f"{len(open_ones)} open after 60 s"
            for s in open_ones:
                s.sendall(b"\r\n")
                assert head_of(s).startswith("HTTP/1.1 404"), "a kept connection is answered"
            for s in sockets: s.close()
            for attempt in range(100):
                s = connect()
                s.sendall(f"GET /none HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                try:
                    if s.recv(12).startswith(b"HTTP/1.1 404"): break
                except ConnectionResetError:
                    pass
                s.close()
                time.sleep(0.1)
            else:
                raise SystemExit("no connection answered after the others closed")
            print("limited", flush=True)
        elif mode == "loop":
            # New TLS connections, one request each, until 5 in a row answer from `sys.argv[5]` (or 180 s pass).
            import ssl
            context = ssl.create_default_context(cafile=sys.argv[4])
            run, deadline = 0, time.monotonic() + 180
            while run < 5 and time.monotonic() < deadline:
                try:
                    s = context.wrap_socket(connect(), server_hostname=host)
                    s.sendall(f"GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk: break
                        data += chunk
                    s.close()
                    status = data.split(b" ", 2)[1].decode()
                    where = json.loads(data.split(b"\r\n\r\n", 1)[1])["where"] if status == "200" else status
                except (OSError, ValueError, IndexError) as error:
                    where = f"failed: {error}"
                run = run + 1 if where == sys.argv[5] else 0
                print(where, flush=True)
                time.sleep(0.1)
        """#

    @Test(
        "a public port by its host name (spoofed X-Orrery-* stripped, bodies both ways, WebSocket echo, a stalled reader stalling nobody else); a private one refused without a capability, served with one or its cookie, the caller named by the ingress"
    )
    func publicAndPrivate() async throws {
        try await JobConstellation.run("orrery-ingress", orchestratorArguments: Self.ingressArguments) {
            constellation in
            let network = constellation.network
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let agent = try await constellation.startAgent("host", owner: #"{"prices": {"per_core_hour": 5}}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)

            let job = try await consumer.submit(Self.spec(), to: orchestrator, paid: false)
            #expect(job.routes.map(\.portName) == ["http", "admin"])
            _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running and healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy
            }
            let deployment = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = job.id })
            }
            let routes = deployment.routes
            let suffix = job.id.dropFirst(4)
            #expect(routes.map(\.label) == ["web-http-\(suffix)", "web-admin-\(suffix)"])
            #expect(routes.map(\.expose) == [.public, .private])
            let publicRoute = try #require(routes.first)
            let privateRoute = try #require(routes.last)
            #expect(publicRoute.host == "web-http-\(suffix).\(Self.domain)")
            let port = try #require(URLComponents(string: publicRoute.url)?.port)
            #expect(publicRoute.url == "http://\(publicRoute.host):\(port)/")
            let curl = Curl(port: port, directory: directory)

            // Public: anyone; what the client claims about the caller does not reach the service.
            let seen = try await curl.json(
                publicRoute.host, "/headers",
                headers: [
                    "X-Orrery-Caller: did:key:forged", "Authorization: Bearer theirs", "X-Forwarded-For: 6.6.6.6",
                ])
            let fields = Self.fields(seen)
            #expect(fields["x-orrery-caller"] == nil, "\(fields)")
            #expect(fields["authorization"] == "Bearer theirs")
            #expect(fields["x-forwarded-for"] == "127.0.0.1" && fields["x-forwarded-proto"] == "http")
            #expect(fields["host"] == "\(publicRoute.host):\(port)")
            // A 3 MiB body up, and a 64 MiB body down (far more than any window or buffer on its way), byte for
            // byte; its time is not what this test is about (a loaded test machine moves it at a few MiB/s).
            let upload = directory.appendingPathComponent("upload.bin")
            let bytes = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            try bytes.write(to: upload)
            let posted = try await curl.json(publicRoute.host, "/", extra: ["--data-binary", "@\(upload.path)"])
            #expect(posted["sha256"] as? String == Hex.sha256(bytes) && posted["size"] as? Int == bytes.count)
            let (downloaded, _) = try await curl.run(
                publicRoute.host, "/big/64",
                extra: ["--max-time", "600", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
            #expect(downloaded == "200 \(64 << 20)")
            // Not a host name of this ingress, or of no deployment: 404.
            let (unknown, _) = try await curl.run(
                "web-http-\(String(repeating: "a", count: 26)).\(Self.domain)", "/headers",
                extra: ["-o", "/dev/null", "-w", "%{http_code}"])
            #expect(unknown == "404")
            // Each of those three connections was handed to one of the device's standby tunnel calls, its request
            // riding along: none waited for a call to be opened.
            let metricsURL = try #require(URL(string: "http://127.0.0.1:\(orchestrator.ready.httpPort)/metrics"))
            let metrics = String(decoding: try await URLSession.shared.data(from: metricsURL).0, as: UTF8.self)
            let handed = metrics.split(separator: "\n").first {
                $0.hasPrefix(#"orrery_tunnels_opened_total{how="standby"}"#)
            }
            #expect(handed.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } } ?? 0 >= 3, "\(metrics)")

            // WebSocket through the ingress; a stalled reader stalls no other stream on the line.
            let script = directory.appendingPathComponent("client.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            let (wsStatus, wsOutput) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, "ws", String(port), publicRoute.host])
            #expect(
                wsStatus == 0 && wsOutput.contains("echoed 1 25") && wsOutput.contains("echoed 2 \(200 << 10)"),
                "\(wsOutput)")
            let (slowStatus, slowOutput) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, "slow", String(port), publicRoute.host])
            #expect(slowStatus == 0 && slowOutput.contains("answered 20 while one stalled"), "\(slowOutput)")

            // Private: refused without a capability, with a stranger's, or with one for another deployment.
            let orchestratorDID = try DID(orchestrator.ready.did)
            func token(_ key: SigningKey, subject: DID, deployment: String = job.id, proofs: [Delegation] = [])
                throws -> String
            {
                try Self.token(key, subject: subject, to: orchestratorDID, deployment: deployment, proofs: proofs)
            }
            let code = ["-o", "/dev/null", "-w", "%{http_code}"]
            #expect(try await curl.run(privateRoute.host, "/headers", extra: code).output == "401")
            let stranger = SigningKey()
            #expect(
                try await curl.run(
                    privateRoute.host, "/headers",
                    headers: ["Authorization: Bearer \(try token(stranger, subject: stranger.did))"], extra: code
                ).output == "403")
            #expect(
                try await curl.run(
                    privateRoute.host, "/headers",
                    headers: [
                        "Authorization: Bearer \(try token(consumer.key, subject: consumer.key.did, deployment: "dep_" + String(repeating: "a", count: 26)))"
                    ],
                    extra: code
                ).output == "403")
            // The consumer's own, and a friend's under the consumer's delegation: served, the caller named.
            let own = try await curl.json(
                privateRoute.host, "/headers",
                headers: [
                    "Authorization: Bearer \(try token(consumer.key, subject: consumer.key.did))",
                    "X-Orrery-Caller: did:key:forged",
                ])
            #expect(Self.fields(own)["x-orrery-caller"] == consumer.key.did.string)
            #expect(Self.fields(own)["authorization"] == nil)
            #expect(own["port"] as? Int == 8081)
            let friend = SigningKey()
            let delegation = Delegation.issue(
                by: consumer.key, to: friend.did, subject: consumer.key.did, command: try Command("/orrery/ingress"),
                expiration: Int64(Date().timeIntervalSince1970) + 3600)
            let friendToken = try token(friend, subject: consumer.key.did, proofs: [delegation])
            let friends = try await curl.json(
                privateRoute.host, "/headers", headers: ["Authorization: Bearer \(friendToken)"])
            #expect(Self.fields(friends)["x-orrery-caller"] == friend.did.string)
            // A browser trades the invocation for a cookie of this host, and is sent on.
            let jar = directory.appendingPathComponent("cookies.txt").path
            let escaped = friendToken.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            let (signIn, _) = try await curl.run(
                privateRoute.host, "/.orrery/session?token=\(escaped)&to=/headers",
                extra: ["-c", jar, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"])
            #expect(signIn == "303 http://\(privateRoute.host):\(port)/headers")
            let cookies = try String(contentsOfFile: jar, encoding: .utf8)
            #expect(cookies.contains("#HttpOnly_\(privateRoute.host)") && cookies.contains("orrery_session"))
            let withCookie = try await curl.json(
                privateRoute.host, "/headers", headers: ["Cookie: theirs=1"], extra: ["-b", jar])
            #expect(Self.fields(withCookie)["x-orrery-caller"] == friend.did.string)
            #expect(Self.fields(withCookie)["cookie"]?.contains("orrery_session") == false)
            // The cookie is this host's alone: on the public route it is nobody's word.
            let elsewhere = try await curl.json(
                publicRoute.host, "/headers",
                headers: ["Cookie: orrery_session=\(Self.cookieValue(cookies) ?? "")"])
            #expect(Self.fields(elsewhere)["x-orrery-caller"] == nil)

            // An ended deployment's host names lead nowhere.
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
            let ended = ContinuousClock.now + .seconds(60)
            var status = ""
            while ContinuousClock.now < ended {
                status = try await curl.run(publicRoute.host, "/headers", extra: code).output
                if status == "404" { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(status == "404")
        }
    }

    @Test(
        "HTTP/2 by prior knowledge: eight requests multiplexed on one connection while a ninth is not read, a response held by a closed stream window ended whole once it opens, a body of unstated length (chunked to the service), a chunked response unchunked with its trailer as the stream's trailer; a private port refused without a capability and served with one"
    )
    func http2() async throws {
        try await JobConstellation.run("orrery-ingress-h2", orchestratorArguments: Self.ingressArguments) {
            constellation in
            let orchestrator = constellation.orchestrator
            let directory = constellation.directory
            let agent = try await constellation.startAgent("host", owner: #"{"prices": {"per_core_hour": 5}}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            let job = try await consumer.submit(Self.spec(), to: orchestrator, paid: false)
            _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running and healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy
            }
            let routes = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = job.id })
            }.routes
            let publicRoute = try #require(routes.first)
            let privateRoute = try #require(routes.last)
            let port = try #require(URLComponents(string: publicRoute.url)?.port)
            let curl = Curl(port: port, directory: directory, extra: ["--http2-prior-knowledge"])

            // HTTP/2 to the client; the service sees the request as over HTTP/1.1, rewritten as ever.
            let version = try await curl.run(
                publicRoute.host, "/headers", extra: ["-o", "/dev/null", "-w", "%{http_version}"])
            #expect(version.output == "2", "\(version)")
            let seen = Self.fields(
                try await curl.json(publicRoute.host, "/headers", headers: ["X-Orrery-Caller: did:key:forged"]))
            #expect(seen["host"] == "\(publicRoute.host):\(port)", "\(seen)")
            #expect(seen["x-orrery-caller"] == nil && seen["x-forwarded-proto"] == "http", "\(seen)")

            // Eight requests at once on one connection (Python's h2), while a ninth on it is not read: it stalls alone.
            let script = directory.appendingPathComponent("client.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            let (multiplexed, multiplexedOutput) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, "h2", String(port), publicRoute.host])
            #expect(
                multiplexed == 0 && multiplexedOutput.contains("answered 8 on one connection while one stalled"),
                "\(multiplexedOutput)")

            // A client whose stream window is closed when the response ends gets it whole once it opens the window:
            // the stream is not reset while its last frames wait in the ingress.
            let (windowed, windowedOutput) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, "h2window", String(port), publicRoute.host])
            #expect(windowed == 0 && windowedOutput.contains("ended whole"), "\(windowedOutput)")

            // A body whose length the client does not state: chunked to the service, which gets it whole.
            let upload = directory.appendingPathComponent("upload.bin")
            let bytes = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) })
            try bytes.write(to: upload)
            let posted = try await curl.json(
                publicRoute.host, "/", headers: ["Content-Length:"], extra: ["--data-binary", "@\(upload.path)"])
            #expect(posted["sha256"] as? String == Hex.sha256(bytes) && posted["size"] as? Int == bytes.count)
            #expect(posted["chunked"] as? Bool == true, "\(posted)")

            // A chunked response comes unchunked, its trailer as the stream's trailer.
            let body = directory.appendingPathComponent("stream.bin")
            let dumped = directory.appendingPathComponent("stream.headers")
            let streamed = try await curl.run(
                publicRoute.host, "/stream", extra: ["-o", body.path, "-D", dumped.path, "-w", "%{http_code}"])
            #expect(streamed.output == "200", "\(streamed)")
            let received = try Data(contentsOf: body)
            #expect(received.count == 64 << 10)
            let heads = try String(contentsOf: dumped, encoding: .utf8).lowercased()
            #expect(heads.contains("x-sha256: \(Hex.sha256(received))"), "\(heads)")
            #expect(!heads.contains("transfer-encoding"), "\(heads)")

            // A private port: refused without a capability, served with the consumer's, the caller named.
            let code = ["-o", "/dev/null", "-w", "%{http_code}"]
            #expect(try await curl.run(privateRoute.host, "/headers", extra: code).output == "401")
            let token = try Self.token(
                consumer.key, subject: consumer.key.did, to: try DID(orchestrator.ready.did), deployment: job.id)
            let own = Self.fields(
                try await curl.json(privateRoute.host, "/headers", headers: ["Authorization: Bearer \(token)"]))
            #expect(own["x-orrery-caller"] == consumer.key.did.string && own["authorization"] == nil, "\(own)")
        }
    }

    @Test(
        "over TLS with the operator's wildcard certificate (HTTP/2 by ALPN): a replica moved to another device while a client keeps opening connections — new ones reach it where it runs now"
    )
    func movedReplica() async throws {
        try await ServiceBed.run("orrery-ingress-move") { bed in
            let directory = bed.directory
            let certificate = directory.appendingPathComponent("ingress.pem").path
            let key = directory.appendingPathComponent("ingress.key").path
            let (made, madeOutput) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/openssl"),
                arguments: [
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", certificate, "-days", "1", "-subj", "/CN=\(Self.domain)",
                    "-addext", "subjectAltName=DNS:*.\(Self.domain)",
                ])
            #expect(made == 0, "\(madeOutput)")
            let orchestrator = try await bed.startOrchestrator(
                extraArguments: Self.ingressArguments + ["--ingress-tls-cert", certificate, "--ingress-tls-key", key])
            defer { orchestrator.child.signal(SIGKILL) }
            let first = try await bed.startAgent(
                "first", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [orchestrator])
            defer { first.service.child.signal(SIGKILL) }
            let second = try await bed.startAgent(
                "second", owner: #"{"prices": {"per_core_hour": 5000}}"#, orchestrators: [orchestrator])
            defer { second.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)
            var spec = Self.spec()
            spec.allocations[0].health.unhealthyThreshold = 2
            spec.allocations[0].health.maxRestarts = 0
            // Placement prefers the cheaper first device, but a loaded machine may see its offer go to the second
            // (a line not yet open, a bid too late): the move is tested from wherever the replica starts.
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            let started = try await HealthCheckTests.until(job.id, consumer, orchestrator, "healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy
            }
            let (from, to) = started.deviceDid == first.did ? ("first", "second") : ("second", "first")
            let toDid = started.deviceDid == first.did ? second.did : first.did
            let fromRun = try await HealthCheckTests.allocationDirectory(of: from, in: directory)
            try Data(from.utf8).write(to: fromRun.appendingPathComponent("work/where"))
            let route = try #require(
                try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = job.id }) }.routes
                    .first)
            #expect(route.url.hasPrefix("https://\(route.host):"))
            let port = try #require(URLComponents(string: route.url)?.port)
            let curl = Curl(port: port, directory: directory, scheme: "https", extra: ["--cacert", certificate])
            #expect(try await curl.json(route.host, "/headers")["where"] as? String == from)
            #expect(Self.fields(try await curl.json(route.host, "/headers"))["x-forwarded-proto"] == "https")
            // HTTP/2 by ALPN, as a browser would ask for it.
            let negotiated = try await curl.run(
                route.host, "/headers", extra: ["--http2", "-o", "/dev/null", "-w", "%{http_version}"])
            #expect(negotiated.output == "2", "\(negotiated)")

            // A client opening a connection every 100 ms while its replica turns unhealthy and moves.
            let script = directory.appendingPathComponent("client.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            let caller = try ChildProcess(
                TestEnvironment.python,
                arguments: [script.path, "loop", String(port), route.host, certificate, to],
                outputDirectory: directory)
            defer { caller.signal(SIGKILL) }
            _ = try await caller.firstLine(timeout: .seconds(60)) { $0 == from ? true : nil }
            try Data().write(to: fromRun.appendingPathComponent("work/broken"))
            _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "moved, healthy on the \(to)") {
                $0.run.state == .running && $0.run.health.status == .healthy && $0.deviceDid == toDid
            }
            let toRun = try await HealthCheckTests.allocationDirectory(of: to, in: directory)
            try Data(to.utf8).write(to: toRun.appendingPathComponent("work/where"))
            let status = await caller.waitForExit(timeout: .seconds(200))
            let answers = caller.output.split(separator: "\n").map(String.init)
            #expect(status == 0 && Array(answers.suffix(5)) == Array(repeating: to, count: 5), "\(answers)")
        }
    }

    @Test(
        "a client address past its connection limit: of 52 connections 50 are closed unanswered and 2 kept and answered, and the orchestrator serves on"
    )
    func clientLimit() async throws {
        try await ServiceBed.run("orrery-ingress-limit") { bed in
            let port = try TestPorts.unused()
            let orchestrator = try await bed.startOrchestrator(
                extraArguments: [
                    "--ingress-host", "127.0.0.1", "--ingress-port", String(port), "--ingress-domain", Self.domain,
                    "--ingress-connections-per-client", "2",
                ])
            defer { orchestrator.child.signal(SIGKILL) }
            let script = bed.directory.appendingPathComponent("client.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, "limit", String(port), "none.\(Self.domain)", "2"])
            #expect(status == 0 && output.contains("limited"), "\(output)")
            // Still serving: the orchestrator's own API answers.
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 0)
        }
    }

    @Test(
        "an orchestrator replica serves the ingress for a device whose line only another replica holds: the tunnel is relayed through that replica"
    )
    func relayedBetweenReplicas() async throws {
        try await ServiceBed.run("orrery-ingress-relay") { bed in
            let front = try await bed.startOrchestrator(extraArguments: Self.ingressArguments)
            defer { front.child.signal(SIGKILL) }
            let holder = try await bed.startOrchestrator()
            defer { holder.child.signal(SIGKILL) }
            let agent = try await bed.startAgent(
                "host", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [holder])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, front, devices: 1)
            let job = try await consumer.submit(Self.spec(), to: front, paid: false)
            _ = try await HealthCheckTests.until(job.id, consumer, front, "running and healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy
            }
            let route = try #require(
                try await consumer.with(front) { try await $0.getDeployment(.with { $0.id = job.id }) }.routes.first)
            let port = try #require(URLComponents(string: route.url)?.port)
            let curl = Curl(port: port, directory: bed.directory)
            #expect(try await curl.json(route.host, "/headers")["port"] as? Int == 8080)
            let upload = bed.directory.appendingPathComponent("upload.bin")
            let bytes = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            try bytes.write(to: upload)
            let posted = try await curl.json(route.host, "/", extra: ["--data-binary", "@\(upload.path)"])
            #expect(posted["sha256"] as? String == Hex.sha256(bytes) && posted["size"] as? Int == bytes.count)
        }
    }

    /// `web`: the service above, its ports public (http 8080) and private (admin 8081), healthy on /ok.
    static func spec() -> Orrery_Orchestrator_V1_WorkloadSpec {
        var spec = HealthCheckTests.webSpec(name: "ingress", server: Self.server)
        spec.allocations[0].ports[0].expose = .public
        spec.allocations[0].ports.append(
            .with {
                $0.name = "admin"
                $0.port = 8081
                $0.protocol = .http
                $0.expose = .private
            })
        return spec
    }

    /// An `Authorization: Bearer` value for a private port of `deployment`: an invocation of `/orrery/ingress/connect`
    /// by `key`, addressed to the orchestrator `audience`, with `proofs` (two minutes).
    static func token(
        _ key: SigningKey, subject: DID, to audience: DID, deployment: String, proofs: [Delegation] = []
    ) throws -> String {
        let invocation = Invocation.issue(
            by: key, subject: subject, audience: audience, command: try Command("/orrery/ingress/connect"),
            arguments: ["deployment": .string(deployment)], proofs: proofs.map(\.cid),
            expiration: Int64(Date().timeIntervalSince1970) + 120)
        return try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes))
    }

    /// The header fields the service saw, by lower-case name.
    static func fields(_ answer: [String: Any]) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in answer["headers"] as? [[String]] ?? [] where pair.count == 2 {
            fields[pair[0].lowercased()] = pair[1]
        }
        return fields
    }

    /// The session cookie's value in a curl cookie jar.
    static func cookieValue(_ jar: String) -> String? {
        jar.split(separator: "\n").first { $0.contains("\torrery_session\t") }?.split(separator: "\t").last.map(
            String.init)
    }

    /// curl against the ingress, its host names resolved to 127.0.0.1.
    struct Curl {
        let port: Int
        let directory: URL
        var scheme = "http"
        var extra: [String] = []

        func run(_ host: String, _ path: String, headers: [String] = [], extra: [String] = []) async throws -> (
            output: String, status: Int32
        ) {
            var arguments = ["-sS", "--max-time", "120", "--resolve", "\(host):\(port):127.0.0.1"]
            for header in headers { arguments += ["-H", header] }
            arguments += self.extra + extra + ["\(scheme)://\(host):\(port)\(path)"]
            let (status, output) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/curl"), arguments: arguments)
            return (output.trimmingCharacters(in: .whitespacesAndNewlines), status)
        }

        func json(_ host: String, _ path: String, headers: [String] = [], extra: [String] = []) async throws
            -> [String: Any]
        {
            let (output, status) = try await run(host, path, headers: headers, extra: extra + ["--fail-with-body"])
            #expect(status == 0, "\(output)")
            return (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
        }
    }
}
