public import Foundation
internal import OrreryHTTPClient
public import OrreryOCI

/// A real registry on loopback (Debian's docker-registry behind TLS, Basic or token authentication) started by
/// `Tests/python/oci_registry.py`, with images built by umoci or written as OCI layouts and pushed with skopeo.
public final class RegistryFixture: Sendable {
    /// What the registry printed once it answered.
    public struct Ready: Decodable, Sendable {
        /// `127.0.0.1:PORT`.
        public var address: String
        /// The PEM file of its (self-signed) certificate: the CA to trust.
        public var ca: String
        /// User names and passwords: `pusher` pushes, `reader` pulls, `other` pulls only `other/…`.
        public var users: [String: String]
        /// Its access log.
        public var log: String
        /// Its storage directory.
        public var storage: String
    }
    /// An image pushed: its manifest's (or index's) digest, its layers and configuration.
    public struct Pushed: Decodable, Sendable {
        public var digest: OCIDigest
        public var layers: [OCIDigest]
        public var config: OCIDigest?
    }
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let directory: URL
    public let child: ChildProcess
    public let ready: Ready

    /// Whether the tools a registry test needs are installed (`make test` installs them).
    public static var isAvailable: Bool {
        ["/usr/bin/docker-registry", "/usr/bin/umoci", "/usr/bin/skopeo"].allSatisfy {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    private init(directory: URL, child: ChildProcess, ready: Ready) {
        self.directory = directory
        self.child = child
        self.ready = ready
    }

    static var script: String {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/oci_registry.py").path
    }

    /// Starts a registry (`basic` or `token` authentication) for `body`, stopped afterwards.
    public static func with<Result>(
        _ mode: String, _ body: (RegistryFixture) async throws -> Result
    ) async throws -> Result {
        try await TestEnvironment.withTemporaryDirectory("orrery-registry") { directory in
            let child = try ChildProcess(
                TestEnvironment.python,
                arguments: [script, "serve", directory.appendingPathComponent("registry").path, mode],
                outputDirectory: directory)
            defer { child.signal(SIGTERM) }
            let ready = try await child.firstLine { line -> Ready? in
                guard line.hasPrefix("READY ") else { return nil }
                return try JSONDecoder().decode(Ready.self, from: Data(line.dropFirst(6).utf8))
            }
            let fixture = RegistryFixture(directory: directory, child: child, ready: ready)
            let result = try await body(fixture)
            await child.stop()
            return result
        }
    }

    /// Builds an image of `kind` (see `oci_registry.py`) and pushes it as `repository:tag`.
    public func push(_ kind: String, as target: String) async throws -> Pushed {
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.python,
            arguments: [Self.script, "push", directory.appendingPathComponent("registry").path, kind, target])
        guard status == 0, let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw Failure(description: "pushing \(kind) failed (\(status)): \(output)")
        }
        return try JSONDecoder().decode(Pushed.self, from: Data(line.utf8))
    }

    /// Flips a byte of a stored blob: the registry serves it unchecked.
    public func tamper(_ digest: OCIDigest) async throws {
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.python,
            arguments: [Self.script, "tamper", directory.appendingPathComponent("registry").path, digest.description])
        guard status == 0 else { throw Failure(description: "tamper failed: \(output)") }
    }

    /// The registry's access log lines for blob downloads (GET …/blobs/… answered 200 or 206).
    public func blobDownloads() -> [String] {
        let log = (try? String(contentsOfFile: ready.log, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { line in
            line.contains("\"GET /v2/") && line.contains("/blobs/sha256:")
                && (line.contains("HTTP/1.1\" 200 ") || line.contains("HTTP/1.1\" 206 "))
        }.map(String.init)
    }

    /// A client of this registry as `user` (its password from the fixture unless `password` is given).
    public func client(_ user: String?, password: String? = nil) -> RegistryClient {
        let credentials: RegistryCredentials =
            user.map { .basic(username: $0, password: password ?? ready.users[$0] ?? "") } ?? .anonymous
        return RegistryClient(host: ready.address, trust: .caFile(ready.ca), credentials: credentials)
    }

    public func reference(_ text: String) throws -> ImageReference {
        try ImageReference(parsing: ready.address + "/" + text)
    }
}
