import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryProto
import SwiftProtobuf

/// `orrery network grant`: let another deployment's allocations reach one of yours on the ensemble network.
struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "The ensemble network across deployments.", subcommands: [Grant.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Let the allocations of another deployment (yours or another consumer's) reach one of your deployments by the names its spec's `reaches` give them: you sign the delegation (your key → that deployment's consumer, /orrery/network/connect, .from that deployment, .to yours)."
        )

        @Option(help: "The deployment whose allocations may connect.") var from: String
        @Option(help: "Its consumer's did:key (the delegation's audience).") var consumer: String
        @Option(help: "Your deployment they may reach.") var to: String
        @Option(help: "How long the grant lasts: 90s, 30m, 24h, 7d.") var expires = "24h"
        @OptionGroup var options: OrchestratorOptions

        func run() async throws {
            let key = try Inputs.key(options.caller.key)
            let audience: DID
            do {
                audience = try DID(consumer)
            } catch {
                throw ValidationError("--consumer: a did:key (\(error))")
            }
            let policy = try Policy(
                .list([
                    .list([.string("=="), .string(".from"), .string(from)]),
                    .list([.string("=="), .string(".to"), .string(to)]),
                ]))
            let delegation = Delegation.issue(
                by: key, to: audience, subject: key.did, command: try Command("/orrery/network/connect"),
                policy: policy, expiration: Int64(Date().timeIntervalSince1970) + (try Inputs.seconds(expires)))
            let granted = try await options.call { client in
                try await client.grantNetworkAccess(
                    .with {
                        $0.fromDeployment = from
                        $0.toDeployment = to
                        $0.delegation = Data(delegation.envelope.bytes)
                    })
            }
            print("\(from) may reach \(to) on the ensemble network for \(expires) (delegation \(granted.cid))")
        }
    }
}
