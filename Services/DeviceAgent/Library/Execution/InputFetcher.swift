internal import Crypto
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryData
public import OrreryHTTPClient
public import OrreryOCI
internal import OrreryProto

/// An allocation's input files: fetched before it starts — from an https URL, through the URL its consumer presigned
/// for an s3:// object, or from an OCI registry — each checked against its sha256 (and its size when given), kept in
/// a content-addressed cache (`state/inputs`, least recently used evicted first, never one in use) and hard-linked
/// into the allocation's `inputs/` directory, which the sandbox sees read-only at /inputs. The cache is scoped by
/// consumer: a file one consumer fetched is never handed to another who only names its digest (digests are public in
/// contracts). Which files an allocation holds is written beside it (`inputs.list`), so a restarted agent keeps them.
public struct InputFetcher: Sendable {
    public let store: BlobStore
    /// Servers' certificates: the system's roots, or a CA file the owner names.
    public let trust: TLSTrust
    /// Where sources may be (public addresses only unless the owner allows any).
    public var addresses: AddressPolicy = .publicOnly

    public init(store: BlobStore, trust: TLSTrust) {
        self.store = store
        self.trust = trust
    }

    /// Opens the cache under `stateDirectory` with room for `capacityMiB`.
    public static func open(stateDirectory: String, capacityMiB: Int, trust: TLSTrust) throws -> InputFetcher {
        InputFetcher(
            store: try BlobStore(directory: stateDirectory + "/inputs", capacity: Int64(capacityMiB) << 20),
            trust: trust)
    }

    /// Fetches the allocation's inputs and links them under `base/inputs`; returns that directory (nil without
    /// inputs). `urls`: the s3:// inputs' presigned URLs by name; `tokens`: private oci:// inputs' pull tokens by
    /// name; `consumer`: whom the cache entries belong to.
    /// - Throws: `RunnerError` naming the input and why (nothing held when it throws).
    func fetch(
        _ spec: Orrery_Orchestrator_V1_AllocationSpec, urls: [String: String], tokens: [String: String] = [:],
        consumer: String, base: String
    ) async throws -> String? {
        guard !spec.inputs.isEmpty else { return nil }
        let paths: [String]
        do { paths = try InputRules.mountPaths(spec.inputs.map { ($0.name, $0.mount) }) } catch {
            throw RunnerError(message: "inputs: \(error)")
        }
        let directory = base + "/inputs"
        var held: [OCIDigest] = []
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            chmod(directory, 0o755)
            for (input, path) in zip(spec.inputs, paths) {
                let key = try await acquire(
                    input, url: urls[input.name], token: tokens[input.name], consumer: consumer)
                held.append(key)
                try Data(held.map(\.description).joined(separator: "\n").utf8).write(
                    to: URL(fileURLWithPath: base + "/inputs.list"))
                try link(store.path(of: key), to: directory + path.dropFirst(InputRules.root.count))
            }
        } catch {
            for key in held { await store.release(key) }
            try? FileManager.default.removeItem(atPath: base + "/inputs.list")
            throw error
        }
        return directory
    }

    /// Ends an allocation's use of its inputs.
    func release(base: String) async {
        for key in Self.held(base: base) { await store.release(key) }
        try? FileManager.default.removeItem(atPath: base + "/inputs.list")
    }

    /// Marks the inputs of allocations still running (found after a restart) in use again.
    public func retain(running bases: [String]) async {
        for base in bases {
            for key in Self.held(base: base) { await store.retain(key) }
        }
    }

    private static func held(base: String) -> [OCIDigest] {
        guard let text = try? String(contentsOfFile: base + "/inputs.list", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? OCIDigest(parsing: String($0)) }
    }

    /// The cache key of a file for a consumer: the sha256 of both, so one consumer's entry is not another's.
    static func cacheKey(_ digest: OCIDigest, consumer: String) -> OCIDigest {
        OCIDigest(sha256: SHA256.hash(data: Data("orrery-input\u{0}\(consumer)\u{0}\(digest)".utf8)))
    }

    private func acquire(
        _ input: Orrery_Orchestrator_V1_DataInput, url: String?, token: String?, consumer: String
    ) async throws -> OCIDigest {
        let what = "input \(input.name)"
        let source: DataSource
        let digest: OCIDigest
        do {
            source = try DataSource(parsing: input.source)
            digest = try OCIDigest(parsing: "sha256:" + input.sha256)
        } catch {
            throw RunnerError(message: "\(what): \(error)")
        }
        let expected = ExpectedBlob(
            digest: digest, size: input.sizeBytes > 0 ? Int64(clamping: input.sizeBytes) : nil,
            maximumSize: store.capacity)
        let key = Self.cacheKey(digest, consumer: consumer)
        let descriptor = Descriptor(
            mediaType: "application/octet-stream", digest: key, size: expected.size ?? expected.maximumSize)
        let (trust, addresses) = (trust, addresses)
        do {
            try await store.acquire(descriptor) { partial in
                switch source {
                case .web(let url):
                    try await WebBlob.download(url, expected, to: partial, trust: trust, addresses: addresses)
                case .s3(let location):
                    guard let url, let presigned = URL(string: url) else {
                        throw RunnerError(message: "no presigned URL came for \(location)")
                    }
                    try await WebBlob.download(presigned, expected, to: partial, trust: trust, addresses: addresses)
                case .oci(let reference):
                    try await Self.downloadArtifact(
                        reference, expected, to: partial, trust: trust, addresses: addresses,
                        credentials: token.map { .bearer($0) } ?? .anonymous)
                }
            }
        } catch {
            throw RunnerError(message: "\(what) (\(input.source.prefix(200))): \(error)")
        }
        return key
    }

    /// The layer of an OCI artifact whose digest is the input's: its manifest fetched by digest (and checked), then
    /// the blob; with the consumer's pull token for a private repository.
    static func downloadArtifact(
        _ reference: ImageReference, _ expected: ExpectedBlob, to partial: String, trust: TLSTrust,
        addresses: AddressPolicy, credentials: RegistryCredentials = .anonymous
    ) async throws {
        var client = RegistryClient(host: reference.apiHost, trust: trust, credentials: credentials)
        client.addresses = addresses
        let manifest = try await client.manifest(
            repository: reference.repository, reference: reference.manifestReference)
        guard case .image(let image) = manifest.content else {
            throw OCIError.invalidManifest("\(reference) is an index, not an artifact's manifest")
        }
        guard let layer = image.layers.first(where: { $0.digest == expected.digest }) else {
            throw OCIError.notFound("\(reference) has no layer with the digest \(expected.digest)")
        }
        guard layer.size <= expected.maximumSize, expected.size.map({ $0 == layer.size }) ?? true else {
            throw OCIError.digestMismatch(
                "\(reference)'s layer \(layer.digest) is \(layer.size) bytes, not the \(expected.size ?? expected.maximumSize) allowed"
            )
        }
        try await client.downloadBlob(repository: reference.repository, layer, to: partial)
    }

    /// Hard-links a cached file into the allocation's inputs (a copy when the two are on different file systems).
    private func link(_ source: String, to target: String) throws {
        let parent = String(target[..<(target.lastIndex(of: "/") ?? target.endIndex)])
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        unlink(target)
        if Glibc.link(source, target) == 0 { return }
        guard errno == EXDEV else {
            throw RunnerError(message: "cannot link \(source) to \(target): \(systemErrorText())")
        }
        try FileManager.default.copyItem(atPath: source, toPath: target)
        chmod(target, 0o444)
    }
}
