internal import OrreryOCI

/// Which devices run an image, by platform: an image names the platforms it was built for ("linux/arm64"), a device
/// names the one it is ("linux/arm64/v8", as `Platform.linux(machine:)` writes it); this maps the one onto the other.
enum ImagePlatforms {
    /// `os/arch[/variant]`; nil when malformed.
    static func parse(_ text: String) -> Platform? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.count <= 32 }) else { return nil }
        return Platform(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    /// Every platform a device can name (the machines agents run on).
    static let devicePlatforms: [Platform] = [
        "x86_64", "aarch64", "armv7l", "armv6l", "i686", "riscv64", "ppc64le", "s390x",
    ].compactMap { Platform.linux(machine: $0) }

    /// The device platforms that run an image offering `offered`; empty when it offers none (then any runs it), and
    /// a platform no device names when no device platform runs it.
    static func devicePlatforms(running offered: [String]) -> Set<String> {
        let images = offered.compactMap(parse)
        guard !images.isEmpty else { return [] }
        let running = Set(devicePlatforms.filter { device in images.contains(where: device.runs) }.map(\.description))
        return running.isEmpty ? ["none/none"] : running
    }
}
