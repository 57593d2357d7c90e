#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import NIOCore
public import OrreryHTTPClient

/// What a download must produce: bytes with this digest, of this size when it is known, never more than a bound.
public struct ExpectedBlob: Sendable, Equatable {
    public var digest: OCIDigest
    /// The exact size, when the one who named the blob said it.
    public var size: Int64?
    /// The most bytes accepted when the size is not known.
    public var maximumSize: Int64

    public init(digest: OCIDigest, size: Int64?, maximumSize: Int64) {
        self.digest = digest
        self.size = size
        self.maximumSize = size ?? maximumSize
    }
}

/// Downloads into a partial file that survives the process, resumed with `Range` after a broken connection and
/// checked against the digest and size at the end (the partial file removed when the bytes are not the blob).
enum ResumableDownload {
    /// Calls `fetchRemainder` (which appends from the file's current size) until it completes, `attempts` times in
    /// all; a failure `isFinal` says is final is thrown at once.
    static func run(
        to partialPath: String, _ expected: ExpectedBlob, what: String, attempts: Int,
        isFinal: (any Error) -> Bool, _ fetchRemainder: (PartialBlobFile) async throws -> Void
    ) async throws {
        let file = try PartialBlobFile(path: partialPath, expectedSize: expected.maximumSize)
        defer { file.close() }
        var failure: (any Error)?
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(250 << min(attempt, 5))) }
            do {
                try await fetchRemainder(file)
                failure = nil
                break
            } catch is CancellationError {
                throw CancellationError()
            } catch  where isFinal(error) {
                throw error
            } catch {
                failure = error
            }
        }
        if let failure { throw OCIError.registry("the download of \(what) \(expected.digest) failed: \(failure)") }
        guard expected.size.map({ file.size == $0 }) ?? true, file.digest == expected.digest else {
            let got = (file.size, file.digest)
            file.discard()
            let size = expected.size.map { " (\($0) bytes)" } ?? ""
            throw OCIError.digestMismatch(
                "\(what) \(expected.digest)\(size) arrived as \(got.0) bytes with digest \(got.1): refused")
        }
        try file.sync()
    }

    /// Appends one response body to `file`, refusing bytes past the bound.
    static func append(
        _ body: HTTPBodyStream, to file: PartialBlobFile, _ expected: ExpectedBlob, what: String
    ) async throws {
        while let chunk = try await body.next() {
            guard file.size + Int64(chunk.readableBytes) <= expected.maximumSize else {
                file.discard()
                throw OCIError.digestMismatch(
                    "\(what) \(expected.digest) is longer than the \(expected.maximumSize) bytes allowed: refused")
            }
            try chunk.withUnsafeReadableBytes { try file.append($0) }
        }
    }
}

/// A blob at a plain http(s) URL (a public file, or an object through a presigned URL): downloaded, resumed and
/// verified as registry blobs are. Redirects are followed (to https, or http when the URL was http).
public enum WebBlob {
    /// Streams the blob at `url` into `partialPath` until the file holds exactly `expected`.
    /// - Throws: `OCIError.digestMismatch` when the bytes are not the blob, `.notFound` / `.unauthorized` for a
    ///   404 / 401 or 403, `.forbiddenAddress` for an address `addresses` refuses, `.registry` when every attempt
    ///   failed.
    public static func download(
        _ url: URL, _ expected: ExpectedBlob, to partialPath: String, trust: TLSTrust = .system,
        addresses: AddressPolicy = .any, attempts: Int = 4, idleTimeout: Duration = .seconds(30)
    ) async throws {
        let what = "the file at \(url.host ?? "?")\(url.path)"
        try await ResumableDownload.run(
            to: partialPath, expected, what: what, attempts: attempts,
            isFinal: { error in
                guard let error = error as? OCIError else { return false }
                if case .registry = error { return false }
                return true
            }
        ) { file in
            if let size = expected.size, file.size == size { return }
            try await fetchRemainder(
                url, expected, into: file, what: what, trust: trust, addresses: addresses, idleTimeout: idleTimeout)
        }
    }

    private static func fetchRemainder(
        _ url: URL, _ expected: ExpectedBlob, into file: PartialBlobFile, what: String, trust: TLSTrust,
        addresses: AddressPolicy, idleTimeout: Duration
    ) async throws {
        let start = file.size
        var target = url
        for _ in 0..<8 {
            let headers: [(String, String)] = start > 0 ? [("Range", "bytes=\(start)-")] : []
            let next: URL? = try await RegistryClient.guarded("the server") {
                try await HTTPClient.stream(
                    target, headers: headers, trust: trust, idleTimeout: idleTimeout, addresses: addresses
                ) { head, body in
                    switch head.status {
                    case 200:
                        if start > 0 { try file.restart() }
                    case 206:
                        guard let range = head.header("Content-Range"), range.hasPrefix("bytes \(start)-") else {
                            throw OCIError.registry(
                                "\(what) answered a range from \(start) with \(head.header("Content-Range") ?? "no Content-Range")"
                            )
                        }
                    case 416 where start > 0:
                        // Everything was here already (an earlier process finished it): the digest decides.
                        return nil
                    case 301, 302, 303, 307, 308:
                        guard let location = head.header("Location"),
                            let next = URL(string: location, relativeTo: target)
                        else { throw OCIError.registry("\(what) redirected without a Location") }
                        let scheme = next.absoluteURL.scheme?.lowercased()
                        guard scheme == "https" || (scheme == "http" && url.scheme?.lowercased() == "http") else {
                            throw OCIError.unauthorized("\(what) redirected to \(scheme ?? "?")://, not https: refused")
                        }
                        return next.absoluteURL
                    case 401, 403: throw OCIError.unauthorized("\(what) refused access (\(head.status))")
                    case 404, 410: throw OCIError.notFound("\(what) is not there (\(head.status))")
                    case 500...599: throw OCIError.registry("\(what) answered \(head.status)")
                    default: throw OCIError.notFound("\(what) answered \(head.status)")
                    }
                    try await ResumableDownload.append(body, to: file, expected, what: what)
                    return nil
                }
            }
            guard let next else { return }
            target = next
        }
        throw OCIError.registry("\(what) redirected more than 8 times")
    }
}
