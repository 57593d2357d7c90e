internal import Crypto
internal import OrreryBasics

#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif

/// An object in an S3-compatible store, written `s3://BUCKET/KEY`.
public struct S3Location: Sendable, Hashable, CustomStringConvertible {
    public var bucket: String
    public var key: String

    public init(bucket: String, key: String) {
        self.bucket = bucket
        self.key = key
    }

    /// Parses `s3://BUCKET/KEY`: a bucket of 3…63 lowercase letters, digits, '.' and '-', a key of 1…1024 bytes.
    public init(parsing text: String) throws(DataSourceError) {
        guard text.hasPrefix("s3://") else { throw .invalid("'\(text.prefix(200))' is not s3://BUCKET/KEY") }
        let rest = text.dropFirst(5)
        guard let slash = rest.firstIndex(of: "/") else {
            throw .invalid("'\(text.prefix(200))' names no key: s3://BUCKET/KEY")
        }
        let bucket = String(rest[..<slash])
        let key = String(rest[rest.index(after: slash)...])
        guard (3...63).contains(bucket.count),
            bucket.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-" })
        else { throw .invalid("'\(bucket.prefix(100))' is not a bucket name (3…63 of a-z, 0-9, '.', '-')") }
        guard (1...1024).contains(key.utf8.count), !key.unicodeScalars.contains(where: { $0.value < 32 }) else {
            throw .invalid("the key of '\(text.prefix(200))' must be 1…1024 bytes without control characters")
        }
        self.init(bucket: bucket, key: key)
    }

    public var description: String { "s3://\(bucket)/\(key)" }

    /// Where a replica's declared output goes under an allocation's `outputs_to` (s3://BUCKET/PREFIX):
    /// PREFIX/ALLOCATION/REPLICA/PATH in that bucket.
    public static func output(
        under outputsTo: String, allocation: String, replica: UInt32, path: String
    ) throws(DataSourceError) -> S3Location {
        let base = try S3Location(parsing: outputsTo)
        var prefix = base.key
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return S3Location(
            bucket: base.bucket, key: (prefix.isEmpty ? "" : prefix + "/") + "\(allocation)/\(replica)/\(path)")
    }
}

/// The credentials a consumer signs S3 requests with. They stay on the consumer's side: devices get presigned URLs.
public struct S3Credentials: Sendable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// For temporary credentials (STS).
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, as the AWS tools read them.
    public static func fromEnvironment(_ environment: [String: String]) -> S3Credentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
            let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        else { return nil }
        return S3Credentials(
            accessKeyID: id, secretAccessKey: secret,
            sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
    }
}

/// Presigns S3 requests (AWS Signature Version 4, query authentication, path-style addressing): a URL that lets its
/// bearer do one thing — GET one object, PUT one object or one part of a multipart upload — until it expires,
/// without the credentials that signed it.
public struct S3Presigner: Sendable {
    /// `scheme://host[:port]` of the store (for AWS: `https://s3.REGION.amazonaws.com`).
    public let endpoint: URL
    public let region: String
    public let credentials: S3Credentials

    /// SigV4's longest validity.
    public static let maximumLifetimeSeconds = 7 * 24 * 3600

    public init(endpoint: URL, region: String, credentials: S3Credentials) throws(DataSourceError) {
        guard let scheme = endpoint.scheme?.lowercased(), scheme == "https" || scheme == "http",
            endpoint.host?.isEmpty == false, endpoint.path.isEmpty || endpoint.path == "/", endpoint.query == nil
        else { throw .invalid("the S3 endpoint must be http(s)://HOST[:PORT], got '\(endpoint.absoluteString)'") }
        guard !region.isEmpty, region.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw .invalid("'\(region)' is not an S3 region")
        }
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
    }

    /// The endpoint AWS serves a region at, or the one `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` names.
    public static func endpoint(region: String, environment: [String: String]) -> String {
        if let given = environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"], !given.isEmpty {
            return given
        }
        return "https://s3.\(region).amazonaws.com"
    }

    /// A URL for `method` on `location`, valid `lifetime` seconds from `now`; `query` adds signed parameters (a
    /// multipart upload's `partNumber` and `uploadId`).
    public func presign(
        _ method: String, _ location: S3Location, lifetime: Int, now: Date = Date(), query: [(String, String)] = []
    ) -> URL? {
        let lifetime = min(max(1, lifetime), Self.maximumLifetimeSeconds)
        let (date, moment) = Self.timestamps(now)
        let scope = "\(date)/\(region)/s3/aws4_request"
        var parameters =
            query + [
                ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                ("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope)"),
                ("X-Amz-Date", moment),
                ("X-Amz-Expires", String(lifetime)),
                ("X-Amz-SignedHeaders", "host"),
            ]
        if let token = credentials.sessionToken { parameters.append(("X-Amz-Security-Token", token)) }
        let encoded: [(name: String, value: String)] = parameters.map { (Self.encode($0.0), Self.encode($0.1)) }
        let sorted = encoded.sorted { (a, b) -> Bool in a.name == b.name ? a.value < b.value : a.name < b.name }
        let canonicalQuery = sorted.map { $0.name + "=" + $0.value }.joined(separator: "&")
        let path = "/" + Self.encode(location.bucket) + "/" + Self.encode(location.key, keepingSlashes: true)
        let canonicalRequest = [
            method, path, canonicalQuery, "host:\(host)", "", "host", "UNSIGNED-PAYLOAD",
        ].joined(separator: "\n")
        let stringToSign = [
            "AWS4-HMAC-SHA256", moment, scope, Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [date, region, "s3", "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        let base =
            endpoint.absoluteString.hasSuffix("/")
            ? String(endpoint.absoluteString.dropLast()) : endpoint.absoluteString
        return URL(string: base + path + "?" + canonicalQuery + "&X-Amz-Signature=" + signature)
    }

    /// The Host header a client sends: the port only when it is not the scheme's default.
    var host: String {
        let name = endpoint.host ?? ""
        guard let port = endpoint.port else { return name }
        let defaultPort = endpoint.scheme?.lowercased() == "https" ? 443 : 80
        return port == defaultPort ? name : "\(name):\(port)"
    }

    /// SigV4's URI encoding: unreserved characters kept, every other byte as %XX (upper case).
    static func encode(_ text: String, keepingSlashes: Bool = false) -> String {
        var encoded = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            let unreserved =
                ("A"..."Z").contains(scalar) || ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar)
                || "-._~".unicodeScalars.contains(scalar)
            if unreserved || (keepingSlashes && byte == UInt8(ascii: "/")) {
                encoded.unicodeScalars.append(scalar)
            } else {
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return encoded
    }

    static func timestamps(_ now: Date) -> (date: String, moment: String) {
        var seconds = time_t(now.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int32, _ width: Int) -> String { String(value).leftPadded(to: width) }
        let date = digits(parts.tm_year + 1900, 4) + digits(parts.tm_mon + 1, 2) + digits(parts.tm_mday, 2)
        return (date, date + "T" + digits(parts.tm_hour, 2) + digits(parts.tm_min, 2) + digits(parts.tm_sec, 2) + "Z")
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
