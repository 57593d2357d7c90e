import Foundation
import OrreryProto
import OrreryTestSupport
import Testing

@testable import DeviceAgent

@Suite("Host inventory")
struct HostInventoryTests {
    @Test("x86 cpuinfo: model, logical cores, MHz")
    func x86() {
        let text = """
            processor\t: 0
            vendor_id\t: GenuineIntel
            model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
            cpu MHz\t\t: 2000.000

            processor\t: 1
            model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
            cpu MHz\t\t: 3200.500
            """
        let cpu = CPUInfo.parse(text)
        #expect(cpu.model == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz")
        #expect(cpu.cores == 2)
        #expect(cpu.mhz == 2000)
    }

    @Test("ARM cpuinfo (a Raspberry Pi): cores counted, model from Model or Hardware, no MHz")
    func arm() {
        let text = """
            processor\t: 0
            BogoMIPS\t: 108.00
            CPU implementer\t: 0x41
            CPU part\t: 0xd08

            processor\t: 1
            BogoMIPS\t: 108.00

            processor\t: 2

            processor\t: 3

            Hardware\t: BCM2835
            Model\t\t: Raspberry Pi 4 Model B Rev 1.4
            """
        let cpu = CPUInfo.parse(text)
        #expect(cpu.cores == 4)
        #expect(cpu.model == "Raspberry Pi 4 Model B Rev 1.4")
        #expect(cpu.mhz == 0)
        #expect(CPUInfo.parse("processor : 0\nHardware : BCM2711\n").model == "BCM2711")
        #expect(CPUInfo.parse("").model == "unknown")
    }

    @Test("meminfo, os-release and nvidia-smi CSV parse")
    func parsers() {
        let meminfo = "MemTotal:       16318332 kB\nMemFree:         1024 kB\nMemAvailable:    8000000 kB\n"
        #expect(MemInfo.totalBytes(meminfo) == 16_318_332 * 1024)
        #expect(MemInfo.availableBytes(meminfo) == 8_000_000 * 1024)
        #expect(MemInfo.totalBytes("nothing") == nil)
        #expect(OSRelease.prettyName("NAME=x\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n") == "Ubuntu 24.04 LTS")
        let gpus = NvidiaSMI.parse("NVIDIA A100-SXM4-40GB, 40960\nNVIDIA GeForce RTX 4090, 24564\n\ngarbage\n")
        let expected: [HostInventory.GPU] = [
            HostInventory.GPU(vendor: "NVIDIA", model: "NVIDIA A100-SXM4-40GB", vramBytes: 40_960 << 20),
            HostInventory.GPU(vendor: "NVIDIA", model: "NVIDIA GeForce RTX 4090", vramBytes: 24_564 << 20),
        ]
        #expect(gpus == expected)
    }

    func shell(_ command: String) async throws -> String {
        try await ChildProcess.run(URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", command]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("this host: every field agrees with an independent source")
    func thisHost() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-hw") { directory in
            let inventory = HostDetector.detect(workDirectory: directory.path, environment: ["PATH": directory.path])
            #expect(inventory.architecture == (try await shell("uname -m")))
            #expect(inventory.kernel == (try await shell("uname -r")))
            #expect(inventory.cpuCores == Int(try await shell("nproc --all")))
            #expect(!inventory.cpuModel.isEmpty && inventory.cpuModel != "unknown")
            #expect(inventory.cpuMHz > 0)
            let memTotalKB = UInt64(try await shell("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) ?? 0
            #expect(inventory.ramBytes == memTotalKB * 1024)
            let attributes = try FileManager.default.attributesOfFileSystem(forPath: directory.path)
            #expect(inventory.diskBytes == (attributes[.systemSize] as? NSNumber)?.uint64Value)
            #expect(inventory.diskFreeBytes > 0 && inventory.diskFreeBytes <= inventory.diskBytes)
            #expect(inventory.os == (try await shell(". /etc/os-release && echo \"$PRETTY_NAME\"")))
            #expect(inventory.gpus.isEmpty, "no nvidia-smi on this PATH")
        }
    }

    @Test("GPUs come from nvidia-smi on the PATH (a fake one here), through the real executable")
    func fakeNvidiaSMI() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-gpu") { directory in
            // Written as a plain file, then installed executable by another process: a write descriptor of this
            // process's own could be inherited by a child another test forks meanwhile, and executing a file open for
            // writing fails (ETXTBSY).
            let source = directory.appendingPathComponent("nvidia-smi.txt")
            let fake = directory.appendingPathComponent("nvidia-smi")
            try """
            #!/bin/sh
            # Answers the agent's query the way nvidia-smi does.
            case "$*" in
              *--query-gpu=name,memory.total*--format=csv,noheader,nounits*)
                echo "NVIDIA H100 80GB HBM3, 81559"
                echo "NVIDIA H100 80GB HBM3, 81559" ;;
              *) exit 6 ;;
            esac
            """.write(to: source, atomically: true, encoding: .utf8)
            let (installed, installOutput) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/install"), arguments: ["-m", "755", source.path, fake.path])
            try #require(installed == 0, "\(installOutput)")
            let inventory = HostDetector.detect(
                workDirectory: directory.path, environment: ["PATH": directory.path + ":/usr/bin:/bin"])
            #expect(inventory.gpus.count == 2)
            #expect(
                inventory.gpus.first
                    == .init(vendor: "NVIDIA", model: "NVIDIA H100 80GB HBM3", vramBytes: 81559 * 1024 * 1024))
            #expect(inventory.capabilities.gpus.count == 2)

            let (status, output) = try await ChildProcess.run(
                TestEnvironment.executable("device-agent"), arguments: ["inventory", "--work-dir", directory.path],
                environment: ["PATH": directory.path + ":/usr/bin:/bin"])
            #expect(status == 0, "\(output)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
            #expect((json["gpus"] as? [Any])?.count == 2)
            #expect(json["architecture"] as? String == inventory.architecture)
        }
    }
}
