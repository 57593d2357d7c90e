internal import OrreryProto
internal import SwiftProtobuf

/// What a device may claim: anything outside these bounds is impossible hardware or an oversized record.
enum CapabilityLimits {
    static let maximumRecordBytes = 64 * 1024
    static let maximumCores: UInt32 = 4096
    static let maximumRAM: UInt64 = 64 << 40  // 64 TiB
    static let maximumDisk: UInt64 = 1 << 50  // 1 PiB
    static let maximumGPUs = 64
    static let maximumVRAM: UInt64 = 1 << 40  // 1 TiB
    static let maximumText = 256
    static let maximumLabels = 64

    /// The first impossible or oversized field, as `field: reason`, or nil when the record is acceptable.
    static func violation(_ capabilities: Orrery_Registry_V1_DeviceCapabilities) -> String? {
        if (try? capabilities.serializedBytes() as [UInt8])?.count ?? .max > maximumRecordBytes {
            return "capabilities: the record exceeds \(maximumRecordBytes) bytes"
        }
        if capabilities.architecture.isEmpty { return "capabilities.architecture: required" }
        if !(1...maximumCores).contains(capabilities.cpuCores) {
            return "capabilities.cpu_cores: \(capabilities.cpuCores) is not 1…\(maximumCores)"
        }
        if capabilities.cpuMhz > 20_000 {
            return "capabilities.cpu_mhz: \(capabilities.cpuMhz) MHz is not a real clock"
        }
        if capabilities.ramBytes == 0 || capabilities.ramBytes > maximumRAM {
            return "capabilities.ram_bytes: not 1 byte…64 TiB"
        }
        if capabilities.diskBytes > maximumDisk { return "capabilities.disk_bytes: more than 1 PiB" }
        if capabilities.gpus.count > maximumGPUs { return "capabilities.gpus: more than \(maximumGPUs)" }
        for (index, gpu) in capabilities.gpus.enumerated() {
            if gpu.model.isEmpty || gpu.vendor.isEmpty {
                return "capabilities.gpus[\(index)]: vendor and model are required"
            }
            if gpu.model.count > maximumText || gpu.vendor.count > maximumText {
                return "capabilities.gpus[\(index)]: vendor or model longer than \(maximumText) characters"
            }
            if gpu.vramBytes > maximumVRAM { return "capabilities.gpus[\(index)].vram_bytes: more than 1 TiB" }
        }
        for (name, text) in [
            ("architecture", capabilities.architecture), ("cpu_model", capabilities.cpuModel), ("os", capabilities.os),
            ("kernel", capabilities.kernel), ("location.country", capabilities.location.country),
            ("location.region", capabilities.location.region),
        ] where text.count > maximumText {
            return "capabilities.\(name): longer than \(maximumText) characters"
        }
        let location = capabilities.location
        if !(-90...90).contains(location.latitude) || !(-180...180).contains(location.longitude) {
            return "capabilities.location: latitude must be -90…90 and longitude -180…180"
        }
        if !location.country.isEmpty, location.country.count != 2 || location.country != location.country.uppercased() {
            return "capabilities.location.country: an ISO 3166-1 alpha-2 code such as DE"
        }
        if capabilities.labels.count > maximumLabels { return "capabilities.labels: more than \(maximumLabels)" }
        for (name, list) in [("executors", capabilities.executors), ("platforms", capabilities.platforms)] {
            if list.count > 16 { return "capabilities.\(name): more than 16" }
            if let bad = list.first(where: { $0.isEmpty || $0.count > 64 }) {
                return "capabilities.\(name): '\(bad.prefix(64))' is empty or longer than 64 characters"
            }
        }
        for (key, value) in capabilities.labels where key.isEmpty || key.count > 63 || value.count > maximumText {
            return "capabilities.labels: '\(key.prefix(64))' is empty or too long"
        }
        let prices = capabilities.prices
        for (name, price) in [
            ("per_core_hour", prices.perCoreHour), ("per_gb_ram_hour", prices.perGbRamHour),
            ("per_gpu_hour", prices.perGpuHour), ("minimum_per_job", prices.minimumPerJob),
        ] where price > UInt64(Int64.max) {
            return "capabilities.prices.\(name): out of range"
        }
        return nil
    }
}
