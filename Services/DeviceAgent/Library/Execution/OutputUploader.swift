internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import NIOCore
internal import OrreryBasics
internal import OrreryIdentity
public import OrreryHTTPClient
internal import Synchronization

/// Puts a declared output into its consumer's S3-compatible bucket through the presigned PUT URL the consumer made:
/// streamed from the file in 1 MiB chunks as the connection takes them, its sha256 computed on the way (what the
/// completion receipt names), tried again from the start after a broken attempt (one PUT cannot be resumed).
public struct OutputUploader: Sendable {
    public var trust: TLSTrust
    public var addresses: AddressPolicy
    public var idleTimeout: Duration = .seconds(60)

    public init(trust: TLSTrust, addresses: AddressPolicy) {
        self.trust = trust
        self.addresses = addresses
    }

    /// S3's largest object written by one PUT.
    static let maximumBytes: Int64 = 5 << 30

    public struct Uploaded: Sendable, Equatable {
        public var sha256: String
        public var size: Int64
    }

    /// Uploads the file at `path` (already resolved inside the work directory) to `url`.
    /// - Throws: `RunnerError` with the store's answer when it refuses (an expired URL: 403), or the last failure
    ///   after `attempts`.
    public func upload(_ path: String, to url: URL, attempts: Int = 3) async throws -> Uploaded {
        var failure: (any Error)?
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(500 << min(attempt, 4))) }
            do {
                return try await put(path, to: url)
            } catch let error as Refused {
                throw RunnerError(message: error.message)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                failure = error
            }
        }
        throw RunnerError(message: "the upload to \(url.host ?? "?") failed: \(failure.map { "\($0)" } ?? "")")
    }

    /// A refusal no retry changes.
    private struct Refused: Error {
        var message: String
    }

    private func put(_ path: String, to url: URL) async throws -> Uploaded {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw Refused(message: "cannot read \(path): \(systemErrorText())") }
        defer { close(descriptor) }
        var file = stat()
        guard fstat(descriptor, &file) == 0, file.st_mode & S_IFMT == S_IFREG else {
            throw Refused(message: "\(path) is not a regular file")
        }
        let length = Int64(file.st_size)
        guard length <= Self.maximumBytes else {
            throw Refused(message: "it is \(length) bytes, more than the \(Self.maximumBytes) one S3 PUT takes")
        }
        let digest = Mutex(SHA256())
        let body = HTTPRequestBody(length: length) { write in
            var offset: Int64 = 0
            var chunk = ByteBufferAllocator().buffer(capacity: 1 << 20)
            while offset < length {
                chunk.clear()
                let wanted = Int(min(Int64(1 << 20), length - offset))
                let count = chunk.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { buffer in
                    max(0, pread(descriptor, buffer.baseAddress, wanted, off_t(offset)))
                }
                guard count > 0 else { throw RunnerError(message: "\(path) ended early at \(offset) bytes") }
                chunk.withUnsafeReadableBytes { bytes in digest.withLock { $0.update(bufferPointer: bytes) } }
                try await write(chunk)
                offset += Int64(count)
            }
        }
        let headers = [("Content-Type", "application/octet-stream")]
        let (status, text) = try await HTTPClient.stream(
            method: "PUT", url, headers: headers, trust: trust, idleTimeout: idleTimeout, addresses: addresses,
            body: body
        ) { head, body in
            (head.status, String(decoding: (try? await body.collect(limit: 16 << 10)) ?? [], as: UTF8.self))
        }
        switch status {
        case 200, 201, 204:
            let sha256 = Hex.encode(digest.withLock { $0.finalize() })
            return Uploaded(sha256: sha256, size: length)
        case 400, 401, 403, 404, 405, 411, 413:
            throw Refused(message: "\(url.host ?? "the store") refused the upload (\(status)): \(Self.summary(text))")
        default:
            throw RunnerError(message: "\(url.host ?? "the store") answered \(status): \(Self.summary(text))")
        }
    }

    /// An S3 error document's code and message, or the start of the body.
    static func summary(_ text: String) -> String {
        func element(_ name: String) -> String? {
            guard
                let afterOpen = text.split(separator: "<\(name)>", maxSplits: 1, omittingEmptySubsequences: false)
                    .dropFirst().first,
                let content = afterOpen.split(separator: "</\(name)>", maxSplits: 1, omittingEmptySubsequences: false)
                    .first
            else { return nil }
            return String(content)
        }
        if let code = element("Code") { return [code, element("Message")].compactMap { $0 }.joined(separator: ": ") }
        return String(text.prefix(200))
    }
}
