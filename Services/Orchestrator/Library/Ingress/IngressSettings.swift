internal import Configuration
internal import OrreryRuntimeCore

/// The ingress: its own listener and domain, where services' `EXPOSE_PUBLIC` and `EXPOSE_PRIVATE` ports are
/// reached over HTTP by host name — never on the API's listener or origin.
public struct IngressSettings: Sendable, Equatable {
    public var host: String
    /// 0 asks the system for a free port.
    public var port: Int
    /// Lower case, without a trailing dot: routes are `<label>.<domain>`.
    public var domain: String
    /// PEM certificate chain and key files for HTTPS; nil serves plain HTTP.
    public var tls: TLSFiles?
    /// The port in the URLs shown to consumers; nil: the listener's.
    public var publicPort: Int?
    public var maximumBodyBytes: Int64
    public var idleTimeout: Duration
    public var connectionsPerDeployment: Int
    public var connectionsPerClient: Int
    public var requestsPerSecond: Int

    public struct TLSFiles: Sendable, Equatable {
        public var certificate: String
        public var key: String

        public init(certificate: String, key: String) {
            self.certificate = certificate
            self.key = key
        }
    }

    public init(
        host: String, port: Int, domain: String, tls: TLSFiles? = nil, publicPort: Int? = nil,
        maximumBodyBytes: Int64 = 64 << 20, idleTimeout: Duration = .seconds(120), connectionsPerDeployment: Int = 512,
        connectionsPerClient: Int = 256, requestsPerSecond: Int = 500
    ) {
        self.connectionsPerClient = connectionsPerClient
        self.host = host
        self.port = port
        self.domain = domain
        self.tls = tls
        self.publicPort = publicPort
        self.maximumBodyBytes = maximumBodyBytes
        self.idleTimeout = idleTimeout
        self.connectionsPerDeployment = connectionsPerDeployment
        self.requestsPerSecond = requestsPerSecond
    }

    /// The ingress the settings describe, or nil when `ingress.host` is unset.
    init?(reading reader: SettingsReader) throws {
        guard let host = try reader.optionalString("ingress.host") else { return nil }
        let domain = try reader.string("ingress.domain").lowercased()
        let trimmed = domain.hasSuffix(".") ? String(domain.dropLast()) : domain
        guard Self.isDomain(trimmed) else {
            throw ConfigurationError(
                key: "ingress.domain",
                reason: trimmed.isEmpty
                    ? "required with ingress.host: each exposed port is served as <label>.<domain>"
                    : "'\(trimmed.prefix(100))' is not a DNS name (labels of a-z, 0-9 and '-', dots between)")
        }
        let certificate = try reader.optionalString("ingress.tls_cert")
        let key = try reader.optionalString("ingress.tls_key")
        guard (certificate == nil) == (key == nil) else {
            throw ConfigurationError(key: "ingress.tls_key", reason: "ingress.tls_cert and ingress.tls_key go together")
        }
        let publicPort = try reader.integer("ingress.public_port", in: 0...65535)
        self.init(
            host: host, port: try reader.port("ingress.port"), domain: trimmed,
            tls: certificate.flatMap { certificate in key.map { TLSFiles(certificate: certificate, key: $0) } },
            publicPort: publicPort == 0 ? nil : publicPort,
            maximumBodyBytes: Int64(try reader.integer("ingress.max_body_mib", in: 0...(1 << 20))) << 20,
            idleTimeout: .seconds(try reader.integer("ingress.idle_seconds", in: 5...86_400)),
            connectionsPerDeployment: try reader.integer("ingress.connections_per_deployment", in: 1...100_000),
            connectionsPerClient: try reader.integer("ingress.connections_per_client", in: 1...100_000),
            requestsPerSecond: try reader.integer("ingress.requests_per_second", in: 1...1_000_000))
    }

    /// A DNS name of one or more labels (a-z, 0-9, '-'; not starting or ending with '-'), at most 200 characters
    /// so that `<label>.<domain>` fits in 253.
    static func isDomain(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 200 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            guard (1...63).contains(label.utf8.count), label.first != "-", label.last != "-" else { return false }
            return label.utf8.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
            }
        }
    }

    /// The URL of a route's host name, as clients call it.
    func url(host: String, boundPort: Int) -> String {
        let scheme = tls == nil ? "http" : "https"
        let port = publicPort ?? boundPort
        let standard = (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
        return "\(scheme)://\(host)\(standard ? "" : ":\(port)")/"
    }
}
