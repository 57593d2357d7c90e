import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// Checkpoints are inflated with a bound before tar sees them: a small archive that inflates hugely is refused.
@Suite("Bounded gunzip")
struct BoundedGunzipTests {
    /// `bytes` of zeros gzipped by the system's gzip (an independent implementation).
    static func gzippedZeros(_ bytes: Int, in directory: URL) async throws -> Data {
        let file = directory.appendingPathComponent("zeros-\(bytes)")
        try Data(count: bytes).write(to: file)
        let (status, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/bin/gzip"), arguments: ["-9", "-f", file.path])
        #expect(status == 0, "\(output)")
        return try Data(contentsOf: directory.appendingPathComponent("zeros-\(bytes).gz"))
    }

    @Test("within the limit it inflates exactly; past it, a bomb is refused and nothing is left behind")
    func bounded() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-gunzip") { directory in
            let small = try await Self.gzippedZeros(3 << 20, in: directory)
            let out = directory.appendingPathComponent("out").path
            try BoundedGunzip.inflate(small, to: out, limit: 3 << 20)
            #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(count: 3 << 20))
            // 64 MiB of zeros is ~64 KiB of gzip: refused at a 16 MiB bound, without writing it all.
            let bomb = try await Self.gzippedZeros(64 << 20, in: directory)
            #expect(bomb.count < 256 << 10)
            #expect(throws: BoundedGunzip.Refused.self) {
                try BoundedGunzip.inflate(bomb, to: out, limit: 16 << 20)
            }
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }

    @Test("not gzip, or cut short: refused")
    func malformed() throws {
        #expect(throws: BoundedGunzip.Refused.self) {
            try BoundedGunzip.inflate(Data("plain text, not gzip".utf8), limit: 1 << 20) { _ in }
        }
        var archive = Data()
        let gzipped: [UInt8] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0x4c]
        archive.append(contentsOf: gzipped)
        #expect(throws: BoundedGunzip.Refused.self) {
            try BoundedGunzip.inflate(archive, limit: 1 << 20) { _ in }
        }
    }
}
