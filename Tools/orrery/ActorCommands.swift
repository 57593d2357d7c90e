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
        print("\(deployment.id): \(deployment.state.name) — \(deployment.reason)")
    }
}
