internal import Crypto
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import NIOCore
internal import OrreryBasics
public import OrreryHTTPClient

/// What a registry is shown to be allowed to read a repository.
public enum RegistryCredentials: Sendable, Equatable {
    case anonymous
    /// A user name and password (or a personal access token), sent to a Basic challenge or to the registry's token
    /// service.
    case basic(username: String, password: String)
    /// A bearer token obtained elsewhere (the short-lived, pull-only token a consumer hands a device).
    case bearer(String)
}

/// A client of the OCI Distribution API (v2) for pulling: manifests by tag or digest, blobs verified against their
/// digest and size as they stream to disk, resumed with `Range` after a broken download. Authentication follows the
/// registry's challenge: Basic, or a bearer token from the realm it names (the Docker token flow), cached per
/// repository until it expires. Redirects (to blob storage) are followed; credentials are never sent to another host.
public struct RegistryClient: Sendable {
    /// The `host[:port]` of the `/v2/` API.
    public let host: String
    public let plainHTTP: Bool
    public let trust: TLSTrust
    public let credentials: RegistryCredentials
    /// The longest wait for any byte of a response.
    public var idleTimeout: Duration = .seconds(30)
    /// Which addresses the registry (its token service, the storage it redirects to) may be at: a service that
    /// connects where a consumer says (the orchestrator at submit, a device pulling) keeps to public ones unless its
    /// operator or owner says otherwise.
    public var addresses: AddressPolicy = .any
    /// The largest manifest or configuration read (the distribution project's own bound is 4 MiB).
    public static let maximumManifestBytes = 4 << 20

    private let tokens = TokenCache()

    public init(host: String, plainHTTP: Bool = false, trust: TLSTrust = .system, credentials: RegistryCredentials) {
        self.host = host
        self.plainHTTP = plainHTTP
        self.trust = trust
        self.credentials = credentials
    }

    /// A manifest or index with its digest and media type.
    public struct Manifest: Sendable {
        public var digest: OCIDigest
        public var mediaType: String?
        public var bytes: [UInt8]
        public var content: FetchedManifest
    }

    /// Fetches the manifest `reference` (a tag or a digest) names; a digest reference is checked against the bytes.
    public func manifest(repository: String, reference: String) async throws -> Manifest {
        let url = try endpoint(repository: repository, "manifests", reference)
        let accept = MediaType.acceptedManifests.joined(separator: ", ")
        return try await send(url, repository: repository, headers: [("Accept", accept)]) { head, body in
            let bytes = try await body.collect(limit: Self.maximumManifestBytes)
            let digest = OCIDigest(sha256: SHA256.hash(data: bytes))
            if reference.hasPrefix("sha256:"), reference != digest.description {
                throw OCIError.digestMismatch(
                    "the registry's manifest for \(repository)@\(reference) has digest \(digest): refused")
            }
            let mediaType = head.header("Content-Type").map { String($0.split(separator: ";")[0]) }
            return Manifest(
                digest: digest, mediaType: mediaType, bytes: bytes,
                content: try FetchedManifest.decode(bytes, mediaType: mediaType))
        }
    }

    /// A small blob (an image configuration) in memory, checked against its descriptor.
    public func smallBlob(repository: String, _ descriptor: Descriptor) async throws -> [UInt8] {
        guard descriptor.size >= 0, descriptor.size <= Int64(Self.maximumManifestBytes) else {
            throw OCIError.invalidManifest(
                "the blob \(descriptor.digest) claims \(descriptor.size) bytes, more than \(Self.maximumManifestBytes)")
        }
        let url = try endpoint(repository: repository, "blobs", descriptor.digest.description)
        let bytes = try await send(url, repository: repository) { _, body in
            try await body.collect(limit: Int(descriptor.size))
        }
        let digest = OCIDigest(sha256: SHA256.hash(data: bytes))
        guard Int64(bytes.count) == descriptor.size, digest == descriptor.digest else {
            throw OCIError.digestMismatch(
                "the blob \(descriptor.digest) arrived as \(bytes.count) bytes with digest \(digest): refused")
        }
        return bytes
    }

    /// Streams a blob into `partialPath`, continuing what an earlier attempt (or an earlier process) left there, and
    /// returns once the file holds exactly the blob: its size and sha256 checked. A broken connection is retried
    /// with `Range` from where it stopped, `attempts` times in all.
    /// - Throws: `OCIError.digestMismatch` (the partial file removed) when the bytes are not the blob.
    public func downloadBlob(
        repository: String, _ descriptor: Descriptor, to partialPath: String, attempts: Int = 4
    ) async throws {
        let url = try endpoint(repository: repository, "blobs", descriptor.digest.description)
        let expected = ExpectedBlob(digest: descriptor.digest, size: descriptor.size, maximumSize: descriptor.size)
        try await ResumableDownload.run(
            to: partialPath, expected, what: "the blob", attempts: attempts,
            isFinal: { error in
                // The registry failed (a 5xx, say) or the connection broke: tried again, from where it stopped.
                guard let error = error as? OCIError else { return false }
                if case .registry = error { return false }
                return true
            }
        ) { file in
            guard file.size < descriptor.size else { return }
            let start = file.size
            let range: [(String, String)] = start > 0 ? [("Range", "bytes=\(start)-")] : []
            try await send(url, repository: repository, headers: range, accepting: [200, 206]) { head, body in
                if head.status == 200, start > 0 { try file.restart() }
                if head.status == 206 {
                    guard let contentRange = head.header("Content-Range"), contentRange.hasPrefix("bytes \(start)-")
                    else {
                        throw OCIError.registry(
                            "the registry answered a range from \(start) with \(head.header("Content-Range") ?? "no Content-Range")"
                        )
                    }
                }
                try await ResumableDownload.append(body, to: file, expected, what: "the blob")
            }
        }
    }

    /// A short-lived token that lets its bearer pull `repository` and nothing else, from the registry's token service
    /// with this client's credentials: what a consumer hands on instead of its password. Nil when the registry
    /// lets anyone pull it.
    /// - Throws: `OCIError.unauthorized` when the registry has no token service (Basic authentication only: a device
    ///   would need the password) or refuses the credentials.
    public func pullToken(repository: String, reference: String) async throws -> String? {
        let url = try endpoint(repository: repository, "manifests", reference)
        let challenges = try await Self.guarded {
            try await HTTPClient.stream(
                url, headers: [("Accept", MediaType.acceptedManifests.joined(separator: ", "))],
                trust: trust, idleTimeout: idleTimeout, addresses: addresses
            ) { head, _ in
                head.status == 401 ? head.headers("WWW-Authenticate").compactMap(Challenge.init(header:)) : []
            }
        }
        guard !challenges.isEmpty else { return nil }
        guard let bearer = challenges.first(where: { $0.scheme == "bearer" }), let realm = bearer.parameters["realm"]
        else {
            throw OCIError.unauthorized(
                "\(host) has no token service (Basic authentication only): a device would need the password, which never leaves the consumer; use a registry with token authentication or a public image"
            )
        }
        // Pull, whatever the challenge asked for.
        return try await TokenService.request(
            realm: realm, service: bearer.parameters["service"], scope: "repository:\(repository):pull",
            credentials: credentials, client: self
        ).0
    }

    func endpoint(repository: String, _ kind: String, _ reference: String) throws(OCIError) -> URL {
        guard let url = URL(string: "\(plainHTTP ? "http" : "https")://\(host)/v2/\(repository)/\(kind)/\(reference)")
        else { throw .invalidReference("cannot form a URL for \(host)/\(repository)") }
        return url
    }

    /// Sends a GET, answering an authentication challenge once and following redirects, and hands a response whose
    /// status is in `accepting` to `read`; any other status becomes an `OCIError` with the registry's own words.
    func send<Result>(
        _ url: URL, repository: String, headers: [(String, String)] = [], accepting: Set<Int> = [200],
        _ read: (HTTPResponseHead, HTTPBodyStream) async throws -> Result
    ) async throws -> Result {
        var target = url
        var authorization = await tokens.authorization(for: repository, credentials: credentials)
        var challenged = false
        for _ in 0..<8 {
            var requestHeaders = headers
            // Credentials go to the registry's own host only, never to where it redirects.
            if let authorization, target.host == url.host, target.port == url.port {
                requestHeaders.append(("Authorization", authorization))
            }
            let outcome: Outcome<Result> = try await Self.retryingConnections {
                try await HTTPClient.stream(
                    target, headers: requestHeaders, trust: trust, idleTimeout: idleTimeout, addresses: addresses
                ) { head, body in
                    if accepting.contains(head.status) { return .done(try await read(head, body)) }
                    let text = String(decoding: (try? await body.collect(limit: 64 << 10)) ?? [], as: UTF8.self)
                    switch head.status {
                    case 301, 302, 303, 307, 308:
                        guard let location = head.header("Location"),
                            let next = URL(string: location, relativeTo: target)
                        else { throw OCIError.registry("\(target.host ?? host) redirected without a Location") }
                        return .redirect(next.absoluteURL)
                    case 401: return .challenge(head.headers("WWW-Authenticate").compactMap(Challenge.init(header:)))
                    default: return .failed(head.status, Self.errorText(text))
                    }
                }
            }
            switch outcome {
            case .done(let result): return result
            case .redirect(let next):
                guard next.scheme == "https" || (plainHTTP && next.scheme == "http") else {
                    throw OCIError.registry("\(host) redirected to \(next.scheme ?? "?"):// , not https: refused")
                }
                target = next
            case .challenge(let challenges):
                guard !challenged, target.host == url.host else {
                    throw OCIError.unauthorized(
                        "\(host) refused the credentials for \(repository) (401\(challenged ? " after authenticating" : ""))"
                    )
                }
                challenged = true
                authorization = try await tokens.answer(
                    challenges, repository: repository, credentials: credentials, client: self)
            case .failed(let status, let text):
                let what = "\(host)/\(repository): \(target.path) answered \(status)\(text.isEmpty ? "" : ": " + text)"
                switch status {
                case 403: throw OCIError.unauthorized(what)
                case 404: throw OCIError.notFound(what)
                default: throw OCIError.registry(what)
                }
            }
        }
        throw OCIError.registry("\(host) redirected more than 8 times for \(url.path)")
    }

    /// `body` (one GET: safe to repeat), tried again twice after a connection that failed before any response came
    /// (a registry restarting or overloaded), and guarded as `guarded` does.
    static func retryingConnections<Value>(_ body: () async throws -> Value) async throws -> Value {
        for attempt in 0..<2 {
            do {
                return try await guarded("the registry", body)
            } catch HTTPClient.Failure.connection {
                try await Task.sleep(for: .milliseconds(200 << attempt))
            }
        }
        return try await guarded("the registry", body)
    }

    /// `body`, with a connection the address policy refused turned into `OCIError.forbiddenAddress`.
    static func guarded<Value>(
        _ what: String = "the registry", _ body: () async throws -> Value
    ) async throws -> Value {
        do { return try await body() } catch HTTPClient.Failure.refusedAddress(let why) {
            throw OCIError.forbiddenAddress("\(what) \(why)")
        }
    }

    private enum Outcome<Result> {
        case done(Result)
        case redirect(URL)
        case challenge([Challenge])
        case failed(Int, String)
    }

    /// The registry's error list (`{"errors":[{"code":…,"message":…}]}`) in a line, or the body's start.
    static func errorText(_ body: String) -> String {
        struct Errors: Decodable {
            struct Entry: Decodable {
                var code: String?
                var message: String?
            }
            var errors: [Entry]
        }
        if let parsed = try? JSONDecoder().decode(Errors.self, from: Data(body.utf8)), !parsed.errors.isEmpty {
            return parsed.errors.map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }.joined(
                separator: "; ")
        }
        return String(body.prefix(200)).trimmed()
    }
}

/// Bearer tokens per repository until they expire, and how to get one.
private actor TokenCache {
    private var cached: [String: (header: String, expires: ContinuousClock.Instant)] = [:]

    /// The Authorization header to send first: a token obtained before, a bearer given, or nothing (the registry's
    /// challenge says what it wants; Basic credentials are not volunteered).
    func authorization(for repository: String, credentials: RegistryCredentials) -> String? {
        if case .bearer(let token) = credentials { return "Bearer " + token }
        guard let entry = cached[repository], entry.expires > .now else { return nil }
        return entry.header
    }

    func answer(
        _ challenges: [Challenge], repository: String, credentials: RegistryCredentials, client: RegistryClient
    ) async throws -> String {
        if let bearer = challenges.first(where: { $0.scheme == "bearer" }), let realm = bearer.parameters["realm"] {
            if case .bearer = credentials {
                throw OCIError.unauthorized("\(client.host) refused the bearer token for \(repository)")
            }
            let (token, lifetime) = try await TokenService.request(
                realm: realm, service: bearer.parameters["service"],
                scope: bearer.parameters["scope"] ?? "repository:\(repository):pull", credentials: credentials,
                client: client)
            let header = "Bearer " + token
            // Renewed a little before the registry would refuse it.
            cached[repository] = (header, .now + .seconds(max(10, lifetime - 10)))
            return header
        }
        if challenges.contains(where: { $0.scheme == "basic" }) {
            guard case .basic(let username, let password) = credentials else {
                throw OCIError.unauthorized("\(client.host) asks for a user name and password for \(repository)")
            }
            return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        }
        throw OCIError.unauthorized(
            "\(client.host) refused access to \(repository) without a challenge this client understands")
    }

}

/// A registry's token service (the Docker token flow): a bearer token for a scope, asked for with Basic credentials
/// or none.
enum TokenService {
    static func request(
        realm: String, service: String?, scope: String, credentials: RegistryCredentials, client: RegistryClient
    ) async throws -> (String, Int) {
        guard var components = URLComponents(string: realm),
            components.scheme == "https" || (client.plainHTTP && components.scheme == "http")
        else { throw OCIError.unauthorized("\(client.host)'s token realm \(realm) is not an https URL: refused") }
        var query = components.queryItems ?? []
        if let service { query.append(URLQueryItem(name: "service", value: service)) }
        query.append(URLQueryItem(name: "scope", value: scope))
        components.queryItems = query
        guard let url = components.url else { throw OCIError.unauthorized("cannot form the token URL from \(realm)") }
        var headers: [(String, String)] = []
        if case .basic(let username, let password) = credentials {
            headers.append(("Authorization", "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()))
        }
        struct TokenResponse: Decodable {
            var token: String?
            var accessToken: String?
            var expiresIn: Int?

            enum CodingKeys: String, CodingKey {
                case token, accessToken = "access_token", expiresIn = "expires_in"
            }
        }
        let body = try await RegistryClient.guarded {
            try await HTTPClient.stream(
                url, headers: headers, trust: client.trust, addresses: client.addresses
            ) { head, body in
                // The status first: a refusal's body is not needed (and may end without TLS's close_notify).
                guard head.status == 200 else {
                    throw OCIError.unauthorized(
                        "the token service \(url.host ?? realm) refused a \(scope) token (\(head.status))")
                }
                return try await body.collect(limit: 1 << 20)
            }
        }
        guard let parsed = try? JSONDecoder().decode(TokenResponse.self, from: Data(body)),
            let token = parsed.token ?? parsed.accessToken, !token.isEmpty
        else { throw OCIError.unauthorized("the token service \(url.host ?? realm) answered without a token") }
        // The Docker token specification's default lifetime is 60 s.
        return (token, parsed.expiresIn ?? 60)
    }
}
