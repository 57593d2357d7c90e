import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryProto
import SwiftProtobuf

/// `orrery checkpoint ID`: checkpoint a deployment's stateful allocations now.
struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract:
            "Checkpoint a running deployment's stateful allocations now (or one replica); prints each stored record.")

    @Argument(help: "The deployment id.") var id: String
    @Option(help: "Only this allocation.") var allocation = ""
    @Option(help: "Its replica.") var replica: UInt32 = 0
    @OptionGroup var options: OrchestratorOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let response = try await options.call { client in
            try await client.checkpoint(
                .with {
                    $0.id = id
                    $0.allocation = allocation
                    $0.replica = replica
                })
        }
        if json {
            print(try response.jsonString())
            return
        }
        for stored in response.checkpoints {
            let record = try Orrery_Actors_V1_Checkpoint(serializedBytes: stored.record.payload)
            print(
                "\(stored.allocation)[\(stored.replica)] checkpoint \(record.sequence): \(record.size) bytes, sha256 \(record.sha256), on \(stored.deviceDid)"
                    + (stored.logIndex > 0 ? ", notary log entry \(stored.logIndex)" : ""))
        }
    }
}

/// `orrery move ID ALLOCATION`: move a stateful replica to another device.
struct MoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "move",
        abstract:
            "Move a running stateful replica to another device: it checkpoints, stops, and resumes there with the same actor address and key (messages meanwhile are held)."
    )

    @Argument(help: "The deployment id.") var id: String
    @Argument(help: "The stateful allocation.") var allocation: String
    @Option(help: "Its replica.") var replica: UInt32 = 0
    @Option(help: "The device DID to move to (default: the best other feasible device).") var to = ""
    @Flag(help: "Print the deployment after the move as JSON (the Deployment message).") var json = false
    @OptionGroup var options: OrchestratorOptions

    func run() async throws {
        let deployment = try await options.call { client in
            try await client.moveAllocation(
                .with {
                    $0.id = id
                    $0.allocation = allocation
                    $0.replica = replica
                    $0.toDevice = to
                })
        }
        if json {
            print(try deployment.jsonString())
            return
        }
        print("\(deployment.id): \(deployment.state.name) — \(deployment.reason)")
    }
}

/// `orrery actors ID`: a deployment's actors and their keys.
struct ActorsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "actors", abstract: "List a deployment's actors: each address and did:key.")

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions

    func run() async throws {
        let response = try await options.call { try await $0.listActors(.with { $0.id = id }) }
        for actor in response.actors { print("\(actor.address)  \(actor.actorDid)") }
    }
}

/// `orrery actor grant`: let one of your actors message another of your deployments.
struct ActorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "actor", abstract: "Actors across deployments.", subcommands: [Grant.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Let an actor (yours or another consumer's) message the actors of one of your deployments: you sign the delegation (your key → the actor's did:key, /orrery/actor, .from that actor, .to your deployment)."
        )

        @Option(help: "The sending actor, actor://DEPLOYMENT/ALLOCATION/REPLICA.") var from: String
        @Option(help: "Your deployment whose actors it may message.") var toDeployment: String
        @Option(help: "How long the grant lasts: 90s, 30m, 24h, 7d.") var expires = "24h"
        @OptionGroup var options: OrchestratorOptions

        func run() async throws {
            guard from.hasPrefix("actor://"), from.split(separator: "/").count == 4 else {
                throw ValidationError("--from: an actor address actor://DEPLOYMENT/ALLOCATION/REPLICA")
            }
            let key = try Inputs.key(options.caller.key)
            let actors = try await options.call { try await $0.listActors(.with { $0.address = from }) }
            guard let actor = actors.actors.first(where: { $0.address == from }) else {
                throw ValidationError("\(from) has no key yet: is it running?")
            }
            let policy = try Policy(
                .list([
                    .list([.string("=="), .string(".from"), .string(from)]),
                    .list([.string("like"), .string(".to"), .string("actor://\(toDeployment)/*")]),
                ]))
            let delegation = Delegation.issue(
                by: key, to: try DID(actor.actorDid), subject: key.did, command: try Command("/orrery/actor"),
                policy: policy, expiration: Int64(Date().timeIntervalSince1970) + (try Inputs.seconds(expires)))
            let granted = try await options.call { client in
                try await client.grantActorAccess(
                    .with {
                        $0.from = from
                        $0.toDeployment = toDeployment
                        $0.delegation = Data(delegation.envelope.bytes)
                    })
            }
            print("\(from) may message the actors of \(toDeployment) for \(expires) (delegation \(granted.cid))")
        }
    }
}
