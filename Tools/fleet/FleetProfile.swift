import Foundation
import OrreryProto
import SwiftProtobuf

/// What a simulated fleet is made of: hardware classes and countries, each a weighted choice, and prices drawn per
/// device from a class's range. Read from JSON (`--profile FILE`); `standard` otherwise.
struct FleetProfile: Codable, Sendable {
    /// A kind of machine and the share of the fleet that is one.
    struct Hardware: Codable, Sendable {
        var name: String
        var weight: Double
        var architecture: String
        var cores: UInt32
        var ramGiB: UInt64
        var diskGiB: UInt64
        var gpuModel: String?
        var gpuCount: UInt32?
        var gpuVramGiB: UInt64?
        /// NTX per core-hour, drawn uniformly from [low, high].
        var pricePerCoreHour: [UInt64]
        /// NTX per GPU-hour, drawn uniformly from [low, high] (GPU classes).
        var pricePerGpuHour: [UInt64]?
    }

    /// Where devices are and how far (in round-trip time) from the control plane.
    struct Country: Codable, Sendable {
        var code: String
        var weight: Double
        var latitude: Double
        var longitude: Double
        /// The round trip to the services a device here reports, ±20 % per sample.
        var rttMs: Double
        /// Regions within the country ("r0" …); 1 when absent.
        var regions: Int?
    }

    var hardware: [Hardware]
    var countries: [Country]

    /// Reads a profile, refusing one that could not describe a device.
    static func read(_ path: String) throws -> FleetProfile {
        let profile = try JSONDecoder().decode(FleetProfile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        try profile.validate()
        return profile
    }

    func validate() throws {
        guard !hardware.isEmpty, !countries.isEmpty else {
            throw FleetError("a profile needs at least one hardware class and one country")
        }
        func isRange(_ range: [UInt64]?) -> Bool { range.map { $0.count == 2 && $0[0] <= $0[1] } ?? true }
        for machine in hardware {
            guard machine.weight > 0, machine.cores > 0, machine.ramGiB > 0, isRange(machine.pricePerCoreHour)
            else {
                throw FleetError(
                    "hardware class \(machine.name): weight, cores and RAM must be positive and pricePerCoreHour [low, high]"
                )
            }
            // A GPU class names its model, how many and their memory, and may price them; a class without GPUs none.
            let gpuFields = [machine.gpuModel != nil, machine.gpuCount != nil, machine.gpuVramGiB != nil]
            guard gpuFields.allSatisfy({ $0 }) || (gpuFields.allSatisfy({ !$0 }) && machine.pricePerGpuHour == nil),
                (machine.gpuCount ?? 1) > 0, (machine.gpuVramGiB ?? 1) > 0, isRange(machine.pricePerGpuHour)
            else {
                throw FleetError(
                    "hardware class \(machine.name): gpuModel, gpuCount (≥ 1) and gpuVramGiB (≥ 1) go together, and pricePerGpuHour [low, high] only with them"
                )
            }
        }
        for name in Dictionary(grouping: hardware.map(\.name), by: { $0 }).filter({ $0.value.count > 1 }).keys {
            throw FleetError("hardware class \(name) is listed twice")
        }
        for country in countries {
            guard country.weight > 0, country.code.count == 2, country.rttMs > 0, (country.regions ?? 1) > 0 else {
                throw FleetError("country \(country.code): a two-letter code, a positive weight and rttMs, regions ≥ 1")
            }
        }
        for code in Dictionary(grouping: countries.map { $0.code.uppercased() }, by: { $0 }).filter({
            $0.value.count > 1
        })
        .keys {
            throw FleetError("country \(code) is listed twice")
        }
    }

    /// The capabilities device `index` of a fleet seeded by `seed` advertises: the same on every run.
    func capabilities(of index: Int, seed: UInt64) -> (Orrery_Registry_V1_DeviceCapabilities, country: Country) {
        var random = SplitMix64(seed: seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
        let machine = Self.pick(hardware, weight: \.weight, using: &random)
        let country = Self.pick(countries, weight: \.weight, using: &random)
        func draw(_ range: [UInt64]?) -> UInt64 {
            guard let range, range.count == 2, range[0] <= range[1] else { return 0 }
            return UInt64.random(in: range[0]...range[1], using: &random)
        }
        let capabilities = Orrery_Registry_V1_DeviceCapabilities.with {
            $0.architecture = machine.architecture
            $0.cpuModel = "simulated \(machine.name)"
            $0.cpuCores = machine.cores
            $0.cpuMhz = 2400
            $0.ramBytes = machine.ramGiB << 30
            $0.diskBytes = machine.diskGiB << 30
            if let model = machine.gpuModel {
                $0.gpus = Array(
                    repeating: .with {
                        $0.vendor = model.split(separator: " ").first.map(String.init) ?? model
                        $0.model = model
                        $0.vramBytes = (machine.gpuVramGiB ?? 0) << 30
                    }, count: Int(machine.gpuCount ?? 1))
            }
            $0.os = "linux"
            $0.kernel = "simulated"
            $0.location = .with {
                $0.country = country.code
                $0.region = "r\(Int.random(in: 0..<max(1, country.regions ?? 1), using: &random))"
                // Spread over about a degree around the country's centre.
                $0.latitude = country.latitude + Double.random(in: -1...1, using: &random)
                $0.longitude = country.longitude + Double.random(in: -1...1, using: &random)
            }
            $0.prices = .with {
                $0.perCoreHour = draw(machine.pricePerCoreHour)
                $0.perGpuHour = draw(machine.pricePerGpuHour)
            }
            $0.labels = ["fleet": "simulated", "class": machine.name]
            $0.executors = ["process"]
            $0.platforms = [machine.architecture == "aarch64" ? "linux/arm64/v8" : "linux/amd64"]
        }
        return (capabilities, country)
    }

    static func pick<Element>(
        _ choices: [Element], weight: (Element) -> Double, using random: inout SplitMix64
    ) -> Element {
        let total = choices.reduce(0) { $0 + weight($1) }
        var point = Double.random(in: 0..<total, using: &random)
        for choice in choices {
            point -= weight(choice)
            if point < 0 { return choice }
        }
        return choices[choices.count - 1]
    }

    /// Raspberry Pis to GPU servers, in twelve countries on five continents, prices varying about 20×.
    static let standard = FleetProfile(
        hardware: [
            Hardware(
                name: "pi", weight: 30, architecture: "aarch64", cores: 4, ramGiB: 8, diskGiB: 64,
                pricePerCoreHour: [2, 6]),
            Hardware(
                name: "desktop", weight: 35, architecture: "x86_64", cores: 8, ramGiB: 32, diskGiB: 512,
                pricePerCoreHour: [5, 15]),
            Hardware(
                name: "server", weight: 20, architecture: "x86_64", cores: 32, ramGiB: 128, diskGiB: 2048,
                pricePerCoreHour: [8, 25]),
            Hardware(
                name: "gpu-rig", weight: 10, architecture: "x86_64", cores: 16, ramGiB: 64, diskGiB: 1024,
                gpuModel: "NVIDIA RTX 4090", gpuCount: 2, gpuVramGiB: 24, pricePerCoreHour: [10, 30],
                pricePerGpuHour: [200, 600]),
            Hardware(
                name: "gpu-server", weight: 5, architecture: "x86_64", cores: 64, ramGiB: 512, diskGiB: 4096,
                gpuModel: "NVIDIA H100", gpuCount: 8, gpuVramGiB: 80, pricePerCoreHour: [20, 40],
                pricePerGpuHour: [1500, 3000]),
        ],
        countries: [
            Country(code: "DE", weight: 14, latitude: 50.1, longitude: 8.7, rttMs: 12, regions: 4),
            Country(code: "FR", weight: 9, latitude: 48.9, longitude: 2.3, rttMs: 18, regions: 3),
            Country(code: "NL", weight: 7, latitude: 52.4, longitude: 4.9, rttMs: 15, regions: 2),
            Country(code: "GB", weight: 8, latitude: 51.5, longitude: -0.1, rttMs: 20, regions: 3),
            Country(code: "PL", weight: 5, latitude: 52.2, longitude: 21.0, rttMs: 28, regions: 2),
            Country(code: "US", weight: 22, latitude: 39.0, longitude: -77.5, rttMs: 90, regions: 6),
            Country(code: "CA", weight: 4, latitude: 43.7, longitude: -79.4, rttMs: 95, regions: 2),
            Country(code: "BR", weight: 6, latitude: -23.5, longitude: -46.6, rttMs: 190, regions: 2),
            Country(code: "JP", weight: 7, latitude: 35.7, longitude: 139.7, rttMs: 230, regions: 2),
            Country(code: "SG", weight: 5, latitude: 1.35, longitude: 103.8, rttMs: 160, regions: 1),
            Country(code: "IN", weight: 9, latitude: 19.1, longitude: 72.9, rttMs: 130, regions: 3),
            Country(code: "KE", weight: 4, latitude: -1.3, longitude: 36.8, rttMs: 150, regions: 1),
        ])
}

/// A small, fast, seedable generator (SplitMix64): the same fleet from the same seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A usage mistake or a refusal, said in words.
struct FleetError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
