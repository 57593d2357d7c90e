import Foundation
import OrreryOCI
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// Which foreign platforms the agent offers: only those its owner lists whose binfmt_misc handler is enabled, matches
/// the platform's executables and has the F flag (usable inside a container's root).
@Suite("Emulated platforms (binfmt_misc)")
struct BinfmtEmulationTests {
    static let arm64 = Platform(architecture: "arm64", variant: "v8")
    /// qemu-user-static's aarch64 entry as Debian 12 registers it (/usr/lib/binfmt.d/qemu-aarch64.conf).
    static let debianAarch64 = """
        enabled
        interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
        flags: POF
        offset 0
        magic 7f454c460201010000000000000000000200b700
        mask ffffffffffffff00fffffffffffffffffeffffff

        """

    static func handlers(_ entries: [String: String]) throws -> [BinfmtEmulation.Handler] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("binfmt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for (name, text) in Array(entries) + [("register", ""), ("status", "enabled\n")] {
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return BinfmtEmulation.handlers(in: directory.path)
    }

    @Test("Debian's qemu-aarch64 entry runs linux/arm64 in containers; not linux/arm or linux/riscv64")
    func debianEntry() throws {
        let handlers = try Self.handlers(["qemu-aarch64": Self.debianAarch64])
        #expect(handlers.map(\.name) == ["qemu-aarch64"])
        let handler = try BinfmtEmulation.handler(for: Self.arm64, among: handlers).get()
        #expect(handler.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" && handler.flags == "POF")
        for other in [Platform(architecture: "arm", variant: "v7"), Platform(architecture: "riscv64")] {
            guard case .failure(let refusal) = BinfmtEmulation.handler(for: other, among: handlers) else {
                Issue.record("\(other) accepted")
                continue
            }
            #expect(refusal.description.contains("no binfmt_misc handler"), "\(refusal)")
        }
    }

    @Test("a handler without the F flag, or disabled, is refused with the reason; a differently named one is found")
    func refusals() throws {
        let withoutF = Self.debianAarch64.replacingOccurrences(of: "flags: POF", with: "flags: P")
        guard
            case .failure(let noF) = BinfmtEmulation.handler(
                for: Self.arm64, among: try Self.handlers(["qemu-aarch64": withoutF]))
        else { Issue.record("a handler without F accepted"); return }
        #expect(noF.description.contains("F flag"), "\(noF)")
        let disabled = Self.debianAarch64.replacingOccurrences(of: "enabled\n", with: "disabled\n")
        guard
            case .failure(let off) = BinfmtEmulation.handler(
                for: Self.arm64, among: try Self.handlers(["qemu-aarch64": disabled]))
        else { Issue.record("a disabled handler accepted"); return }
        #expect(off.description.contains("disabled"), "\(off)")
        // Found by what it matches, not by its name.
        let renamed = try Self.handlers(["arm64-emulator": Self.debianAarch64])
        #expect((try? BinfmtEmulation.handler(for: Self.arm64, among: renamed).get())?.name == "arm64-emulator")
    }

    @Test("the ELF header assumed for arm64 is the one of Debian's arm64 busybox, under the handler's mask")
    func realExecutable() throws {
        let binary = TestEnvironment.repositoryRoot.appendingPathComponent(".cache/arm64/busybox").path
        let header = try #require(BinfmtEmulation.elfHeader(of: Self.arm64))
        let handler = try #require(BinfmtEmulation.parse(Self.debianAarch64, name: "qemu-aarch64"))
        guard let file = FileManager.default.contents(atPath: binary) else {
            // Without the file (emulation-setup.sh not run), the header is checked against the kernel's own rule.
            #expect(handler.magic.indices.allSatisfy { header[$0] & handler.mask[$0] == handler.magic[$0] })
            return
        }
        let real = [UInt8](file.prefix(20))
        #expect(handler.magic.indices.allSatisfy { real[$0] & handler.mask[$0] == handler.magic[$0] })
        #expect(handler.magic.indices.allSatisfy { header[$0] & handler.mask[$0] == real[$0] & handler.mask[$0] })
    }

    @Test("the owner's emulated_platforms are checked: an unknown platform is refused naming the field")
    func ownerPolicy() throws {
        let good = OwnerPolicy(emulatedPlatforms: ["linux/arm64", "linux/arm/v7"])
        try good.validate()
        // Named as a device of that kind names itself: what placement matches images against.
        #expect(OwnerPolicy.platform("linux/arm64")?.description == "linux/arm64/v8")
        #expect(OwnerPolicy.platform("linux/arm")?.description == "linux/arm/v7")
        #expect(OwnerPolicy.platform("linux/arm/v6")?.description == "linux/arm/v6")
        #expect(OwnerPolicy.platform("linux/arm64/v9") == nil)
        for bad in ["arm64", "linux/sparc64", "linux//v7", "windows/amd64", "linux/arm64/v9"] {
            #expect(throws: OwnerPolicyError.self) { try OwnerPolicy(emulatedPlatforms: [bad]).validate() }
        }
    }
}
