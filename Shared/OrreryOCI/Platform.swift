/// An OS and CPU as OCI names them (`linux`, `amd64`, `arm64`, variant `v8`), and how a device's architecture
/// (`uname -m`: `x86_64`, `aarch64`) maps onto them.
public struct Platform: Codable, Hashable, Sendable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
    }

    public init(os: String = "linux", architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// `linux/arm64/v8`.
    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    /// The OCI platform of a Linux machine whose `uname -m` is `machine`; nil when OCI has no name for it.
    public static func linux(machine: String) -> Platform? {
        switch machine.lowercased() {
        case "x86_64", "amd64": Platform(architecture: "amd64")
        case "aarch64", "arm64": Platform(architecture: "arm64", variant: "v8")
        case "armv7l", "armv7", "armhf": Platform(architecture: "arm", variant: "v7")
        case "armv6l", "armv6": Platform(architecture: "arm", variant: "v6")
        case "i386", "i686", "x86": Platform(architecture: "386")
        case "riscv64": Platform(architecture: "riscv64")
        case "ppc64le": Platform(architecture: "ppc64le")
        case "s390x": Platform(architecture: "s390x")
        default: nil
        }
    }

    /// Whether an image built for `offered` runs here. An unset variant on either side matches (arm64 images rarely
    /// name `v8`); an arm v6 image runs on v7 and v8 hardware.
    public func runs(_ offered: Platform) -> Bool {
        guard offered.os == os, offered.architecture == architecture else { return false }
        guard let mine = variant, let theirs = offered.variant else { return true }
        if architecture == "arm" {
            let order = ["v5", "v6", "v7", "v8"]
            guard let have = order.firstIndex(of: mine), let want = order.firstIndex(of: theirs) else {
                return mine == theirs
            }
            return want <= have
        }
        return mine == theirs
    }

    /// From an index, the manifest that runs here: an exact variant before a compatible one.
    public func choose(from index: ImageIndex) -> Descriptor? {
        let candidates = index.manifests.filter { descriptor in
            guard let platform = descriptor.platform else { return false }
            return runs(platform)
        }
        return candidates.first { $0.platform?.variant == variant } ?? candidates.first
    }
}
