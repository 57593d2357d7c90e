import Foundation
import OrreryBasics
import OrreryTestSupport
import Testing

@testable import OrreryOCI

/// Layers written by an independent tar writer (Python's tarfile), some hostile on purpose, unpacked by
/// `RootFilesystemWriter` into a root inside a temporary directory that also holds a sentinel outside the root.
@Suite("Image layers unpacked into a root")
struct RootFilesystemWriterTests {
    static let limits = RootFilesystemWriter.Limits(bytes: 64 << 20, entries: 10_000)

    /// Unpacks `layers` (each a member list) into `<directory>/rootfs`; returns the root's path.
    static func unpack(
        _ layers: [[[String: Any]]], in directory: URL, compression: LayerCompression = .gzip,
        limits: RootFilesystemWriter.Limits = limits, format: String = "pax"
    ) async throws -> String {
        let root = directory.appendingPathComponent("rootfs").path
        var written: [(String, LayerFixture.Written)] = []
        for (index, members) in layers.enumerated() {
            let path = directory.appendingPathComponent("layer\(index)").path
            written.append(
                (path, try await LayerFixture.write(members, to: path, compression: compression, format: format)))
        }
        let writer = try RootFilesystemWriter(rootPath: root, limits: limits)
        for (path, layer) in written {
            try writer.apply(layer: path, compression: compression, diffID: layer.diffID)
        }
        try writer.finish()
        return root
    }

    static func text(_ path: String) -> String? {
        (try? Data(contentsOf: URL(fileURLWithPath: path))).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test(
        "files, directories, links, long names and modes as written; setuid cleared, devices dropped",
        arguments: [("pax", LayerCompression.gzip), ("gnu", .zstd), ("ustar", LayerCompression.uncompressed)])
    func members(format: String, compression: LayerCompression) async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let longName = "deep/" + String(repeating: "n", count: 90) + "/" + String(repeating: "m", count: 60)
            let members: [[String: Any]] = [
                LayerFixture.directory("bin", mode: 0o555),
                LayerFixture.file("bin/tool", "#!/bin/sh\necho hi\n", mode: 0o4755),
                LayerFixture.file("etc/motd", "hello"),
                LayerFixture.link("etc/motd-link", to: "/etc/motd"),
                LayerFixture.link("etc/motd-hard", to: "etc/motd", hard: true),
                ["name": "dev/null", "type": "chardev"],
                ["name": "run/pipe", "type": "fifo", "mode": 0o600],
                LayerFixture.file(format == "ustar" ? "short" : longName, "long"),
            ]
            let root = try await Self.unpack([members], in: directory, compression: compression, format: format)
            #expect(Self.text(root + "/bin/tool") == "#!/bin/sh\necho hi\n")
            #expect(FileStatus(path: root + "/bin/tool")?.permissions == 0o755)
            #expect(FileStatus(path: root + "/bin")?.permissions == 0o555)
            #expect(Self.text(root + "/etc/motd") == "hello")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/etc/motd-link") == "/etc/motd")
            var first = stat()
            var second = stat()
            stat(root + "/etc/motd", &first)
            stat(root + "/etc/motd-hard", &second)
            #expect(first.st_ino == second.st_ino)
            #expect(FileStatus(path: root + "/dev/null", followingLinks: false) == nil)
            var pipe = stat()
            #expect(lstat(root + "/run/pipe", &pipe) == 0 && pipe.st_mode & S_IFMT == S_IFIFO)
            #expect(Self.text(root + "/" + (format == "ustar" ? "short" : longName)) == "long")
        }
    }

    @Test("a whiteout hides a lower layer's file, an opaque directory its contents; the same layer's files stay")
    func whiteouts() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let lower: [[String: Any]] = [
                LayerFixture.file("a/x", "x"), LayerFixture.file("a/y", "y"), LayerFixture.file("b/z", "z"),
                LayerFixture.file("b/sub/deep", "d"), LayerFixture.directory("gone"), LayerFixture.file("gone/f", "f"),
            ]
            let upper: [[String: Any]] = [
                LayerFixture.file("b/new", "new"), LayerFixture.file("a/.wh.x", ""),
                LayerFixture.file("b/.wh..wh..opq", ""), LayerFixture.file(".wh.gone", ""),
            ]
            let root = try await Self.unpack([lower, upper], in: directory)
            #expect(Self.text(root + "/a/x") == nil)
            #expect(Self.text(root + "/a/y") == "y")
            #expect(Self.text(root + "/b/z") == nil)
            #expect(Self.text(root + "/b/sub/deep") == nil)
            #expect(Self.text(root + "/b/new") == "new")
            #expect(FileStatus(path: root + "/gone") == nil)
            #expect(FileStatus(path: root + "/a/.wh.x") == nil)
        }
    }

    /// Layers that try to leave the root, by name.
    static func escape(_ name: String) -> [[String: Any]] {
        switch name {
        case "dot-dot member": [LayerFixture.file("../outside/evil", "x")]
        case "relative link":
            [LayerFixture.link("escape", to: "../../../../outside"), LayerFixture.file("escape/evil", "x")]
        case "link to parent": [LayerFixture.link("up", to: ".."), LayerFixture.file("up/outside/evil", "x")]
        default: [LayerFixture.link("hard", to: "../outside/secret", hard: true)]
        }
    }

    @Test(
        "a member that leaves the root is refused and nothing outside it is written",
        arguments: ["dot-dot member", "relative link", "link to parent", "hard link"])
    func escapes(name: String) async throws {
        let members = Self.escape(name)
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let outside = directory.appendingPathComponent("outside")
            try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
            try Data("secret".utf8).write(to: outside.appendingPathComponent("secret"))
            do {
                _ = try await Self.unpack([members], in: directory)
                Issue.record("the layer was unpacked")
            } catch let error as OCIError {
                guard case .unsafeLayer(let reason) = error else {
                    Issue.record("refused for another reason: \(error)")
                    return
                }
                #expect(reason.contains("refused") || reason.contains("not in the image"))
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path) == ["secret"])
        }
    }

    @Test("an absolute link is resolved inside the root: a file written through it lands in the root")
    func absoluteLinkStaysInside() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let members: [[String: Any]] = [
                LayerFixture.directory("usr/lib"), LayerFixture.link("lib", to: "/usr/lib"),
                LayerFixture.file("lib/libx.so", "elf"),
            ]
            let root = try await Self.unpack([members], in: directory)
            #expect(Self.text(root + "/usr/lib/libx.so") == "elf")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/lib") == "/usr/lib")
        }
    }

    @Test("a later layer replaces a link with a file rather than writing through it")
    func replacesLinks() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let outside = directory.appendingPathComponent("target")
            try Data("keep".utf8).write(to: outside)
            let root = try await Self.unpack(
                [[LayerFixture.link("f", to: outside.path)], [LayerFixture.file("f", "replaced")]], in: directory)
            #expect(Self.text(root + "/f") == "replaced")
            #expect(Self.text(outside.path) == "keep")
        }
    }

    @Test("a layer that inflates past the limit is refused as a bomb")
    func bomb() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let members: [[String: Any]] = [["name": "zeros", "type": "file", "size_zeros": 32 << 20]]
            do {
                _ = try await Self.unpack(
                    [members], in: directory, limits: .init(bytes: 4 << 20, entries: 100))
                Issue.record("the bomb was unpacked")
            } catch let error as OCIError {
                #expect(error.description.contains("decompression bomb"))
            }
        }
    }

    @Test("a layer whose uncompressed digest differs from the image's diff ID is refused")
    func wrongDiffID() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let path = directory.appendingPathComponent("layer").path
            _ = try await LayerFixture.write([LayerFixture.file("a", "a")], to: path)
            let other = try await LayerFixture.write(
                [LayerFixture.file("b", "b")], to: directory.appendingPathComponent("other").path)
            let writer = try RootFilesystemWriter(
                rootPath: directory.appendingPathComponent("rootfs").path, limits: Self.limits)
            #expect(throws: OCIError.self) {
                try writer.apply(layer: path, compression: .gzip, diffID: other.diffID)
            }
        }
    }

    @Test("a truncated gzip layer is refused")
    func truncated() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-layer") { directory in
            let path = directory.appendingPathComponent("layer").path
            let written = try await LayerFixture.write(
                [LayerFixture.file("a", String(repeating: "abc", count: 10_000))], to: path)
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
            let writer = try RootFilesystemWriter(
                rootPath: directory.appendingPathComponent("rootfs").path, limits: Self.limits)
            #expect(throws: OCIError.self) {
                try writer.apply(layer: path, compression: .gzip, diffID: written.diffID)
            }
        }
    }
}
