import Foundation
import OrreryHTTPClient
import OrreryOCI
import OrreryProto
import OrreryTestSupport
import SwiftProtobuf
import Testing

@testable import DeviceAgent

/// The agent's input cache against a real registry (an OCI artifact on docker-registry, loopback).
@Suite(
    "Inputs fetched by the agent", .serialized,
    .enabled(if: RegistryFixture.isAvailable, "needs docker-registry, umoci and skopeo (make test installs them)"))
struct InputFetcherTests {
    @Test(
        "an OCI artifact's layer is fetched, verified and linked read-only where the spec mounts it; another consumer naming the same digest does not get the cached file; held inputs survive a restart"
    )
    func artifactInputsPerConsumer() async throws {
        try await RegistryFixture.with("token") { registry in
            try await TestEnvironment.withTemporaryDirectory("orrery-inputs") { directory in
                let file = directory.appendingPathComponent("data.bin")
                let bytes = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
                try bytes.write(to: file)
                let pushed = try await registry.push("artifact:" + file.path, as: "public/dataset:v1")
                try FileManager.default.createDirectory(
                    at: directory.appendingPathComponent("state"), withIntermediateDirectories: true)
                let layer = try #require(pushed.layers.first)
                var fetcher = try InputFetcher.open(
                    stateDirectory: directory.appendingPathComponent("state").path, capacityMiB: 64,
                    trust: .caFile(registry.ready.ca))
                fetcher.addresses = .any
                var spec = Orrery_Orchestrator_V1_AllocationSpec()
                spec.inputs = [
                    .with {
                        $0.name = "dataset"
                        $0.source = "oci://\(registry.ready.address)/public/dataset@\(pushed.digest)"
                        $0.sha256 = layer.hex
                        $0.mount = "/inputs/sets/data.bin"
                    }
                ]
                let base = directory.appendingPathComponent("allocation").path
                let inputs = try #require(
                    try await fetcher.fetch(spec, urls: [:], consumer: "did:key:alice", base: base))
                let linked = inputs + "/sets/data.bin"
                #expect(try Data(contentsOf: URL(fileURLWithPath: linked)) == bytes)
                #expect((try FileManager.default.attributesOfItem(atPath: linked)[.posixPermissions] as? Int) == 0o444)
                #expect(registry.blobDownloads().count == 1)

                // The same consumer again: from the cache, nothing downloaded.
                let again = directory.appendingPathComponent("again").path
                _ = try await fetcher.fetch(spec, urls: [:], consumer: "did:key:alice", base: again)
                #expect(registry.blobDownloads().count == 1)

                // Another consumer naming the same digest at a source it cannot read gets nothing from the cache.
                var other = spec
                other.inputs[0].source = "oci://\(registry.ready.address)/demo/secret@\(pushed.digest)"
                await #expect(throws: RunnerError.self) {
                    _ = try await fetcher.fetch(
                        other, urls: [:], consumer: "did:key:mallory",
                        base: directory.appendingPathComponent("mallory").path)
                }
                #expect(
                    !FileManager.default.fileExists(
                        atPath: directory.appendingPathComponent("mallory/inputs.list").path))

                // A digest the artifact has no layer for: refused, named.
                var missing = spec
                missing.inputs[0].sha256 = String(repeating: "1", count: 64)
                await #expect {
                    _ = try await fetcher.fetch(
                        missing, urls: [:], consumer: "did:key:alice", base: directory.appendingPathComponent("m").path)
                } throws: { error in
                    "\(error)".contains("input dataset") && "\(error)".contains("no layer with the digest")
                }

                // Held by two allocations; a restarted agent (a new cache over the same directory) keeps them held.
                let reopened = try InputFetcher.open(
                    stateDirectory: directory.appendingPathComponent("state").path, capacityMiB: 64,
                    trust: .caFile(registry.ready.ca))
                await reopened.retain(running: [base, again])
                let key = InputFetcher.cacheKey(layer, consumer: "did:key:alice")
                #expect(await reopened.store.contains(key))
                await reopened.release(base: base)
                await reopened.release(base: again)
                #expect(!FileManager.default.fileExists(atPath: base + "/inputs.list"))
            }
        }
    }
}
