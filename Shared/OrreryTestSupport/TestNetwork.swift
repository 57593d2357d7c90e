public import Foundation
public import OrreryIdentity

/// The identities of a test network, laid out as `orrery operator init` does: an operator, a key and a
/// delegation (operator → service, `/orrery`) per service.
public struct TestNetwork: Sendable {
    public let directory: URL
    public let operatorKey: SigningKey
    public let serviceKeys: [String: SigningKey]

    public static let services = ["identity", "registry", "orchestrator", "contract-notary", "settlement-gateway"]

    /// Creates the credentials under `directory`.
    public init(directory: URL) throws {
        self.directory = directory
        operatorKey = SigningKey()
        var keys: [String: SigningKey] = [:]
        for service in Self.services {
            let folder = directory.appendingPathComponent(service)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let key = SigningKey()
            try KeyFile.write(key, to: folder.appendingPathComponent("service.key").path)
            let delegation = Delegation.issue(
                by: operatorKey, to: key.did, subject: operatorKey.did, command: try Command("/orrery"),
                expiration: Int64(Date().timeIntervalSince1970) + 86_400)
            try DelegationChain.write([delegation]).write(
                to: folder.appendingPathComponent("delegation.ucan"), atomically: true, encoding: .utf8)
            keys[service] = key
        }
        serviceKeys = keys
        try KeyFile.write(operatorKey, to: directory.appendingPathComponent("operator.key").path)
    }

    /// The environment that gives `service` its identity and trust (and the identity service to follow).
    public func environment(for service: String, identityAddress: String? = nil) -> [String: String] {
        var environment = ["ORRERY_TRUST_OPERATOR": operatorKey.did.string]
        if Self.services.contains(service) {
            let folder = directory.appendingPathComponent(service)
            environment["ORRERY_IDENTITY_KEY"] = folder.appendingPathComponent("service.key").path
            environment["ORRERY_IDENTITY_DELEGATION"] = folder.appendingPathComponent("delegation.ucan").path
        }
        if let identityAddress { environment["ORRERY_IDENTITY_ADDRESS"] = identityAddress }
        return environment
    }
}
