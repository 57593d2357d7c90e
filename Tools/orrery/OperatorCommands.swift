import ArgumentParser
import Foundation
import OrreryIdentity

/// `orrery operator init DIR`: bootstraps a network's identities.
struct OperatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operate a network.", subcommands: [Init.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Create the operator key, a key per service (one DID shared by its replicas) and each service's delegation from the operator.",
            discussion: """
                Writes DIR/operator.key and DIR/operator.did, and for each service DIR/<service>/service.key,
                DIR/<service>/delegation.ucan (operator → service, /orrery) and DIR/<service>/env (the ORRERY_* settings
                that point the service at them). Existing files are kept, so re-running adds what is missing.
                """)

        @Argument(help: "The credentials directory (created mode 0700).") var directory: String
        @Option(help: "Lifetime of the service delegations.") var exp: String = "365d"

        static let services = ["identity", "registry", "orchestrator", "contract-notary", "settlement-gateway"]

        func run() throws {
            let manager = FileManager.default
            try manager.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let root = URL(fileURLWithPath: directory).standardizedFileURL
            let operatorKey: SigningKey
            do { operatorKey = try KeyFile.readOrCreate(root.appendingPathComponent("operator.key").path) } catch {
                throw ValidationError("\(error)")
            }
            try (operatorKey.did.string + "\n").write(
                to: root.appendingPathComponent("operator.did"), atomically: true, encoding: .utf8)
            let lifetime = try Inputs.seconds(exp)
            for service in Self.services {
                let folder = root.appendingPathComponent(service)
                try manager.createDirectory(
                    at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                let keyPath = folder.appendingPathComponent("service.key").path
                let serviceKey: SigningKey
                do { serviceKey = try KeyFile.readOrCreate(keyPath) } catch { throw ValidationError("\(error)") }
                let delegationPath = folder.appendingPathComponent("delegation.ucan").path
                if !manager.fileExists(atPath: delegationPath) {
                    let delegation = Delegation.issue(
                        by: operatorKey, to: serviceKey.did, subject: operatorKey.did, command: try Command("/orrery"),
                        expiration: Inputs.now + lifetime)
                    try (try DelegationChain.write([delegation]) + "\n").write(
                        toFile: delegationPath, atomically: true, encoding: .utf8)
                }
                let environment = """
                    ORRERY_IDENTITY_KEY=\(keyPath)
                    ORRERY_TRUST_OPERATOR=\(operatorKey.did.string)
                    ORRERY_IDENTITY_DELEGATION=\(delegationPath)

                    """
                try environment.write(to: folder.appendingPathComponent("env"), atomically: true, encoding: .utf8)
                print("\(service.padding(toLength: 20, withPad: " ", startingAt: 0)) \(serviceKey.did)")
            }
            print("operator             \(operatorKey.did)")
        }
    }
}
