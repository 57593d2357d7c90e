import Testing

@testable import OrreryOCI

@Suite("Image references, platforms and challenges")
struct ImageReferenceTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    @Test(
        "references read as the distribution project reads them",
        arguments: [
            ("busybox", "docker.io", "library/busybox", "latest", false),
            ("busybox:1.36", "docker.io", "library/busybox", "1.36", false),
            ("team/app", "docker.io", "team/app", "latest", false),
            ("127.0.0.1:5000/demo/app:v1", "127.0.0.1:5000", "demo/app", "v1", false),
            ("localhost/app", "localhost", "app", "latest", false),
            ("ghcr.io/org/a.b_c__d--e:1.0-rc", "ghcr.io", "org/a.b_c__d--e", "1.0-rc", false),
            ("ghcr.io/org/app@" + digest, "ghcr.io", "org/app", nil, true),
            ("ghcr.io/org/app:v2@" + digest, "ghcr.io", "org/app", "v2", true),
        ] as [(String, String, String, String?, Bool)])
    func valid(text: String, registry: String, repository: String, tag: String?, pinned: Bool) throws {
        let reference = try ImageReference(parsing: text)
        #expect(reference.registry == registry)
        #expect(reference.repository == repository)
        #expect(reference.tag == tag)
        #expect((reference.digest != nil) == pinned)
        #expect(try ImageReference(parsing: reference.description) == reference)
    }

    @Test(
        "malformed references are refused",
        arguments: [
            "", "UPPER/app", "app:", "app:-bad", "ghcr.io/org/app@sha256:short",
            "ghcr.io/org/app@md5:" + String(repeating: "a", count: 32),
            "ghcr.io//app", "ghcr.io/org/app_", "bad host:5000/app", "host:99999/app", "-a.io/app",
            "ghcr.io/" + String(repeating: "a", count: 260),
        ])
    func invalid(text: String) {
        #expect(throws: OCIError.self) { try ImageReference(parsing: text) }
    }

    @Test("Docker Hub's API host differs from its name")
    func apiHost() throws {
        #expect(try ImageReference(parsing: "busybox").apiHost == "registry-1.docker.io")
        #expect(try ImageReference(parsing: "ghcr.io/a/b").apiHost == "ghcr.io")
    }

    @Test("a device's machine maps to its OCI platform, and an index offers it or not")
    func platforms() throws {
        #expect(Platform.linux(machine: "x86_64") == Platform(architecture: "amd64"))
        #expect(Platform.linux(machine: "aarch64") == Platform(architecture: "arm64", variant: "v8"))
        #expect(Platform.linux(machine: "mips") == nil)
        let digest = try OCIDigest(parsing: Self.digest)
        let index = ImageIndex(
            schemaVersion: 2, mediaType: MediaType.ociIndex,
            manifests: [
                Descriptor(
                    mediaType: MediaType.ociManifest, digest: digest, size: 1, platform: Platform(architecture: "amd64")
                ),
                Descriptor(
                    mediaType: MediaType.ociManifest, digest: digest, size: 2,
                    platform: Platform(architecture: "arm", variant: "v6")),
                Descriptor(
                    mediaType: MediaType.ociManifest, digest: digest, size: 3,
                    platform: Platform(architecture: "arm64")),
            ])
        #expect(Platform(architecture: "amd64").choose(from: index)?.size == 1)
        #expect(Platform(architecture: "arm64", variant: "v8").choose(from: index)?.size == 3)
        #expect(Platform(architecture: "arm", variant: "v7").choose(from: index)?.size == 2)
        #expect(Platform(architecture: "arm", variant: "v5").choose(from: index) == nil)
        #expect(Platform(architecture: "riscv64").choose(from: index) == nil)
    }

    @Test("WWW-Authenticate challenges are read with quoted parameters")
    func challenges() {
        let bearer = Challenge(
            header: #"Bearer realm="https://auth.example/token",service="reg, 1",scope="repository:a/b:pull""#)
        #expect(bearer?.scheme == "bearer")
        #expect(bearer?.parameters["realm"] == "https://auth.example/token")
        #expect(bearer?.parameters["service"] == "reg, 1")
        #expect(bearer?.parameters["scope"] == "repository:a/b:pull")
        #expect(Challenge(header: #"Basic realm="Registry Realm""#)?.scheme == "basic")
        #expect(Challenge(header: #"Bearer realm="unterminated"#) == nil)
    }
}
