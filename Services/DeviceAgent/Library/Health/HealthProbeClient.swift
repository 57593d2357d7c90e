#if canImport(Glibc)
    internal import Glibc
#endif

/// One health check from inside a sandbox's network namespace (the agent's `probe` command, started there by
/// `nsenter`): a TCP connection to 127.0.0.1, or an HTTP GET over it, within a timeout. Plain sockets, no event loop:
/// the command does this one thing and exits.
public enum HealthProbeClient {
    /// What a check found.
    public struct Result: Sendable, Equatable {
        public var passed: Bool
        /// What was tried and what happened, for the replica's health and the logs.
        public var detail: String
    }

    /// Whether a TCP connection to 127.0.0.1:`port` is accepted within `timeout`.
    public static func tcp(port: Int, timeout: Duration) -> Result {
        let deadline = ContinuousClock.now + timeout
        switch connect(port: port, deadline: deadline) {
        case .success(let socket):
            close(socket)
            return Result(passed: true, detail: "tcp \(port): connected")
        case .failure(let problem):
            return Result(passed: false, detail: "tcp \(port): \(problem.text)")
        }
    }

    /// Whether a GET of `path` on 127.0.0.1:`port` answers 200…399 within `timeout`.
    public static func http(port: Int, path: String, timeout: Duration) -> Result {
        let deadline = ContinuousClock.now + timeout
        let what = "GET http://127.0.0.1:\(port)\(path)"
        let socket: Int32
        switch connect(port: port, deadline: deadline) {
        case .success(let connected): socket = connected
        case .failure(let problem): return Result(passed: false, detail: "\(what): \(problem.text)")
        }
        defer { close(socket) }
        let request = Array(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUser-Agent: orrery-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                .utf8)
        var sent = 0
        while sent < request.count {
            guard wait(socket, for: Int16(POLLOUT), until: deadline) else {
                return Result(passed: false, detail: "\(what): no answer within \(seconds(timeout))")
            }
            let written = request[sent...].withUnsafeBytes {
                send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written < 0, errno == EINTR || errno == EAGAIN { continue }
            guard written > 0 else { return Result(passed: false, detail: "\(what): \(Problem(errno).text)") }
            sent += written
        }
        // The status line is all a check needs.
        var answer: [UInt8] = []
        while !answer.contains(UInt8(ascii: "\n")), answer.count < 1024 {
            guard wait(socket, for: Int16(POLLIN), until: deadline) else {
                return Result(passed: false, detail: "\(what): no answer within \(seconds(timeout))")
            }
            var buffer = [UInt8](repeating: 0, count: 1024)
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR || errno == EAGAIN { continue }
            if count < 0 { return Result(passed: false, detail: "\(what): \(Problem(errno).text)") }
            if count == 0 { break }
            answer += buffer[0..<count]
        }
        guard let status = statusCode(answer) else {
            return Result(passed: false, detail: "\(what): not an HTTP answer")
        }
        return Result(passed: (200...399).contains(status), detail: "\(what): \(status)")
    }

    /// The status code of an HTTP/1.x status line.
    static func statusCode(_ answer: [UInt8]) -> Int? {
        let line = String(
            decoding: answer.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let code = Int(parts[1]) else {
            return nil
        }
        return code
    }

    /// Why a connection could not be made.
    struct Problem: Error {
        let code: Int32
        init(_ code: Int32) { self.code = code }
        var text: String {
            switch code {
            case ECONNREFUSED: "connection refused"
            case ETIMEDOUT: "no answer in time"
            default: String(cString: strerror(code))
            }
        }
    }

    /// A non-blocking socket connected to 127.0.0.1:`port` by `deadline`.
    private static func connect(port: Int, deadline: ContinuousClock.Instant) -> Swift.Result<Int32, Problem> {
        let socket = Glibc.socket(
            AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { return .failure(Problem(errno)) }
        let made = begin(socket, port: port).flatMap { underWay in
            underWay ? finish(socket, until: deadline) : .success(())
        }
        guard case .failure(let problem) = made else { return .success(socket) }
        close(socket)
        return .failure(problem)
    }

    /// Begins connecting the non-blocking TCP socket `socket` to 127.0.0.1:`port` (of the network namespace it was
    /// made in): true while the connection is still being made (`finish` waits for it), false once it is made.
    static func begin(_ socket: Int32, port: Int) -> Swift.Result<Bool, Problem> {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let started = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard started != 0 else { return .success(false) }
        // Interrupted, a non-blocking connection goes on being made as it does in progress.
        guard errno == EINPROGRESS || errno == EINTR else { return .failure(Problem(errno)) }
        return .success(true)
    }

    /// Waits, until `deadline` at most, for the connection `begin` left being made on `socket`.
    static func finish(_ socket: Int32, until deadline: ContinuousClock.Instant) -> Swift.Result<Void, Problem> {
        guard wait(socket, for: Int16(POLLOUT), until: deadline) else { return .failure(Problem(ETIMEDOUT)) }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &length)
        return error == 0 ? .success(()) : .failure(Problem(error))
    }

    /// Whether the connection `begin` left being made on `socket` is made already (or failed: `finish` tells).
    static func isSettled(_ socket: Int32) -> Bool {
        var descriptor = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
        return poll(&descriptor, 1, 0) > 0
    }

    /// Waits until `socket` is ready for `events`; false when `deadline` passed first.
    private static func wait(_ socket: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return false }
            let milliseconds = Int32(
                clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            var descriptor = pollfd(fd: socket, events: events, revents: 0)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0, errno != EINTR { return false }
        }
    }

    private static func seconds(_ duration: Duration) -> String { "\(duration.components.seconds) s" }
}
