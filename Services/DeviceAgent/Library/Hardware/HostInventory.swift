#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryProto

/// What an edge host has: CPU, memory, disk for the agent's work directory, GPUs, operating system.
public struct HostInventory: Sendable, Equatable, Codable {
    /// A GPU as `nvidia-smi` reports it.
    public struct GPU: Sendable, Equatable, Codable {
        public var vendor: String
        public var model: String
        public var vramBytes: UInt64
    }

    public var architecture: String
    public var cpuModel: String
    public var cpuCores: Int
    public var cpuMHz: Int
    public var ramBytes: UInt64
    public var diskBytes: UInt64
    public var diskFreeBytes: UInt64
    public var gpus: [GPU]
    public var os: String
    public var kernel: String

    /// The capabilities a device advertises (location, prices and labels come from the owner's policy).
    public var capabilities: Orrery_Registry_V1_DeviceCapabilities {
        var capabilities = Orrery_Registry_V1_DeviceCapabilities()
        capabilities.architecture = architecture
        capabilities.cpuModel = cpuModel
        capabilities.cpuCores = UInt32(clamping: cpuCores)
        capabilities.cpuMhz = UInt32(clamping: cpuMHz)
        capabilities.ramBytes = ramBytes
        capabilities.diskBytes = diskBytes
        capabilities.gpus = gpus.map { gpu in
            var message = Orrery_Registry_V1_Gpu()
            message.vendor = gpu.vendor
            message.model = gpu.model
            message.vramBytes = gpu.vramBytes
            return message
        }
        capabilities.os = os
        capabilities.kernel = kernel
        return capabilities
    }
}

/// Reads the host: `/proc/cpuinfo`, `/proc/meminfo`, `statvfs` of the work directory, `uname`, `/etc/os-release`,
/// and `nvidia-smi` when it is on the PATH.
public enum HostDetector {
    /// Detects this host.
    /// - Parameters:
    ///   - workDirectory: The directory whose file system workloads use.
    ///   - environment: Where `PATH` is looked up (tests put a fake `nvidia-smi` first).
    public static func detect(
        workDirectory: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> HostInventory {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        var names = utsname()
        uname(&names)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let cpu = CPUInfo.parse(cpuinfo)
        let maxFrequency =
            (try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding: .utf8))
            .flatMap { Int($0.trimmed()) }.map { $0 / 1000 }
        let disk = DiskSpace.of(workDirectory)
        return HostInventory(
            architecture: field(names.machine),
            cpuModel: cpu.model,
            cpuCores: cpu.cores > 0 ? cpu.cores : ProcessInfo.processInfo.activeProcessorCount,
            cpuMHz: cpu.mhz > 0 ? cpu.mhz : (maxFrequency ?? 0),
            ramBytes: MemInfo.totalBytes(meminfo) ?? UInt64(ProcessInfo.processInfo.physicalMemory),
            diskBytes: disk.total,
            diskFreeBytes: disk.free,
            gpus: NvidiaSMI.query(environment: environment),
            os: OSRelease.prettyName(osRelease) ?? field(names.sysname),
            kernel: field(names.release)
        )
    }
}

/// `/proc/cpuinfo`: model, logical cores, MHz (x86 and ARM layouts).
enum CPUInfo {
    static func parse(_ text: String) -> (model: String, cores: Int, mhz: Int) {
        var model = ""
        var cores = 0
        var mhz = 0
        var hardware = ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmed() }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "processor": cores += 1
            case "model name", "Model": if model.isEmpty { model = parts[1] }
            case "Hardware": hardware = parts[1]
            case "cpu MHz": if mhz == 0 { mhz = Int(Double(parts[1]) ?? 0) }
            default: break
            }
        }
        if model.isEmpty { model = hardware.isEmpty ? "unknown" : hardware }
        return (model, cores, mhz)
    }
}

/// `/proc/meminfo`.
enum MemInfo {
    static func value(_ key: String, in text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kilobytes = UInt64(fields[1]) else { return nil }
            return kilobytes * 1024
        }
        return nil
    }

    static func totalBytes(_ text: String) -> UInt64? { value("MemTotal", in: text) }
    static func availableBytes(_ text: String) -> UInt64? { value("MemAvailable", in: text) }
}

/// `/etc/os-release`.
enum OSRelease {
    static func prettyName(_ text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            let value = line.dropFirst("PRETTY_NAME=".count)
            return String(value.drop(while: { $0 == "\"" }).reversed().drop(while: { $0 == "\"" }).reversed())
        }
        return nil
    }
}

/// `statvfs` of a directory.
enum DiskSpace {
    static func of(_ path: String) -> (total: UInt64, free: UInt64) {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return (0, 0) }
        let block = UInt64(stats.f_frsize)
        return (UInt64(stats.f_blocks) * block, UInt64(stats.f_bavail) * block)
    }
}

/// GPUs through `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`.
enum NvidiaSMI {
    static func query(environment: [String: String]) -> [HostInventory.GPU] {
        guard let executable = locate("nvidia-smi", path: environment["PATH"] ?? "") else { return [] }
        guard
            let outcome = try? ChildCommand.runAndWait(
                executable, ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]),
            outcome.status == 0
        else { return [] }
        return parse(String(decoding: outcome.output, as: UTF8.self))
    }

    /// Lines of `name, memory.total (MiB)`.
    static func parse(_ text: String) -> [HostInventory.GPU] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ",").map { $0.trimmed() }
            guard fields.count >= 2, !fields[0].isEmpty, let mebibytes = UInt64(fields[1]) else { return nil }
            return HostInventory.GPU(vendor: "NVIDIA", model: fields[0], vramBytes: mebibytes * 1024 * 1024)
        }
    }

    static func locate(_ name: String, path: String) -> String? {
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
