public import GRPCNIOTransportHTTP2Posix

/// A `host:port` (or `[v6]:port`) a client dials.
public struct ServiceAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[::1]:port`.
    public init?(_ text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The gRPC target for this address.
    public var target: any ResolvableTarget {
        if host.contains(":") { return .ipv6(address: host, port: port) }
        if host.allSatisfy({ $0.isNumber || $0 == "." }) { return .ipv4(address: host, port: port) }
        return .dns(host: host, port: port)
    }
}
