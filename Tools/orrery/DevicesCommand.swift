import ArgumentParser
import Foundation
import OrreryProto
import SwiftProtobuf

/// `orrery devices`: the registry's devices (an authorised QueryDevices).
struct DevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List devices in the registry, filtered.")

    @Option(
        name: .customLong("registry"), help: "The registry, host:port (default: the context's, else 127.0.0.1:7402).")
    var registryFlag: String?
    @OptionGroup var caller: CallerOptions
    var registry: String { CLISettings.address(registryFlag, service: "registry") }
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
        let devices = try await AuthorizedCall.withClient(registry, service: "registry", caller: caller) {
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
                + "STATUS    CORES  RAM      GPUS  WHERE            PRICE (NTX/core·h, /GiB·h, /GPU·h, min/job)")
        for device in devices {
            let capabilities = device.capabilities
            let prices = capabilities.prices
            let status = "\(device.status)".replacingOccurrences(of: "online", with: "online").padding(
                toLength: 10, withPad: " ", startingAt: 0)
            let ram = String(format: "%.0f GiB", Double(capabilities.ramBytes) / 1_073_741_824).padding(
                toLength: 9, withPad: " ", startingAt: 0)
            let place = [capabilities.location.country, capabilities.location.region].filter { !$0.isEmpty }.joined(
                separator: "/")
            print(
                device.did.padding(toLength: 58, withPad: " ", startingAt: 0) + status
                    + String(capabilities.cpuCores).padding(toLength: 7, withPad: " ", startingAt: 0) + ram
                    + String(capabilities.gpus.count).padding(toLength: 6, withPad: " ", startingAt: 0)
                    + place.padding(toLength: 17, withPad: " ", startingAt: 0)
                    + "\(prices.perCoreHour), \(prices.perGbRamHour), \(prices.perGpuHour), \(prices.minimumPerJob)")
        }
    }
}
