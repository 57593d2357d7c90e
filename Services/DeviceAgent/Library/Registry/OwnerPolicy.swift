#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryOCI
public import OrreryProto

/// The owner's policy for this device, from the `owner` object of the agent's config file: who owns it, where it
/// is, what it costs, what it offers and to whom.
public struct OwnerPolicy: Codable, Sendable, Equatable {
    public struct Location: Codable, Sendable, Equatable {
        public var country: String?
        public var region: String?
        public var latitude: Double?
        public var longitude: Double?
    }

    /// Prices in NTX base units.
    public struct Prices: Codable, Sendable, Equatable {
        public var perCoreHour: UInt64?
        public var perGbRamHour: UInt64?
        public var perGpuHour: UInt64?
        public var minimumPerJob: UInt64?

        enum CodingKeys: String, CodingKey {
            case perCoreHour = "per_core_hour", perGbRamHour = "per_gb_ram_hour", perGpuHour = "per_gpu_hour"
            case minimumPerJob = "minimum_per_job"
        }
    }

    public struct PayoutAddress: Codable, Sendable, Equatable {
        public var chain: String
        public var address: String
    }

    public var did: String?
    public var location: Location?
    public var prices: Prices?
    /// The share of the host offered, 0…1.
    public var share: Double?
    public var allowedConsumers: [String]?
    public var deniedConsumers: [String]?
    public var labels: [String: String]?
    /// Hours of availability, e.g. "08:00-20:00" (UTC).
    public var hours: String?
    public var payoutAddresses: [PayoutAddress]?
    /// Address ranges (`10.1.2.0/24`, `fd00::/8`, an address) that workloads with `network: true` may reach
    /// although private and special-purpose ranges are refused by default (`SandboxNetwork`).
    public var networkAllow: [String]?
    /// How long the directory of an ended allocation (its files, outputs and logs) is kept once every receipt of it
    /// was recorded, in hours (default 24; 0: removed as soon as it is paid).
    public var keepEndedHours: Double?
    /// Foreign platforms (`linux/arm64`, `linux/arm/v7` …) whose images this device may run through QEMU user
    /// emulation registered in binfmt_misc: offered only when the owner lists them here and the kernel has a usable
    /// handler (`BinfmtEmulation`). Emulated code runs several times slower; prices are the owner's to set.
    public var emulatedPlatforms: [String]?
    /// Whether consumers may run commands inside their sandboxes on this device (`orrery exec`); default true. Each
    /// session is logged in the notary's log either way it ends.
    public var allowExec: Bool?
    /// Connections into this device's sandboxes (ingress, port-forwards, ensemble partners) carried at once; past it
    /// a new one is refused with the reason (default 2048).
    public var maxConnections: Int?

    enum CodingKeys: String, CodingKey {
        case did, location, prices, share, labels, hours
        case allowedConsumers = "allowed_consumers", deniedConsumers = "denied_consumers"
        case payoutAddresses = "payout_addresses", networkAllow = "network_allow"
        case keepEndedHours = "keep_ended_hours", emulatedPlatforms = "emulated_platforms"
        case allowExec = "allow_exec", maxConnections = "max_connections"
    }

    /// The platform an `os/architecture[/variant]` name means, as a device of that kind names it (`linux/arm64` is
    /// `linux/arm64/v8`, `linux/arm` is `linux/arm/v7`: what placement matches images against); nil when it names none.
    static func platform(_ text: String) -> Platform? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        let variant = parts.count == 3 ? parts[2] : nil
        let machines = ["x86_64", "aarch64", "armv7l", "armv6l", "i686", "riscv64", "ppc64le", "s390x"]
        return machines.compactMap { Platform.linux(machine: $0) }.first { known in
            known.os == parts[0] && known.architecture == parts[1] && (variant == nil || variant == known.variant)
        }
    }

    /// How many connections into sandboxes this device carries at once (`max_connections`).
    public var connectionLimit: Int { maxConnections ?? 2048 }

    /// How long ended allocations are kept (`keep_ended_hours`).
    public var keepEnded: Duration { .seconds((keepEndedHours ?? 24) * 3600) }

    public static let none = OwnerPolicy()

    /// The `landmarks` of the agent's config file: gRPC addresses (`host:port`) of the registry and orchestrator
    /// replicas whose round-trip times the agent measures and reports.
    public static func landmarks(configFile: String?) throws -> [String] {
        guard let configFile, let data = FileManager.default.contents(atPath: configFile) else { return [] }
        struct File: Decodable { var landmarks: [String]? }
        guard let landmarks = try? JSONDecoder().decode(File.self, from: data).landmarks else { return [] }
        for landmark in landmarks where landmark.split(separator: ":").count < 2 {
            throw OwnerPolicyError(field: "landmarks", reason: "'\(landmark)' is not host:port")
        }
        return landmarks
    }

    /// Reads the `owner` object of a JSON config file; an absent file or object means no policy.
    /// - Throws: `OwnerPolicyError` naming the bad field.
    /// The orchestrators whose agent channel this device opens (`orchestrators` in the config file).
    public static func orchestrators(configFile: String?) throws -> [String] {
        guard let configFile, let data = FileManager.default.contents(atPath: configFile) else { return [] }
        struct File: Decodable { var orchestrators: [String]? }
        guard let orchestrators = try? JSONDecoder().decode(File.self, from: data).orchestrators else { return [] }
        for orchestrator in orchestrators where orchestrator.split(separator: ":").count < 2 {
            throw OwnerPolicyError(field: "orchestrators", reason: "'\(orchestrator)' is not host:port")
        }
        return orchestrators
    }

    public static func read(configFile: String?) throws -> OwnerPolicy {
        guard let configFile, let data = FileManager.default.contents(atPath: configFile) else { return .none }
        struct File: Decodable { var owner: OwnerPolicy? }
        let policy: OwnerPolicy
        do {
            policy = try JSONDecoder().decode(File.self, from: data).owner ?? .none
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
            // The path starts at the file's `owner` key.
            throw OwnerPolicyError(
                field: context.codingPath.map(\.stringValue).joined(separator: "."),
                reason: context.debugDescription)
        }
        try policy.validate()
        return policy
    }

    func validate() throws {
        if let share, !(0...1).contains(share) {
            throw OwnerPolicyError(field: "owner.share", reason: "a fraction 0…1")
        }
        if let keepEndedHours, !(0...8760).contains(keepEndedHours) {
            throw OwnerPolicyError(field: "owner.keep_ended_hours", reason: "hours, 0…8760")
        }
        if let maxConnections, !(1...65536).contains(maxConnections) {
            throw OwnerPolicyError(field: "owner.max_connections", reason: "connections, 1…65536")
        }
        if let hours, Self.hoursRange(hours) == nil {
            throw OwnerPolicyError(field: "owner.hours", reason: "'\(hours)' is not HH:MM-HH:MM")
        }
        if let country = location?.country, country.count != 2 || country != country.uppercased() {
            throw OwnerPolicyError(field: "owner.location.country", reason: "an ISO 3166-1 alpha-2 code such as DE")
        }
        if let did, !did.hasPrefix("did:key:z") { throw OwnerPolicyError(field: "owner.did", reason: "not a did:key") }
        for (index, text) in (emulatedPlatforms ?? []).enumerated() {
            guard let platform = Self.platform(text), BinfmtEmulation.elfHeader(of: platform) != nil else {
                throw OwnerPolicyError(
                    field: "owner.emulated_platforms[\(index)]",
                    reason:
                        "'\(text)' is not a Linux platform emulation is known for (linux/arm64, linux/arm/v7, linux/arm/v6, linux/amd64, linux/386, linux/riscv64, linux/ppc64le, linux/s390x)"
                )
            }
        }
        for (index, range) in (networkAllow ?? []).enumerated() where !SandboxNetwork.isRange(range) {
            throw OwnerPolicyError(
                field: "owner.network_allow[\(index)]", reason: "'\(range)' is not an address or ADDRESS/PREFIX")
        }
    }

    /// Minutes since midnight (UTC) of an `HH:MM-HH:MM` range.
    static func hoursRange(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: "-")
        func minutes(_ part: Substring) -> Int? {
            let clock = part.split(separator: ":")
            guard clock.count == 2, let hours = Int(clock[0]), let minutes = Int(clock[1]), (0...24).contains(hours),
                (0..<60).contains(minutes)
            else { return nil }
            return hours * 60 + minutes
        }
        guard parts.count == 2, let start = minutes(parts[0]), let end = minutes(parts[1]) else { return nil }
        return (start, end)
    }

    /// The capabilities this device advertises: what the host has, where it is, what it costs, its labels.
    public func capabilities(of inventory: HostInventory) -> Orrery_Registry_V1_DeviceCapabilities {
        var capabilities = inventory.capabilities
        if let share, share < 1 {
            capabilities.cpuCores = max(1, UInt32((Double(capabilities.cpuCores) * share).rounded(.down)))
            capabilities.ramBytes = UInt64(Double(capabilities.ramBytes) * share)
            capabilities.diskBytes = UInt64(Double(capabilities.diskBytes) * share)
        }
        if let location {
            capabilities.location.country = location.country ?? ""
            capabilities.location.region = location.region ?? ""
            capabilities.location.latitude = location.latitude ?? 0
            capabilities.location.longitude = location.longitude ?? 0
        }
        if let prices {
            capabilities.prices.perCoreHour = prices.perCoreHour ?? 0
            capabilities.prices.perGbRamHour = prices.perGbRamHour ?? 0
            capabilities.prices.perGpuHour = prices.perGpuHour ?? 0
            capabilities.prices.minimumPerJob = prices.minimumPerJob ?? 0
        }
        capabilities.labels = labels ?? [:]
        return capabilities
    }
}

/// A bad owner policy setting.
public struct OwnerPolicyError: Error, CustomStringConvertible, Sendable {
    public let field: String
    public let reason: String
    public var description: String { "invalid setting \(field) in the config file: \(reason)" }
}
