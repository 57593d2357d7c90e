import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import DeviceAgent

/// The outbound-only network of a sandbox: its ruleset, the owner's allowances, and failing closed.
@Suite("Sandbox network: outbound only, fail closed")
struct SandboxNetworkTests {
    static let isRoot = geteuid() == 0

    @Test("the ruleset refuses the host's addresses and special ranges, allows the owner's and DNS, drops inbound")
    func rules() {
        let network = SandboxNetwork(allowed: ["10.1.2.0/24"], hostAddresses: ["192.0.2.7", "2001:db8::7"])
        let rules = network.rules
        let lines = rules.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains("ip daddr 10.1.2.0/24 accept"))
        #expect(lines.contains("ip daddr 192.0.2.7 reject"))
        #expect(lines.contains("ip6 daddr 2001:db8::7 reject"))
        for range in ["10.0.0.0/8", "127.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"] {
            #expect(lines.contains("ip daddr \(range) reject"), "\(range)")
        }
        // Allowances come before the refusals they make exceptions to; DNS goes to slirp's forwarder only.
        let allow = lines.firstIndex(of: "ip daddr 10.1.2.0/24 accept") ?? .max
        #expect(allow < (lines.firstIndex(of: "ip daddr 10.0.0.0/8 reject") ?? -1))
        #expect(lines.contains("ip daddr 10.0.2.3 udp dport 53 accept"))
        #expect(lines.contains("type filter hook input priority 0; policy drop;"))
    }

    @Test("an owner's allowance must be an address or a range")
    func allowances() throws {
        for good in ["10.1.2.0/24", "192.0.2.1", "fd00::/8", "::1"] { #expect(SandboxNetwork.isRange(good), "\(good)") }
        for bad in ["10.1.2.0/33", "999.1.1.1", "example.org", "10.0.0.0/", "", "fd00::/129"] {
            #expect(!SandboxNetwork.isRange(bad), "\(bad)")
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("owner-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"owner": {"network_allow": ["10.1.2.0/24", "nope"]}}"#.utf8).write(to: file)
        #expect(throws: OwnerPolicyError.self) { try OwnerPolicy.read(configFile: file.path) }
        try Data(#"{"owner": {"network_allow": ["10.1.2.0/24"]}}"#.utf8).write(to: file)
        #expect(try OwnerPolicy.read(configFile: file.path).networkAllow == ["10.1.2.0/24"])
    }

    @Test("when the firewall cannot be loaded the workload never runs", .enabled(if: isRoot))
    func failsClosed() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("net-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        var runner = AllocationRunner(root: directory.path, cgroups: nil)
        runner.networkAllowed = ["300.1.1.1/8"]  // not an address: nft refuses the ruleset
        let spec = Orrery_Orchestrator_V1_AllocationSpec.with {
            $0.artifact = .with { $0.text = "touch /work/ran; echo ran" }
            $0.resources = .with {
                $0.cpuCores = 1
                $0.ramMib = 64
            }
            $0.network = true
        }
        try #require(SandboxNetwork().isAvailable, "make test installs slirp4netns and nftables")
        try await runner.start("net-job", spec: spec)
        var status = runner.status("net-job")
        for _ in 0..<600 where status == .running {
            try await Task.sleep(for: .milliseconds(50))
            status = runner.status("net-job")
        }
        #expect(status == .exited(125))
        let errors = (try? String(contentsOfFile: runner.directory("net-job") + "/stderr.log", encoding: .utf8)) ?? ""
        #expect(errors.contains("could not be set up"), "\(errors)")
        #expect(!FileManager.default.fileExists(atPath: runner.directory("net-job") + "/work/ran"))
    }
}
