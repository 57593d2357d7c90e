import Foundation
import OrreryOCI
import OrreryProto
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// How an image's configuration and an allocation's spec combine into the container's process, and what the
/// runtime spec holds.
@Suite("OCI bundles")
struct OCIBundleTests {
    static func image(
        entrypoint: [String]? = ["/entry"], cmd: [String]? = ["default"], env: [String]? = ["PATH=/bin", "A=1"],
        user: String? = nil, workingDir: String? = nil
    ) throws -> ImageConfiguration {
        var config: [String: Any] = [:]
        if let entrypoint { config["Entrypoint"] = entrypoint }
        if let cmd { config["Cmd"] = cmd }
        if let env { config["Env"] = env }
        if let user { config["User"] = user }
        if let workingDir { config["WorkingDir"] = workingDir }
        let document: [String: Any] = [
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": ["type": "layers", "diff_ids": []],
        ]
        return try ImageConfiguration.decode([UInt8](try JSONSerialization.data(withJSONObject: document)))
    }

    @Test("the spec's command replaces the Entrypoint and Cmd, its args replace the Cmd; env adds and overrides")
    func commandAndEnvironment() throws {
        var spec = Orrery_Orchestrator_V1_AllocationSpec()
        var process = try OCIBundle.process(image: Self.image(), spec: spec, extraEnvironment: [:], rootPath: "/none")
        #expect(process.args == ["/entry", "default"])
        #expect(process.cwd == "/work")
        #expect(process.env.contains("HOME=/work"))
        spec.args = ["one", "two"]
        process = try OCIBundle.process(image: Self.image(), spec: spec, extraEnvironment: [:], rootPath: "/none")
        #expect(process.args == ["/entry", "one", "two"])
        spec.command = "/other"
        spec.args = []
        spec.env = ["A": "2", "B": "3"]
        process = try OCIBundle.process(
            image: Self.image(workingDir: "/app"), spec: spec, extraEnvironment: ["ORRERY_ALLOCATION": "x"],
            rootPath: "/none")
        #expect(process.args == ["/other"])
        #expect(process.env == ["PATH=/bin", "A=2", "B=3", "ORRERY_ALLOCATION=x", "HOME=/work"])
        #expect(process.cwd == "/app")
        #expect(throws: RunnerError.self) {
            try OCIBundle.process(
                image: Self.image(entrypoint: nil, cmd: nil), spec: Orrery_Orchestrator_V1_AllocationSpec(),
                extraEnvironment: [:], rootPath: "/none")
        }
    }

    @Test("the image's user: numbers, names from its own /etc/passwd and /etc/group; an unknown name is refused")
    func users() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-bundle") { directory in
            let root = directory.path
            try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
            try "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n".write(
                toFile: root + "/etc/passwd", atomically: true, encoding: .utf8)
            try "root:x:0:\nstaff:x:50:\n".write(toFile: root + "/etc/group", atomically: true, encoding: .utf8)
            #expect(try OCIBundle.resolveUser("", rootPath: root) == (0, 0, []))
            #expect(try OCIBundle.resolveUser("app", rootPath: root) == (1000, 1001, []))
            #expect(try OCIBundle.resolveUser("1000", rootPath: root) == (1000, 1001, []))
            #expect(try OCIBundle.resolveUser("app:staff", rootPath: root) == (1000, 50, []))
            #expect(try OCIBundle.resolveUser("4242:7", rootPath: root) == (4242, 7, []))
            #expect(throws: RunnerError.self) { try OCIBundle.resolveUser("nobody-here", rootPath: root) }
            #expect(throws: RunnerError.self) { try OCIBundle.resolveUser("app:nogroup", rootPath: root) }
        }
    }

    @Test("the runtime spec: read-only root, /work, no capabilities, no new privileges, namespaces, the filter")
    func runtimeSpec() throws {
        let bundle = OCIBundle(
            rootPath: "/images/root", workDirectory: "/allocations/a/work", network: false,
            cgroupsPath: "/orrery/a/oci", fileSizeLimit: 1 << 20, hostIDBase: 1_000_000)
        let process = OCIBundle.Process(
            args: ["/bin/sh"], env: ["PATH=/bin"], cwd: "/work", uid: 0, gid: 0, additionalGids: [])
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(bundle.spec(process))) as? [String: Any]
        let root = json?["root"] as? [String: Any]
        #expect(root?["readonly"] as? Bool == true)
        let processJSON = json?["process"] as? [String: Any]
        #expect(processJSON?["noNewPrivileges"] as? Bool == true)
        let capabilities = processJSON?["capabilities"] as? [String: [String]]
        #expect(capabilities?.values.allSatisfy(\.isEmpty) == true)
        let linux = json?["linux"] as? [String: Any]
        let namespaces = (linux?["namespaces"] as? [[String: String]])?.compactMap { $0["type"] }
        #expect(Set(namespaces ?? []) == ["pid", "ipc", "uts", "mount", "user", "cgroup", "network"])
        #expect(linux?["cgroupsPath"] as? String == "/orrery/a/oci")
        let mapping = (linux?["uidMappings"] as? [[String: Int]])?.first
        #expect(mapping == ["containerID": 0, "hostID": 1_000_000, "size": 65536])
        let seccomp = linux?["seccomp"] as? [String: Any]
        let refused = (seccomp?["syscalls"] as? [[String: Any]])?.first?["names"] as? [String]
        #expect(refused?.contains("mount") == true && refused?.contains("ptrace") == true)
        let mounts = (json?["mounts"] as? [[String: Any]])?.compactMap { $0["destination"] as? String }
        #expect(mounts?.contains("/work") == true && mounts?.contains("/tmp") == true)
        let withNetwork = OCIBundle(rootPath: "/r", workDirectory: "/w", network: true)
        #expect(!withNetwork.spec(process).linux.namespaces.contains { $0.type == "network" })
    }
}
