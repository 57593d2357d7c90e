import Foundation
import OrreryBasics
import OrreryHTTPClient
import OrreryTestSupport
import Testing

@testable import OrreryOCI

/// Pulls from a real registry (docker-registry on loopback, TLS with its own CA) into an `ImageStore`.
@Suite(
    "Images pulled from a real registry", .serialized,
    .enabled(if: RegistryFixture.isAvailable, "needs docker-registry, umoci and skopeo (make test installs them)"))
struct ImagePullTests {
    static let amd64 = Platform(architecture: "amd64")

    static func store(_ directory: URL, capacity: Int64 = 1 << 30) throws -> ImageStore {
        try ImageStore(
            directory: directory.appendingPathComponent("images").path, blobCapacity: capacity, rootCapacity: capacity)
    }

    static func text(_ path: String) -> String? {
        (try? Data(contentsOf: URL(fileURLWithPath: path))).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Names in a directory (empty when it does not exist).
    static func names(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    @Test(
        "an image built with umoci is pulled, verified and unpacked; a restarted store pulls it again transferring no layer"
    )
    func pullAndCache() async throws {
        try await RegistryFixture.with("basic") { registry in
            let pushed = try await registry.push("busybox", as: "demo/busybox:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let reference = try registry.reference("demo/busybox:v1")
                let first = try await Self.store(directory).pull(
                    reference, platform: Self.amd64, client: registry.client("reader"))
                #expect(first.reference.digest == pushed.digest)
                #expect(first.manifestDigest == pushed.digest)
                #expect(first.downloadedLayers == 1)
                #expect(first.configuration.config?.cmd == ["/bin/cat", "/etc/greeting"])
                #expect(first.configuration.config?.env?.contains("GREETING=image") == true)
                #expect(Self.text(first.rootPath + "/etc/greeting") == "hello from the image\n")
                #expect(FileStatus(path: first.rootPath + "/bin/busybox")?.permissions == 0o755)
                let downloads = registry.blobDownloads().count
                #expect(downloads == 2)  // the configuration and the one layer

                // A new store on the same directory: an agent restarted.
                let again = try await Self.store(directory).pull(
                    reference, platform: Self.amd64, client: registry.client("reader"))
                #expect(again.downloadedLayers == 0)
                #expect(again.rootPath == first.rootPath)
                #expect(registry.blobDownloads().count == downloads)
            }
        }
    }

    @Test("token authentication: a reader pulls; a wrong password and a user without access are refused by name")
    func tokenAuthentication() async throws {
        try await RegistryFixture.with("token") { registry in
            _ = try await registry.push("busybox", as: "demo/private:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                let reference = try registry.reference("demo/private:v1")
                let pulled = try await store.pull(reference, platform: Self.amd64, client: registry.client("reader"))
                #expect(Self.text(pulled.rootPath + "/etc/greeting") == "hello from the image\n")
                for client in [
                    registry.client("reader", password: "wrong"), registry.client("other"), registry.client(nil),
                ] {
                    await #expect {
                        _ = try await store.pull(reference, platform: Self.amd64, client: client)
                    } throws: { error in
                        guard case .unauthorized(let why) = error as? OCIError else { return false }
                        return why.contains("demo/private") || why.contains("token")
                    }
                }
            }
        }
    }

    @Test("an index: each platform gets its manifest; a platform it does not offer is refused and nothing is kept")
    func platforms() async throws {
        try await RegistryFixture.with("basic") { registry in
            let multi = try await registry.push("multi", as: "demo/multi:v1")
            _ = try await registry.push("arm-only", as: "demo/arm:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                let client = registry.client("reader")
                let amd = try await store.pull(
                    try registry.reference("demo/multi:v1"), platform: Self.amd64, client: client)
                #expect(amd.reference.digest == multi.digest)
                #expect(amd.manifestDigest != multi.digest)
                #expect(FileStatus(path: amd.rootPath + "/bin/busybox") != nil)
                let arm = try await store.pull(
                    try registry.reference("demo/multi:v1"), platform: Platform(architecture: "arm64", variant: "v8"),
                    client: client)
                #expect(Self.text(arm.rootPath + "/marker") == "arm64")
                let roots = Self.names(store.rootsDirectory)
                await #expect {
                    _ = try await store.pull(
                        try registry.reference("demo/arm:v1"), platform: Self.amd64, client: client)
                } throws: { error in
                    guard case .noMatchingPlatform(let why) = error as? OCIError else { return false }
                    return why.contains("linux/arm64/v8")
                }
                #expect(Self.names(store.rootsDirectory) == roots)
            }
        }
    }

    @Test("a tampered blob is refused by its digest; nothing of it stays in the store")
    func tampered() async throws {
        try await RegistryFixture.with("basic") { registry in
            let pushed = try await registry.push("busybox", as: "demo/tampered:v1")
            try await registry.tamper(pushed.layers[0])
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                await #expect {
                    _ = try await store.pull(
                        try registry.reference("demo/tampered:v1"), platform: Self.amd64,
                        client: registry.client("reader"))
                } throws: { error in
                    guard case .digestMismatch(let why) = error as? OCIError else { return false }
                    return why.contains(pushed.layers[0].description)
                }
                #expect(!(await store.blobs.contains(pushed.layers[0])))
                #expect(Self.names(store.blobs.directory + "/incoming").isEmpty)
                #expect(Self.names(store.rootsDirectory).isEmpty)
            }
        }
    }

    @Test("a layer that writes through a link out of the root is refused; nothing is written outside or kept")
    func escape() async throws {
        try await RegistryFixture.with("basic") { registry in
            _ = try await registry.push("escape", as: "demo/escape:v1")
            unlink("/tmp/orrery-escaped")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                await #expect {
                    _ = try await store.pull(
                        try registry.reference("demo/escape:v1"), platform: Self.amd64,
                        client: registry.client("reader"))
                } throws: { error in
                    guard case .unsafeLayer(let why) = error as? OCIError else { return false }
                    return why.contains("leads out of the image's root")
                }
                #expect(FileStatus(path: "/tmp/orrery-escaped", followingLinks: false) == nil)
                #expect(Self.names(store.rootsDirectory).isEmpty)
            }
        }
    }

    @Test("a client kept to public addresses refuses a registry on loopback, by its address")
    func publicAddressesOnly() async throws {
        try await RegistryFixture.with("basic") { registry in
            _ = try await registry.push("busybox", as: "demo/near:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                var client = registry.client("reader")
                client.addresses = .publicOnly
                await #expect {
                    _ = try await Self.store(directory).pull(
                        try registry.reference("demo/near:v1"), platform: Self.amd64, client: client)
                } throws: { error in
                    guard case .forbiddenAddress(let why) = error as? OCIError else { return false }
                    return why.contains("127.0.0.1 is loopback")
                }
                #expect(registry.blobDownloads().isEmpty)
            }
        }
    }

    @Test("an image of more layers than a device accepts is refused before any layer is fetched")
    func tooManyLayers() async throws {
        try await RegistryFixture.with("basic") { registry in
            let pushed = try await registry.push("many-layers", as: "demo/layers:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                await #expect {
                    _ = try await store.pull(
                        try registry.reference("demo/layers:v1"), platform: Self.amd64,
                        client: registry.client("reader"))
                } throws: { error in
                    guard case .invalidManifest(let why) = error as? OCIError else { return false }
                    return why.contains("257 layers")
                }
                #expect(!registry.blobDownloads().contains { $0.contains(pushed.layers[0].description) })
            }
        }
    }

    @Test("whiteouts and opaque directories across layers, and a zstd layer")
    func whiteoutsAndZstd() async throws {
        try await RegistryFixture.with("basic") { registry in
            _ = try await registry.push("whiteout", as: "demo/whiteout:v1")
            _ = try await registry.push("zstd", as: "demo/zstd:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                let client = registry.client("reader")
                let image = try await store.pull(
                    try registry.reference("demo/whiteout:v1"), platform: Self.amd64, client: client)
                #expect(Self.text(image.rootPath + "/data/keep") == "keep")
                #expect(Self.text(image.rootPath + "/data/old") == nil)
                #expect(Self.names(image.rootPath + "/cache") == ["fresh"])
                let zstd = try await store.pull(
                    try registry.reference("demo/zstd:v1"), platform: Self.amd64, client: client)
                #expect(Self.text(zstd.rootPath + "/zstd-marker") == "zstd layer")
            }
        }
    }

    @Test("a download cut short (an agent killed mid-pull) is resumed with a range request, not started again")
    func resume() async throws {
        try await RegistryFixture.with("basic") { registry in
            let pushed = try await registry.push("big:8", as: "demo/big:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                // What a killed agent leaves: the first part of the largest layer in the store's incoming files.
                let largest = pushed.layers.last!
                let hex = largest.hex
                let stored = registry.ready.storage + "/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
                let whole = try Data(contentsOf: URL(fileURLWithPath: stored))
                try whole.prefix(whole.count / 2).write(
                    to: URL(fileURLWithPath: store.blobs.directory + "/incoming/" + hex))
                let image = try await store.pull(
                    try registry.reference("demo/big:v1"), platform: Self.amd64, client: registry.client("reader"))
                #expect(FileStatus(path: image.rootPath + "/big/part3")?.size == 2 << 20)
                let ranged = registry.blobDownloads().filter { $0.contains(hex) }
                #expect(ranged.count == 1)
                #expect(ranged.first?.contains("\" 206 ") == true)
                #expect(ranged.first?.contains(" 206 \(whole.count - whole.count / 2) ") == true)
            }
        }
    }

    @Test("concurrent pulls of one image download each blob once")
    func coalesced() async throws {
        try await RegistryFixture.with("basic") { registry in
            let pushed = try await registry.push("big:4", as: "demo/shared:v1")
            try await TestEnvironment.withTemporaryDirectory("orrery-images") { directory in
                let store = try Self.store(directory)
                let reference = try registry.reference("demo/shared:v1")
                let client = registry.client("reader")
                try await withThrowingTaskGroup(of: PulledImage.self) { group in
                    for _ in 0..<4 {
                        group.addTask { try await store.pull(reference, platform: Self.amd64, client: client) }
                    }
                    var paths: Set<String> = []
                    for try await image in group { paths.insert(image.rootPath) }
                    #expect(paths.count == 1)
                }
                #expect(registry.blobDownloads().count == pushed.layers.count + 1)
            }
        }
    }

    @Test("the blob store evicts the least recently used blob nobody uses, never one in use")
    func eviction() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-blobs") { directory in
            let store = try BlobStore(directory: directory.path, capacity: 3000)
            func blob(_ fill: UInt8) -> (Descriptor, @Sendable (String) async throws -> Void) {
                let bytes = [UInt8](repeating: fill, count: 1000)
                let descriptor = Descriptor(
                    mediaType: "application/octet-stream", digest: OCIDigest(sha256: SHA256Helper.hash(bytes)),
                    size: 1000)
                return (descriptor, { path in try Data(bytes).write(to: URL(fileURLWithPath: path)) })
            }
            let blobs = (1...4).map { blob(UInt8($0)) }
            for (descriptor, write) in blobs.prefix(3) { try await store.acquire(descriptor, download: write) }
            await store.release(blobs[1].0.digest)
            await store.release(blobs[2].0.digest)
            try await store.acquire(blobs[3].0, download: blobs[3].1)
            // Over capacity: blob 1 is the oldest idle one; blob 0 is still in use.
            #expect(await store.contains(blobs[0].0.digest))
            #expect(!(await store.contains(blobs[1].0.digest)))
            #expect(await store.contains(blobs[2].0.digest))
            #expect(await store.size == 3000)
            // A reopened store reads back what it holds.
            let reopened = try BlobStore(directory: directory.path, capacity: 3000)
            #expect(await reopened.size == 3000)
        }
    }
}
