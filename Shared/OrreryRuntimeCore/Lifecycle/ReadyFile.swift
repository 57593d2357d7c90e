#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The JSON a service writes to `--ready-file` once it serves, so tests and `make run` never parse logs or sleep.
public struct ReadyFile: Codable, Sendable, Equatable {
    public var service: String
    public var pid: Int32
    /// `host:port` of the gRPC listener.
    public var grpc: String
    public var grpcPort: Int
    /// `host:port` of the HTTP listener (`/metrics`, `/healthz`).
    public var http: String
    public var httpPort: Int
    /// The service's DID; empty until it has an identity.
    public var did: String

    public init(
        service: String, pid: Int32, grpcHost: String, grpcPort: Int, httpHost: String, httpPort: Int, did: String
    ) {
        self.service = service
        self.pid = pid
        self.grpc = Self.join(grpcHost, grpcPort)
        self.grpcPort = grpcPort
        self.http = Self.join(httpHost, httpPort)
        self.httpPort = httpPort
        self.did = did
    }

    private static func join(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    enum CodingKeys: String, CodingKey {
        case service, pid, grpc, http, did
        case grpcPort = "grpc_port"
        case httpPort = "http_port"
    }

    /// Writes the file atomically (a temporary file renamed into place), so a reader never sees half of it.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(self)
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(pid).tmp")
        try data.write(to: temporary)
        // rename(2) replaces an existing file atomically.
        guard rename(temporary.path, path) == 0 else {
            let reason = systemErrorText()
            try? FileManager.default.removeItem(at: temporary)
            throw ReadyFileError(path: path, reason: reason)
        }
    }

    /// Reads a ready file.
    public static func read(from path: String) throws -> ReadyFile {
        try JSONDecoder().decode(ReadyFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}

/// A ready file could not be put in place.
public struct ReadyFileError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "cannot write \(path): \(reason)" }
}
