import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix
import OrreryProto
import SwiftProtobuf

/// `orrery port-forward DEP ALLOCATION[/REPLICA]:PORT [LOCAL]`: a local TCP port whose connections reach a declared
/// port of a running replica, each as its own stream over the orchestrator to the replica's device (as `kubectl
/// port-forward` does).
struct PortForwardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port-forward",
        abstract: "Forward a local TCP port to a declared port of a running replica.",
        discussion: """
            Each connection to the local port becomes a stream to the replica's device over its own outbound line \
            (the device opens no port). Without /REPLICA, a running replica is chosen (a healthy one when the \
            allocation has a health check) for each connection. Runs until interrupted.
            """)

    @Argument(help: "The deployment (dep_…).") var id: String
    @Argument(help: "ALLOCATION[/REPLICA]:PORT — a port the allocation declares.") var target: String
    @Argument(help: "The local port (default: the same as PORT; 0: any free one).") var local: Int?
    @Option(help: "The local address to listen on.") var address = "127.0.0.1"
    @OptionGroup var options: OrchestratorOptions

    /// The replica's side as parsed from `target`.
    struct Target: Equatable {
        var allocation: String
        var replica: UInt32?
        var port: UInt32
    }

    static func parse(_ text: String) -> Target? {
        guard let colon = text.lastIndex(of: ":"), let port = UInt32(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        let left = text[..<colon]
        let parts = left.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty else { return nil }
        var replica: UInt32?
        if parts.count == 2 {
            guard let value = UInt32(parts[1]) else { return nil }
            replica = value
        }
        return Target(allocation: String(parts[0]), replica: replica, port: port)
    }

    func validate() throws {
        guard Self.parse(target) != nil else {
            throw ValidationError("'\(target)' is not ALLOCATION[/REPLICA]:PORT (e.g. web:8080, web/1:8080)")
        }
        if let local, !(0...65535).contains(local) { throw ValidationError("the local port is 0…65535") }
    }

    func run() async throws {
        guard let target = Self.parse(target) else { throw ExitCode.validationFailure }
        let open = Orrery_Orchestrator_V1_PortForwardOpen.with {
            $0.deploymentID = id
            $0.allocation = target.allocation
            if let replica = target.replica { $0.replica = replica }
            $0.port = target.port
        }
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: address, port: local ?? Int(target.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let bound = server.channel.localAddress?.port ?? local ?? Int(target.port)
        Console.out(
            "Forwarding \(address):\(bound) -> \(target.allocation)\(target.replica.map { "/\($0)" } ?? ""):\(target.port) of \(id)"
        )
        try await options.call { client in
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { await Self.forward(connection, open: open, client: client) }
                    }
                }
            }
        }
    }

    /// One local connection, carried as one PortForward stream until either side closes it.
    static func forward(
        _ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, open: Orrery_Orchestrator_V1_PortForwardOpen,
        client: Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>
    ) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                let (ended, end) = AsyncStream<Void>.makeStream()
                try await client.portForward(
                    requestProducer: { writer in
                        try await writer.write(.with { $0.open = open })
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            // The local side's bytes; its end half-closes the replica's side.
                            group.addTask {
                                for try await var buffer in inbound {
                                    while buffer.readableBytes > 0,
                                        let slice = buffer.readSlice(length: min(buffer.readableBytes, 64 << 10))
                                    {
                                        try await writer.write(.with { $0.data = Data(slice.readableBytesView) })
                                    }
                                }
                                // Held open until the replica's side ends: ending the request stream is the half-close.
                            }
                            group.addTask { for await _ in ended {} }
                            try await group.next()
                            group.cancelAll()
                        }
                    },
                    onResponse: { response in
                        defer { end.finish() }
                        for try await message in response.messages {
                            switch message.kind {
                            case .opened(let opened):
                                Console.progress(
                                    "connection to \(open.allocation)/\(opened.replica):\(open.port) on \(opened.deviceDid)"
                                )
                            case .data(let data):
                                try await outbound.write(ByteBuffer(bytes: data))
                            case nil:
                                continue
                            }
                        }
                    })
            }
        } catch {
            Console.progress(
                "a forwarded connection failed: \((error as? RPCError).map { "\($0.code): \($0.message)" } ?? "\(error)")"
            )
        }
    }
}
