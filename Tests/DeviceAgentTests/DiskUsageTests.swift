import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// What the allocation monitor's disk pass measures: the bytes an allocation's files take, and whether one file
/// reached the bound by itself (then its writer met RLIMIT_FSIZE, and the reason names that file's growth).
@Suite("Disk usage of an allocation")
struct DiskUsageTests {
    static let limit: UInt64 = 1 << 20

    static func write(_ path: String, bytes: Int) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(repeating: 0x78, count: bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test("an output at the bound and a few bytes beside it: over the disk, and one file reached the bound")
    func fileAtTheBound() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-disk-usage") { root in
            let runner = AllocationRunner(root: root.path, cgroups: nil)
            let base = runner.directory("alloc_1")
            try Self.write(base + "/stdout.log", bytes: Int(Self.limit))
            try Self.write(base + "/stderr.log", bytes: 12)
            let usage = runner.diskUsage("alloc_1", limit: Self.limit)
            #expect(usage.bytes == Self.limit + 12)
            #expect(usage.fileAtLimit)
        }
    }

    @Test("files in /work, each under the bound, together over it: over the disk, no file at the bound")
    func manyFiles() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-disk-usage") { root in
            let runner = AllocationRunner(root: root.path, cgroups: nil)
            let base = runner.directory("alloc_2")
            try Self.write(base + "/stdout.log", bytes: 5)
            for name in ["a", "b", "sub/c"] { try Self.write(base + "/work/" + name, bytes: 400 << 10) }
            let usage = runner.diskUsage("alloc_2", limit: Self.limit)
            #expect(usage.bytes > Self.limit)
            #expect(!usage.fileAtLimit)
            // Within the bound: every byte counted.
            try FileManager.default.removeItem(atPath: base + "/work/sub")
            #expect(runner.diskUsage("alloc_2", limit: Self.limit) == .init(bytes: 5 + 800 << 10, fileAtLimit: false))
        }
    }
}
