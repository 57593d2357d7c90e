internal import Foundation
public import OrreryRuntime

/// The `device-agent` as the shared runtime starts it: no database, a local state directory, and listeners on
/// loopback only (an edge host opens no network port).
public enum DeviceAgentServer {
    public static let description = ServiceDescription(
        name: "device-agent",
        defaultGRPCPort: 7406,
        defaultHTTPPort: 9406,
        schema: nil,
        loopbackOnly: true,
        createsOwnKey: true
    )

    /// The agent with its local gRPC handlers; its state directory (mode 0700) holds its own key (`device.key`).
    public static var service: OrreryService {
        OrreryService(description: description) { environment in
            try StateDirectory.prepare(at: environment.settings.stateDirectory)
            return [DeviceAgentRPCService(environment: environment)]
        }
    }
}
