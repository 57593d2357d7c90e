/// The part of the OCI runtime specification (`config.json` of a bundle) the agent writes: what runc or crun need to
/// run one allocation's image. Field names are the specification's.
struct OCIRuntimeSpec: Encodable {
    struct Process: Encodable {
        struct User: Encodable {
            var uid: UInt32
            var gid: UInt32
            var additionalGids: [UInt32]?
        }
        struct Capabilities: Encodable {
            var bounding: [String] = []
            var effective: [String] = []
            var permitted: [String] = []
            var inheritable: [String] = []
            var ambient: [String] = []
        }
        struct Rlimit: Encodable {
            var type: String
            var hard: UInt64
            var soft: UInt64
        }
        var terminal = false
        var user: User
        var args: [String]
        var env: [String]
        var cwd: String
        var capabilities = Capabilities()
        var rlimits: [Rlimit]
        var noNewPrivileges = true
    }
    struct Root: Encodable {
        var path: String
        var readonly: Bool
    }
    struct Mount: Encodable {
        var destination: String
        var type: String
        var source: String
        var options: [String]
    }
    struct Linux: Encodable {
        struct Namespace: Encodable {
            var type: String
        }
        struct IDMapping: Encodable {
            var containerID: UInt32
            var hostID: UInt32
            var size: UInt32
        }
        struct Device: Encodable {
            var path: String
            var type: String
            var major: Int64
            var minor: Int64
            var fileMode: UInt32?
            var uid: UInt32?
            var gid: UInt32?
        }
        struct Resources: Encodable {
            struct DeviceRule: Encodable {
                var allow: Bool
                var type: String?
                var major: Int64?
                var minor: Int64?
                var access: String?
            }
            var devices: [DeviceRule]
        }
        var namespaces: [Namespace]
        var uidMappings: [IDMapping]
        var gidMappings: [IDMapping]
        var devices: [Device]?
        var resources: Resources?
        var cgroupsPath: String?
        var maskedPaths: [String]
        var readonlyPaths: [String]
        var seccomp: SeccompProfile?
    }
    var ociVersion = "1.0.2"
    var process: Process
    var root: Root
    var hostname = "orrery"
    var mounts: [Mount]
    var linux: Linux
}
