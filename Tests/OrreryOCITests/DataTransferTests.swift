import Crypto
import Foundation
import OrreryBasics
import OrreryData
import OrreryTestSupport
import Testing

@testable import OrreryOCI

/// Data sources and S3 presigned URLs: our SigV4 signatures against botocore's, and downloads from a real
/// S3-compatible server (moto on loopback) verified, bounded and resumed.
@Suite("Data sources and S3", .serialized)
struct DataTransferTests {
    @Test("presigned URLs equal botocore's for the same request and moment: odd keys, a session token, a port")
    func presignedLikeBotocore() async throws {
        try await S3Fixture.with { s3 in
            let time = 1_764_000_000
            let cases: [(method: String, bucket: String, key: String, endpoint: String, token: String?)] = [
                ("GET", "data", "train.csv", s3.ready.endpoint, nil),
                ("PUT", "my-bucket.v2", "runs/a b+c/ü ~x=1&y.bin", s3.ready.endpoint, nil),
                ("GET", "data", "dir//double/slash", "https://s3.eu-north-1.amazonaws.com", "FQoGZXIvYXdzE+/=token"),
                ("PUT", "out", "main/0/result.bin", "http://127.0.0.1:80", nil),
            ]
            for (method, bucket, key, endpoint, token) in cases {
                let credentials = S3Credentials(
                    accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                    sessionToken: token)
                let presigner = try S3Presigner(
                    endpoint: try #require(URL(string: endpoint)), region: "eu-north-1", credentials: credentials)
                let ours = try #require(
                    presigner.presign(
                        method, S3Location(bucket: bucket, key: key), lifetime: 3600,
                        now: Date(timeIntervalSince1970: Double(time))))
                let theirs = try await s3.botocorePresigned(
                    method, bucket: bucket, key: key, lifetime: 3600, time: time, endpoint: endpoint,
                    region: "eu-north-1", accessKey: "AKIDEXAMPLE",
                    secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", sessionToken: token)
                #expect(Self.normalised(ours.absoluteString) == Self.normalised(theirs), "\(method) \(key)")
            }
        }
    }

    /// A URL with its query's parameters in sorted order (botocore and we may order them differently).
    static func normalised(_ url: String) -> String {
        let parts = url.split(separator: "?", maxSplits: 1)
        guard parts.count == 2 else { return url }
        return parts[0] + "?" + parts[1].split(separator: "&").sorted().joined(separator: "&")
    }

    @Test("sources and input rules: each kind parsed, everything else refused with the reason")
    func sourcesAndRules() throws {
        #expect(try DataSource(parsing: "s3://data/a/b.csv") == .s3(S3Location(bucket: "data", key: "a/b.csv")))
        guard case .web = try DataSource(parsing: "https://example.org/x.bin") else {
            Issue.record("an https source")
            return
        }
        let digest = String(repeating: "a", count: 64)
        guard case .oci(let reference) = try DataSource(parsing: "oci://ghcr.io/org/data@sha256:\(digest)") else {
            Issue.record("an oci source")
            return
        }
        #expect(reference.repository == "org/data")
        for bad in ["ftp://x/y", "s3://Data/x", "s3://data", "oci://ghcr.io/org/data:v1", "file:///etc/passwd", ""] {
            #expect(throws: DataSourceError.self, "\(bad)") { try DataSource(parsing: bad) }
        }
        #expect(try InputRules.mountPath(name: "train", mount: "") == "/inputs/train")
        #expect(try InputRules.mountPath(name: "train", mount: "/inputs/sets/train.csv") == "/inputs/sets/train.csv")
        for bad in ["/etc/passwd", "/inputs/../etc", "/inputs/a//b", "/inputs/./a", "inputs/a", "/inputs/"] {
            #expect(throws: DataSourceError.self, "\(bad)") { try InputRules.mountPath(name: "x", mount: bad) }
        }
        #expect(throws: DataSourceError.self) {
            try InputRules.mountPaths([("a", "/inputs/d"), ("b", "/inputs/d/e")])
        }
        #expect(
            try S3Location.output(under: "s3://out/runs/", allocation: "main", replica: 2, path: "r/x.bin").description
                == "s3://out/runs/main/2/r/x.bin")
    }

    @Test(
        "a download through a presigned URL is verified; a broken one resumes with Range; a wrong digest or an oversized body is refused and leaves nothing"
    )
    func downloadsFromS3() async throws {
        try await S3Fixture.with { s3 in
            try await TestEnvironment.withTemporaryDirectory("orrery-data") { directory in
                let file = directory.appendingPathComponent("object.bin")
                let bytes = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
                try bytes.write(to: file)
                let object = try await s3.put(file.path, bucket: "data", key: "sets/object.bin")
                let digest = try OCIDigest(parsing: "sha256:" + object.sha256)
                let presigner = try S3Presigner(
                    endpoint: try #require(URL(string: s3.ready.endpoint)), region: s3.ready.region,
                    credentials: S3Credentials(accessKeyID: s3.ready.accessKey, secretAccessKey: s3.ready.secretKey))
                let url = try #require(
                    presigner.presign("GET", S3Location(bucket: "data", key: "sets/object.bin"), lifetime: 600))

                // Resumed: a partial file left by a broken download (its first MiB) is continued from there.
                let partial = directory.appendingPathComponent("partial").path
                try bytes.prefix(1 << 20).write(to: URL(fileURLWithPath: partial))
                try await WebBlob.download(
                    url, ExpectedBlob(digest: digest, size: nil, maximumSize: 1 << 30), to: partial)
                #expect(try Data(contentsOf: URL(fileURLWithPath: partial)) == bytes)
                #expect(
                    s3.requests().contains {
                        $0.hasPrefix("GET /data/sets/object.bin?") && $0.hasSuffix(" bytes=1048576-")
                    })

                // A digest the bytes do not have: refused, nothing left.
                let wrong = directory.appendingPathComponent("wrong").path
                await #expect {
                    try await WebBlob.download(
                        url,
                        ExpectedBlob(
                            digest: OCIDigest(sha256: SHA256.hash(data: Data("x".utf8))), size: nil,
                            maximumSize: 1 << 30), to: wrong)
                } throws: { error in
                    guard case OCIError.digestMismatch(let why) = error else { return false }
                    return why.contains("refused")
                }
                #expect(!FileManager.default.fileExists(atPath: wrong))

                // Longer than its bound: refused as soon as it passes it.
                await #expect {
                    try await WebBlob.download(
                        url, ExpectedBlob(digest: digest, size: nil, maximumSize: 1 << 20), to: wrong)
                } throws: { error in
                    guard case OCIError.digestMismatch(let why) = error else { return false }
                    return why.contains("longer than")
                }
                #expect(!FileManager.default.fileExists(atPath: wrong))

                // A URL for an object that is not there: not found, at once (no retries).
                let missing = try #require(
                    presigner.presign("GET", S3Location(bucket: "data", key: "nothing"), lifetime: 600))
                await #expect {
                    try await WebBlob.download(
                        missing, ExpectedBlob(digest: digest, size: nil, maximumSize: 1 << 30), to: wrong)
                } throws: { error in
                    guard case OCIError.notFound = error else { return false }
                    return true
                }
            }
        }
    }
}
