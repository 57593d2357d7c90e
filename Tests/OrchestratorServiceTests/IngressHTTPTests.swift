import NIOCore
import NIOHTTP1
import Synchronization
import Testing

@testable import OrchestratorService

/// The ingress's reading of HTTP/1.1: heads parsed strictly, bodies followed to their ends without a byte changed,
/// responses matched to their requests, and the rewriting of what reaches a service.
@Suite("Ingress HTTP framing")
struct IngressHTTPTests {
    static func buffer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test("a head is taken whole once its empty line arrived, with what follows left in place")
    func headArrivesInPieces() throws {
        let text = "\r\nGET /a?b=1 HTTP/1.1\r\nHost: web.apps.test\r\nX-Two:  spaced value \r\n\r\nBODY"
        var buffer = ByteBuffer()
        var head: HTTPMessageHead?
        for byte in text.utf8 {
            buffer.writeInteger(byte)
            if head == nil { head = try HTTPMessageHead.take(from: &buffer) }
        }
        let taken = try #require(head)
        #expect(taken.first == "GET" && taken.second == "/a?b=1" && taken.third == "HTTP/1.1")
        #expect(taken.values("host") == ["web.apps.test"] && taken.values("X-TWO") == ["spaced value"])
        #expect(buffer.readString(length: buffer.readableBytes) == "BODY")
    }

    @Test(
        "heads a lenient parser would read differently from the service are refused",
        arguments: [
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\u{1}b\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        ])
    func strictHeads(text: String, status: Int) {
        var buffer = Self.buffer(text)
        let error = #expect(throws: HTTPFramingError.self) { _ = try HTTPMessageHead.take(from: &buffer) }
        #expect(error?.status == status)
    }

    @Test("a head over 16 KiB, or over 100 fields, is refused 431 before it is complete")
    func headLimits() {
        var long = Self.buffer("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 17 << 10))
        #expect(throws: HTTPFramingError(status: 431, description: "the head is longer than 16384 bytes")) {
            _ = try HTTPMessageHead.take(from: &long)
        }
        var many = Self.buffer(
            "GET / HTTP/1.1\r\n" + (0..<101).map { "F\($0): v\r\n" }.joined() + "\r\n")
        #expect(throws: HTTPFramingError(status: 431, description: "more than 100 header fields")) {
            _ = try HTTPMessageHead.take(from: &many)
        }
    }

    @Test("a request's body length: Content-Length, chunked, none; ambiguous framings are refused")
    func requestBodyLengths() throws {
        func head(_ fields: [(String, String)]) -> HTTPMessageHead {
            HTTPMessageHead(first: "POST", second: "/", third: "HTTP/1.1", fields: fields)
        }
        #expect(try head([("Content-Length", "12")]).requestBodyLength() == .bytes(12))
        #expect(try head([("Content-Length", "12"), ("content-length", "12")]).requestBodyLength() == .bytes(12))
        #expect(try head([("Transfer-Encoding", "chunked")]).requestBodyLength() == .chunked)
        #expect(try head([]).requestBodyLength() == HTTPBodyLength.none)
        #expect(throws: HTTPFramingError.self) {
            try head([("Content-Length", "12"), ("Transfer-Encoding", "chunked")]).requestBodyLength()
        }
        #expect(throws: HTTPFramingError.self) {
            try head([("Content-Length", "12"), ("Content-Length", "13")]).requestBodyLength()
        }
        #expect(throws: HTTPFramingError.self) { try head([("Content-Length", "-1")]).requestBodyLength() }
        #expect(throws: HTTPFramingError.self) { try head([("Content-Length", "1e3")]).requestBodyLength() }
        let gzip = #expect(throws: HTTPFramingError.self) {
            try head([("Transfer-Encoding", "gzip, chunked")]).requestBodyLength()
        }
        #expect(gzip?.status == 501)
    }

    @Test("a chunked body fed one byte at a time comes out unchanged and ends exactly after its trailers")
    func chunkedBody() throws {
        let body = "5;ext=1\r\nhello\r\n1A\r\n" + String(repeating: "x", count: 26) + "\r\n0\r\nTrailer: t\r\n\r\n"
        var framer = HTTPBodyFramer(.chunked)
        var output = ""
        for byte in (body + "NEXT").utf8 {
            guard !framer.isDone else { break }
            var one = ByteBuffer(bytes: [byte])
            var taken = try framer.take(from: &one)
            output += taken.readString(length: taken.readableBytes) ?? ""
        }
        #expect(framer.isDone)
        #expect(output == body)
    }

    @Test(
        "chunked bodies that could be read two ways are refused",
        arguments: [
            "5\r\nhelloXX0\r\n\r\n", "zz\r\nhello\r\n", "5\nhello\r\n", "0\r\nTrailer: t\n\r\n",
            "1234567890abcdef0\r\n",
        ])
    func badChunks(body: String) {
        var framer = HTTPBodyFramer(.chunked)
        var buffer = Self.buffer(body)
        #expect(throws: HTTPFramingError.self) { _ = try framer.take(from: &buffer) }
    }

    @Test("a Content-Length body ends at its length; the next message's bytes stay")
    func fixedBody() throws {
        var framer = HTTPBodyFramer(.bytes(5))
        var first = Self.buffer("hel")
        #expect(try framer.take(from: &first).readableBytes == 3 && !framer.isDone)
        var second = Self.buffer("loGET")
        var taken = try framer.take(from: &second)
        #expect(taken.readString(length: taken.readableBytes) == "lo" && framer.isDone)
        #expect(second.readString(length: second.readableBytes) == "GET")
    }

    @Test("responses are matched to pipelined requests: HEAD has no body, 100 Continue is interim, 204 is empty")
    func pipelinedResponses() throws {
        var tracker = HTTPResponseTracker()
        tracker.expect(.init(method: "HEAD", upgrade: false))
        tracker.expect(.init(method: "POST", upgrade: false))
        tracker.expect(.init(method: "GET", upgrade: false))
        tracker.expect(.init(method: "GET", upgrade: false))
        let responses =
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
            + "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + "HTTP/1.1 204 No Content\r\n\r\n"
        var passed = ""
        for piece in responses.utf8.map({ ByteBuffer(bytes: [$0]) }) {
            var out = try tracker.consume(piece)
            passed += out.readString(length: out.readableBytes) ?? ""
        }
        #expect(passed == responses)
        #expect(tracker.pending == [.init(method: "GET", upgrade: false)])
        #expect(!tracker.isIdle)
        var last = try tracker.consume(Self.buffer("HTTP/1.0 200 OK\r\n\r\nuntil close"))
        #expect(last.readString(length: last.readableBytes) == "HTTP/1.0 200 OK\r\n\r\nuntil close")
        #expect(tracker.endsAtClose)
    }

    @Test("a 101 answer to an upgrade request makes the connection opaque; unasked, or unanswered, it is not")
    func upgrades() throws {
        var tracker = HTTPResponseTracker()
        tracker.expect(.init(method: "GET", upgrade: true))
        _ = try tracker.consume(Self.buffer("HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"))
        #expect(tracker.upgradeAccepted == false && tracker.isIdle && !tracker.isSwitched)
        tracker.expect(.init(method: "GET", upgrade: true))
        var answer = Self.buffer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        answer.writeBytes([0x81, 0x02, 0x68, 0x69])
        let switched = try tracker.consume(answer)
        #expect(tracker.upgradeAccepted == true && tracker.isSwitched)
        #expect(
            switched.readableBytes == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".utf8.count + 4)
        var unasked = HTTPResponseTracker()
        unasked.expect(.init(method: "GET", upgrade: false))
        #expect(throws: HTTPFramingError.self) {
            _ = try unasked.consume(Self.buffer("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
        }
        var unrequested = HTTPResponseTracker()
        #expect(throws: HTTPFramingError.self) { _ = try unrequested.consume(Self.buffer("HTTP/1.1 200 OK\r\n\r\n")) }
    }

    @Test(
        "what reaches a private service: no credentials, no client-sent X-Orrery-* or X-Forwarded-*, no hop-by-hop fields, and the verified caller"
    )
    func rewriting() {
        let head = HTTPMessageHead(
            first: "GET", second: "/", third: "HTTP/1.1",
            fields: [
                ("Host", "web.apps.test"), ("Authorization", "Bearer secret"), ("X-Orrery-Caller", "did:key:forged"),
                ("x-orrery-anything", "1"), ("X-Forwarded-For", "10.0.0.1"),
                ("Connection", "keep-alive, X-Drop, Content-Length"),
                ("X-Drop", "1"), ("Keep-Alive", "timeout=5"), ("Content-Length", "0"),
                ("Cookie", "a=1; orrery_session=v1.x.y; b=2"), ("Accept", "*/*"),
            ])
        let rewritten = IngressConnection.rewrite(
            head, caller: "did:key:caller", upgrade: false, isPrivate: true, client: "192.0.2.7", secure: true)
        #expect(
            rewritten.fields.map { "\($0.name): \($0.value)" } == [
                "Host: web.apps.test", "Content-Length: 0", "Cookie: a=1; b=2", "Accept: */*",
                "X-Forwarded-For: 192.0.2.7", "X-Forwarded-Proto: https", "X-Orrery-Caller: did:key:caller",
            ])
        // A public port keeps the client's own Authorization (the service's business), never an X-Orrery-* field.
        let public_ = IngressConnection.rewrite(
            head, caller: nil, upgrade: false, isPrivate: false, client: "192.0.2.7", secure: false)
        #expect(public_.values("Authorization") == ["Bearer secret"])
        #expect(public_.fields.allSatisfy { !$0.name.lowercased().hasPrefix("x-orrery-") })
        // An upgrade keeps what it needs to reach the service.
        let websocket = IngressConnection.rewrite(
            HTTPMessageHead(
                first: "GET", second: "/ws", third: "HTTP/1.1",
                fields: [("Host", "h"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]),
            caller: nil, upgrade: true, isPrivate: false, client: "::1", secure: false)
        #expect(websocket.values("Connection") == ["Upgrade"] && websocket.values("Upgrade") == ["websocket"])
        // HTTP/1.0 without keep-alive closes after its response.
        let old = IngressConnection.rewrite(
            HTTPMessageHead(first: "GET", second: "/", third: "HTTP/1.0", fields: [("Host", "h")]),
            caller: nil, upgrade: false, isPrivate: false, client: "::1", secure: false)
        #expect(old.values("Connection") == ["close"])
    }

    @Test("a route's label: at most 63 lower-case characters, fixed, its deployment read back from it")
    func labels() {
        let deployment = "dep_abcdefghijklmnopqrstuvwxyz"
        let label = IngressRoute.label(
            deployment: deployment, allocation: "a-very-long-allocation-name-indeed-it-is", portName: "metrics-http-v2")
        #expect(label == "a-very-long-allocati-metrics-http-v2-abcdefghijklmnopqrstuvwxyz")
        #expect(label.count <= 63)
        #expect(IngressRoute.deploymentID(ofLabel: label) == deployment)
        #expect(
            IngressRoute.label(deployment: deployment, allocation: "web-", portName: "http")
                == "web-http-abcdefghijklmnopqrstuvwxyz")
        #expect(IngressRoute.deploymentID(ofLabel: "web-http-ABCDEFGHIJKLMNOPQRSTUVWXYZ") == nil)
        #expect(IngressRoute.deploymentID(ofLabel: "short") == nil)
        let directory = IngressDirectory(domain: "apps.test") { _ in nil }
        #expect(directory.label(ofHost: "Web-HTTP-x.Apps.Test:8443") == "web-http-x")
        #expect(directory.label(ofHost: "web.apps.test.") == "web")
        #expect(directory.label(ofHost: "a.b.apps.test") == nil)
        #expect(directory.label(ofHost: "apps.test") == nil)
        #expect(directory.label(ofHost: "web.evil-apps.test") == nil)
    }

    @Test("requests per deployment: a burst of twice the rate, then the rate; connections per deployment and client")
    func limits() {
        let now = Box(ContinuousClock.now)
        let limits = IngressLimits(
            connectionsPerDeployment: 2, connectionsPerClient: 1, requestsPerSecond: 10,
            clock: { now.withLock { $0 } })
        for _ in 0..<20 { #expect(limits.takeRequest(of: "dep_a") == nil) }
        let wait = limits.takeRequest(of: "dep_a")
        #expect(wait != nil && wait! > 0 && wait! <= 0.1)
        #expect(limits.takeRequest(of: "dep_b") == nil)
        now.withLock { $0 += .milliseconds(250) }
        for _ in 0..<2 { #expect(limits.takeRequest(of: "dep_a") == nil) }
        #expect(limits.admitConnection(to: "dep_a") && limits.admitConnection(to: "dep_a"))
        #expect(!limits.admitConnection(to: "dep_a"))
        limits.releaseConnection(to: "dep_a")
        #expect(limits.admitConnection(to: "dep_a"))
        #expect(limits.admitClient("192.0.2.1") && !limits.admitClient("192.0.2.1") && limits.admitClient("192.0.2.2"))
    }
}

/// How an HTTP/2 stream's response is read back from the HTTP/1.1 a service answered.
@Suite("Ingress HTTP/2 responses")
struct IngressHTTP2ResponseTests {
    /// The parts `response` reads into when it comes `step` bytes at a time, and how it stands at the end.
    static func read(_ response: String, method: String = "GET", step: Int) throws -> (
        parts: [HTTPServerResponsePart], end: IngressHTTP1ResponseReader.End
    ) {
        var reader = IngressHTTP1ResponseReader()
        reader.method = method
        var parts: [HTTPServerResponsePart] = []
        let bytes = Array(response.utf8)
        var offset = 0
        while offset < bytes.count {
            let piece = bytes[offset..<min(bytes.count, offset + step)]
            parts += try reader.consume(ByteBuffer(bytes: piece))
            offset += step
        }
        return (parts, reader.close())
    }

    /// The body's bytes among `parts`, and the end's trailers.
    static func body(_ parts: [HTTPServerResponsePart]) -> (String, HTTPHeaders?, ended: Bool) {
        var body = ""
        var trailers: HTTPHeaders?
        var ended = false
        for part in parts {
            switch part {
            case .body(.byteBuffer(let buffer)): body += String(buffer: buffer)
            case .end(let end):
                trailers = end
                ended = true
            default: continue
            }
        }
        return (body, trailers, ended)
    }

    @Test("a chunked body comes unchunked, its trailer fields as trailers, however the bytes are split")
    func chunked() throws {
        let response =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
            + "X-Kept: yes\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n"
        for step in [1, 3, 7, 1000] {
            let (parts, end) = try Self.read(response, step: step)
            guard case .head(let head)? = parts.first else {
                Issue.record("no head first: \(parts)")
                continue
            }
            #expect(head.status.code == 200 && head.headers["X-Kept"] == ["yes"])
            #expect(head.headers["Transfer-Encoding"].isEmpty && head.headers["Connection"].isEmpty)
            let (body, trailers, ended) = Self.body(parts)
            #expect(body == "hello world" && ended && trailers?["X-Sum"] == ["abc"], "step \(step)")
            #expect(end == .whole)
        }
    }

    @Test("a stated length, HEAD, a body that ends at close, and a response cut short")
    func lengths() throws {
        let fixed = try Self.read("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA", step: 2)
        #expect(Self.body(fixed.parts).0 == "abc" && Self.body(fixed.parts).ended && fixed.end == .whole)
        let head = try Self.read("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", method: "HEAD", step: 5)
        #expect(Self.body(head.parts).0 == "" && Self.body(head.parts).ended && head.end == .whole)
        let open = try Self.read("HTTP/1.1 200 OK\r\n\r\nstreamed", step: 4)
        #expect(Self.body(open.parts).0 == "streamed" && !Self.body(open.parts).ended && open.end == .endsNow)
        let cut = try Self.read("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", step: 2)
        #expect(cut.end == .cut)
        let noHead = try Self.read("HTTP/1.1 200 O", step: 2)
        #expect(noHead.parts.isEmpty && noHead.end == .cut)
    }

    @Test("a bad chunk size or a protocol switch is an error, not a response")
    func refusals() {
        #expect(throws: HTTPFramingError.self) {
            try Self.read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", step: 100)
        }
        #expect(throws: HTTPFramingError.self) {
            try Self.read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", step: 100)
        }
        #expect(throws: HTTPFramingError.self) {
            try Self.read("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", step: 100)
        }
    }
}
