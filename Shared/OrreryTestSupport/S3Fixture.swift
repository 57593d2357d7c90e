public import Foundation

/// A real S3-compatible server on loopback (moto in server mode) started by `Tests/python/s3_server.py`, with boto3
/// as the independent client that puts and reads objects, and botocore as the reference for presigned URLs.
public final class S3Fixture: Sendable {
    /// What the server printed once it answered.
    public struct Ready: Decodable, Sendable {
        /// `http://127.0.0.1:PORT`.
        public var endpoint: String
        public var accessKey: String
        public var secretKey: String
        public var region: String
        /// Its access log: `METHOD PATH?QUERY STATUS RANGE` per request.
        public var log: String

        enum CodingKeys: String, CodingKey {
            case endpoint, region, log
            case accessKey = "access_key"
            case secretKey = "secret_key"
        }
    }
    /// An object's digest and size as boto3 saw it.
    public struct Object: Decodable, Sendable, Equatable {
        public var sha256: String
        public var size: Int64
    }
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let directory: URL
    public let child: ChildProcess
    public let ready: Ready

    /// The environment a consumer's tools read the store's credentials and endpoint from.
    public var environment: [String: String] {
        [
            "AWS_ACCESS_KEY_ID": ready.accessKey, "AWS_SECRET_ACCESS_KEY": ready.secretKey,
            "AWS_REGION": ready.region, "AWS_ENDPOINT_URL": ready.endpoint,
        ]
    }

    private init(directory: URL, child: ChildProcess, ready: Ready) {
        self.directory = directory
        self.child = child
        self.ready = ready
    }

    static var script: String {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/s3_server.py").path
    }

    /// Starts a server for `body`, stopped afterwards.
    public static func with<Result>(_ body: (S3Fixture) async throws -> Result) async throws -> Result {
        try await TestEnvironment.withTemporaryDirectory("orrery-s3") { directory in
            let child = try ChildProcess(
                TestEnvironment.python, arguments: [script, "serve", directory.appendingPathComponent("s3").path],
                outputDirectory: directory)
            defer { child.signal(SIGTERM) }
            let ready = try await child.firstLine { line -> Ready? in
                guard line.hasPrefix("READY ") else { return nil }
                return try JSONDecoder().decode(Ready.self, from: Data(line.dropFirst(6).utf8))
            }
            let fixture = S3Fixture(directory: directory, child: child, ready: ready)
            let result = try await body(fixture)
            await child.stop()
            return result
        }
    }

    /// Uploads `file` as `bucket/key` with boto3 (creating the bucket), readable by anyone when `public`.
    @discardableResult
    public func put(_ file: String, bucket: String, key: String, public: Bool = false) async throws -> Object {
        try await tool("put", [ready.endpoint, bucket, key, file] + (`public` ? ["public"] : []))
    }

    /// Downloads `bucket/key` into `file` with boto3.
    @discardableResult
    public func get(bucket: String, key: String, into file: String) async throws -> Object {
        try await tool("get", [ready.endpoint, bucket, key, file])
    }

    /// The URL botocore presigns for `method` on `bucket/key` at `time` with these credentials.
    public func botocorePresigned(
        _ method: String, bucket: String, key: String, lifetime: Int, time: Int, endpoint: String? = nil,
        region: String? = nil, accessKey: String? = nil, secretKey: String? = nil, sessionToken: String? = nil
    ) async throws -> String {
        var arguments = [
            Self.script, "presign", endpoint ?? ready.endpoint, region ?? ready.region, accessKey ?? ready.accessKey,
            secretKey ?? ready.secretKey, method, bucket, key, String(lifetime), String(time),
        ]
        if let sessionToken { arguments.append(sessionToken) }
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: arguments)
        guard status == 0, let line = output.split(separator: "\n").last else {
            throw Failure(description: "presign failed (\(status)): \(output)")
        }
        return String(line)
    }

    /// The access log's lines (each `METHOD PATH?QUERY STATUS RANGE`).
    public func requests() -> [String] {
        ((try? String(contentsOfFile: ready.log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    private func tool(_ command: String, _ arguments: [String]) async throws -> Object {
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.python, arguments: [Self.script, command] + arguments)
        guard status == 0, let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw Failure(description: "\(command) failed (\(status)): \(output)")
        }
        return try JSONDecoder().decode(Object.self, from: Data(line.utf8))
    }
}
