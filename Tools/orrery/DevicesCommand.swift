import ArgumentParser
import Foundation
import OrreryProto
import SwiftProtobuf

/// `orrery devices`: the registry's devices (an authorised QueryDevices).
struct DevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List devices in the registry, filtered.")

    @Option(
        name: .customLong("registry"),
        help:
            "The registry, host:port (default: the context's, else the one the orchestrator names, else 127.0.0.1:7402)."
    )
    var registryFlag: String?
    @OptionGroup var caller: CallerOptions
    var registry: String {
        get async {
            await CLISettings.discoveredAddress(registryFlag, service: "registry", trustRoots: caller.trustRoots)
        }
    }
    @Option(help: "Only devices with at least this many cores.") var minCores: UInt32 = 0
    @Option(help: "Only devices in these countries (repeatable, ISO codes).") var country: [String] = []
    @Option(help: "Only devices with this GPU model.") var gpu: String = ""
    @Flag(help: "Include suspect, offline and departed devices.") var all = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        var request = Orrery_Registry_V1_QueryDevicesRequest()
        request.minCpuCores = minCores
        request.countries = country
        request.gpuModel = gpu
        request.pageSize = 1000
        if all { request.statuses = [.online, .suspect, .offline, .left] }
        let devices = try await AuthorizedCall.withClient(await registry, service: "registry", caller: caller) {
            client in
            var devices: [Orrery_Registry_V1_Device] = []
            let registry = Orrery_Registry_V1_Registry.Client(wrapping: client)
            repeat {
                let page = try await registry.queryDevices(request)
                devices += page.devices
                request.pageToken = page.nextPageToken
            } while !request.pageToken.isEmpty
            return devices
        }
        if json {
            for device in devices { print(try device.jsonString()) }
            return
        }
        print(
            "DEVICE".padding(toLength: 58, withPad: " ", startingAt: 0)
                + "STATUS    CORES free/all  RAM free/all   GPUS free/all  WHERE            "
                + "PRICE (NTX/core·h, /GiB·h, /GPU·h, min/job)")
        for device in devices {
            let capabilities = device.capabilities
            let prices = capabilities.prices
            let status = "\(device.status)".padding(toLength: 10, withPad: " ", startingAt: 0)
            let place = [capabilities.location.country, capabilities.location.region].filter { !$0.isEmpty }.joined(
                separator: "/")
            print(
                device.did.padding(toLength: 58, withPad: " ", startingAt: 0) + status
                    + DeviceCapacity.cores(device).padding(toLength: 16, withPad: " ", startingAt: 0)
                    + DeviceCapacity.memory(device).padding(toLength: 15, withPad: " ", startingAt: 0)
                    + DeviceCapacity.gpus(device).padding(toLength: 15, withPad: " ", startingAt: 0)
                    + place.padding(toLength: 17, withPad: " ", startingAt: 0)
                    + "\(prices.perCoreHour), \(prices.perGbRamHour), \(prices.perGpuHour), \(prices.minimumPerJob)")
        }
    }
}

/// A device's free and total capacity as `free/total` ("-" free before its first heartbeat).
enum DeviceCapacity {
    static func cores(_ device: Orrery_Registry_V1_Device) -> String {
        let free = device.hasFree ? trimmed(Double(device.free.cpuMillicores) / 1000) : "-"
        return "\(free)/\(device.capabilities.cpuCores)"
    }

    static func memory(_ device: Orrery_Registry_V1_Device) -> String {
        let gib = 1_073_741_824.0
        let free = device.hasFree ? trimmed(Double(device.free.ramBytes) / gib) : "-"
        return "\(free)/\(trimmed(Double(device.capabilities.ramBytes) / gib)) GiB"
    }

    static func gpus(_ device: Orrery_Registry_V1_Device) -> String {
        let free = device.hasFree ? String(device.free.gpus) : "-"
        return "\(free)/\(device.capabilities.gpus.count)"
    }

    /// One decimal, without a trailing ".0".
    static func trimmed(_ value: Double) -> String {
        let text = String(format: "%.1f", value)
        return text.hasSuffix(".0") ? String(text.dropLast(2)) : text
    }
}
