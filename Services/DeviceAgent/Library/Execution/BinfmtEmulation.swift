#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
public import OrreryOCI

/// Which foreign platforms this kernel runs through user-mode emulation (QEMU) registered in `binfmt_misc`: a
/// handler that is enabled, matches the platform's ELF header and was registered with the `F` flag (the kernel opened
/// its interpreter then, so it works inside a container's root, where the interpreter's path does not exist). The
/// agent offers such a platform only when its owner opts in (`owner.emulated_platforms`).
public enum BinfmtEmulation {
    /// Where the kernel lists its handlers.
    public static let directory = "/proc/sys/fs/binfmt_misc"

    /// One registered handler, as `binfmt_misc/<name>` describes it.
    public struct Handler: Sendable, Equatable {
        public var name: String
        public var enabled: Bool
        public var interpreter: String
        public var flags: String
        public var offset: Int
        public var magic: [UInt8]
        public var mask: [UInt8]
    }

    /// The magic-matching handlers registered in `directory` (extension-matching ones and unreadable entries skipped).
    public static func handlers(in directory: String = directory) -> [Handler] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().compactMap { name in
            guard name != "register", name != "status",
                let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            else { return nil }
            return parse(text, name: name)
        }
    }

    /// A handler from its entry's text (`enabled`, `interpreter …`, `flags: …`, `offset …`, `magic …`, `mask …`).
    static func parse(_ text: String, name: String) -> Handler? {
        var handler = Handler(name: name, enabled: false, interpreter: "", flags: "", offset: 0, magic: [], mask: [])
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 1).map(String.init)
            switch words.first {
            case "enabled": handler.enabled = true
            case "interpreter": handler.interpreter = words.count > 1 ? words[1] : ""
            case "flags:": handler.flags = words.count > 1 ? words[1] : ""
            case "offset": handler.offset = words.count > 1 ? Int(words[1]) ?? -1 : -1
            case "magic": handler.magic = words.count > 1 ? hexBytes(words[1]) ?? [] : []
            case "mask": handler.mask = words.count > 1 ? hexBytes(words[1]) ?? [] : []
            default: continue
            }
        }
        return handler.magic.isEmpty ? nil : handler
    }

    private static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }

    /// The first 20 bytes of an executable ELF file built for `platform`; nil for a platform this does not know.
    static func elfHeader(of platform: Platform) -> [UInt8]? {
        guard platform.os == "linux" else { return nil }
        // ELF class (1: 32-bit, 2: 64-bit), byte order (1: little, 2: big) and e_machine.
        let (elfClass, order, machine): (UInt8, UInt8, UInt16)
        switch platform.architecture {
        case "amd64": (elfClass, order, machine) = (2, 1, 0x3e)
        case "arm64": (elfClass, order, machine) = (2, 1, 0xb7)
        case "arm": (elfClass, order, machine) = (1, 1, 0x28)
        case "386": (elfClass, order, machine) = (1, 1, 0x03)
        case "riscv64": (elfClass, order, machine) = (2, 1, 0xf3)
        case "ppc64le": (elfClass, order, machine) = (2, 1, 0x15)
        case "s390x": (elfClass, order, machine) = (2, 2, 0x16)
        default: return nil
        }
        var header: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, elfClass, order, 1] + [UInt8](repeating: 0, count: 9)
        // e_type ET_EXEC (2), then e_machine, in the file's byte order.
        header += order == 1 ? [2, 0] : [0, 2]
        header +=
            order == 1 ? [UInt8(machine & 0xff), UInt8(machine >> 8)] : [UInt8(machine >> 8), UInt8(machine & 0xff)]
        return header
    }

    /// The handler that runs `platform`'s executables in a container here, or why none does.
    public static func handler(for platform: Platform, among handlers: [Handler]) -> Result<Handler, Refusal> {
        guard let header = elfHeader(of: platform) else {
            return .failure(Refusal(description: "\(platform): not a platform emulation is known for"))
        }
        let matching = handlers.filter { handler in
            guard handler.offset == 0, handler.magic.count <= header.count else { return false }
            return handler.magic.indices.allSatisfy { index in
                let mask = index < handler.mask.count ? handler.mask[index] : 0xff
                return header[index] & mask == handler.magic[index] & mask
            }
        }
        guard !matching.isEmpty else {
            return .failure(
                Refusal(description: "\(platform): no binfmt_misc handler is registered for its executables"))
        }
        guard let usable = matching.first(where: { $0.enabled && $0.flags.contains("F") }) else {
            let found = matching.map {
                "\($0.name) (\($0.enabled ? "enabled" : "disabled"), flags \($0.flags.isEmpty ? "none" : $0.flags))"
            }
            return .failure(
                Refusal(
                    description:
                        "\(platform): the handler \(found.joined(separator: ", ")) must be enabled and registered with the F flag (its interpreter opened at registration, so containers reach it)"
                ))
        }
        return .success(usable)
    }

    /// Why a platform is not emulated here.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public let description: String
    }
}
