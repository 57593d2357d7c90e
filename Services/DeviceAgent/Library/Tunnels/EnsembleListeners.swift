#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import GRPCCore
internal import Logging
internal import Metrics
internal import NIOCore
internal import NIOPosix
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// A listening socket on a loopback address (the connector makes it inside a sandbox's network namespace).
public enum EnsembleListener {
    /// Why no socket listens.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A socket listening on `address`:`port`, which must be a 127.0.0.0/8 address other than 127.0.0.1.
    public static func listen(address: String, port: Int) -> Result<Int32, Failure> {
        var parsed = in_addr()
        guard (1...65535).contains(port), address.hasPrefix("127."), address != "127.0.0.1",
            inet_pton(AF_INET, address, &parsed) == 1
        else { return .failure(Failure(description: "LISTEN takes a 127.x.y.z address (not 127.0.0.1) and a port")) }
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { return .failure(Failure(description: String(cString: strerror(errno)))) }
        var one: Int32 = 1
        setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
        socketAddress.sin_addr = parsed
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, Glibc.listen(socket, 512) == 0 else {
            let reason = String(cString: strerror(errno))
            close(socket)
            return .failure(Failure(description: "\(address):\(port): \(reason)"))
        }
        return .success(socket)
    }
}

/// The ensemble network on this device: for each running allocation with partners, the device listens inside its
/// sandbox on each partner's loopback address and ports (what the sandbox's /etc/hosts names them) and carries each
/// connection there to the orchestrator as a `PeerTunnel` call on a line — its own HTTP/2 stream — which reaches a
/// running replica of the partner over that replica's device line. While it serves any, a few such calls are kept
/// open on each line ahead of need (`WarmPeerCalls`). The listeners are made again when the sandbox's network
/// namespace changes (a restart in place) and closed when the allocation ends.
final class EnsembleListeners: Sendable {
    let runner: AllocationRunner
    let connector: SandboxConnector
    let logger: Logger
    /// Lines to orchestrators that connections can be carried over, by orchestrator DID.
    private let lines = Mutex<[String: any Orrery_Orchestrator_V1_AgentChannel.ClientProtocol]>([:])
    private let serving = Mutex<[String: Task<Void, Never>]>([:])
    /// Warm `PeerTunnel` calls on each line, by orchestrator DID, while any allocation is served.
    private let warm = Mutex<[String: (calls: WarmPeerCalls, task: Task<Void, Never>)]>([:])
    /// Warm calls kept on each line.
    let warmCount: Int
    /// How often a running allocation's network namespace is looked at.
    static let lookInterval = Duration.milliseconds(250)

    init(runner: AllocationRunner, connector: SandboxConnector, logger: Logger, warmCount: Int = 4) {
        self.runner = runner
        self.connector = connector
        self.logger = logger
        self.warmCount = warmCount
    }

    func attach(_ line: any Orrery_Orchestrator_V1_AgentChannel.ClientProtocol, orchestrator: String) {
        lines.withLock { $0[orchestrator] = line }
        keepWarmCalls()
    }

    func detach(orchestrator: String) {
        _ = lines.withLock { $0.removeValue(forKey: orchestrator) }
        warm.withLock { $0.removeValue(forKey: orchestrator) }?.task.cancel()
    }

    /// Keeps warm calls on every line while an allocation is served; none otherwise.
    private func keepWarmCalls() {
        let wanted = serving.withLock { !$0.isEmpty } && warmCount > 0
        guard wanted else {
            let stopped = warm.withLock { warm in
                defer { warm.removeAll() }
                return warm.values.map(\.task)
            }
            for task in stopped { task.cancel() }
            return
        }
        for (orchestrator, line) in lines.withLock({ $0 }) {
            warm.withLock { warm in
                guard warm[orchestrator] == nil else { return }
                let calls = WarmPeerCalls(count: warmCount, logger: logger)
                let task = Task(executorPreference: LineLoop.executor) {
                    await calls.keep(over: line) { assignment in
                        await self.carryOnItsOwnCall(assignment.connection, first: assignment.first, over: line)
                    }
                }
                warm[orchestrator] = (calls, task)
            }
        }
    }

    /// The partners the allocation was deployed with (`peers.pb` in its directory).
    func peers(of id: String) -> [Orrery_Orchestrator_V1_EnsemblePeer] {
        guard let data = FileManager.default.contents(atPath: runner.directory(id) + "/peers.pb") else { return [] }
        return (try? Orrery_Orchestrator_V1_Deploy(serializedBytes: data))?.peers ?? []
    }

    /// Writes what a sandbox needs to reach its partners by name before it starts: `peers.pb` and the `hosts` file
    /// bound at its /etc/hosts.
    static func prepare(_ peers: [Orrery_Orchestrator_V1_EnsemblePeer], in directory: String) throws {
        guard !peers.isEmpty else { return }
        let record = Orrery_Orchestrator_V1_Deploy.with { $0.peers = peers }
        try Data(try record.serializedBytes() as [UInt8]).write(
            to: URL(fileURLWithPath: directory + "/peers.pb"), options: .atomic)
        var hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
        // Its own partners by their allocation's name; other deployments' by the name its spec gave them.
        for peer in peers { hosts += "\(peer.address)\t\(peer.name.isEmpty ? peer.allocation : peer.name)\n" }
        try hosts.write(toFile: directory + "/hosts", atomically: true, encoding: .utf8)
    }

    /// Serves allocation `id`'s partners while it runs, over the line to `orchestrator` (or another when that one
    /// is down).
    func serve(_ id: String, orchestrator: String) {
        let peers = peers(of: id)
        guard !peers.isEmpty else { return }
        let task = Task(executorPreference: LineLoop.executor) {
            await self.keep(id, peers: peers, orchestrator: orchestrator)
        }
        serving.withLock { $0.updateValue(task, forKey: id) }?.cancel()
        keepWarmCalls()
    }

    /// Stops serving allocation `id`'s partners.
    func close(_ id: String) {
        serving.withLock { $0.removeValue(forKey: id) }?.cancel()
        keepWarmCalls()
    }

    private func keep(_ id: String, peers: [Orrery_Orchestrator_V1_EnsemblePeer], orchestrator: String) async {
        var state = PartnerListening()
        var listening: Task<Void, Never>?
        defer { listening?.cancel() }
        while !Task.isCancelled {
            if runner.status(id) == .running, let member = SandboxProbe.networkMember(among: runner.processes(id)),
                let current = SandboxProbe.namespace("net", of: member), state.needsListening(in: current)
            {
                listening?.cancel()
                listening = nil
                var sockets: [(peer: Orrery_Orchestrator_V1_EnsemblePeer, port: UInt32, socket: Int32)] = []
                var failures: [String] = []
                for peer in peers {
                    for port in peer.ports {
                        do {
                            let socket = try await connector.listen(
                                id, member: member, address: peer.address, port: Int(port))
                            sockets.append((peer, port, socket))
                        } catch {
                            failures.append("\(peer.allocation):\(port): \(error)")
                        }
                    }
                }
                switch state.listened(in: current, complete: failures.isEmpty) {
                case .serve:
                    listening = Task(executorPreference: LineLoop.executor) {
                        await self.accept(id, on: sockets, orchestrator: orchestrator)
                    }
                case .retry(let report):
                    for made in sockets { _ = Glibc.close(made.socket) }
                    if report {
                        logger.warning(
                            "cannot listen for ensemble partners in a sandbox yet; trying again",
                            metadata: ["offer": "\(id)", "errors": "\(failures.joined(separator: "; "))"])
                    }
                }
            }
            try? await Task.sleep(for: Self.lookInterval)
        }
    }

    /// Accepts on every socket until cancelled, each connection carried on its own.
    private func accept(
        _ id: String, on sockets: [(peer: Orrery_Orchestrator_V1_EnsemblePeer, port: UInt32, socket: Int32)],
        orchestrator: String
    ) async {
        await withDiscardingTaskGroup { group in
            for (peer, port, socket) in sockets {
                group.addTask {
                    let habit = EarlyBytesHabit()
                    do {
                        let server = try await ServerBootstrap(group: LineLoop.group)
                            .childChannelOption(.allowRemoteHalfClosure, value: true)
                            .bind(socket) { channel in
                                channel.eventLoop.makeCompletedFuture {
                                    let early = EarlyBytesHandler(habit: habit, eventLoop: channel.eventLoop)
                                    try channel.pipeline.syncOperations.addHandler(early)
                                    let connection = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                                        wrappingChannelSynchronously: channel,
                                        configuration: .init(isOutboundHalfClosureEnabled: true))
                                    return (connection, early.firstBytes)
                                }
                            }
                        try await withTaskCancellationHandler {
                            try await server.executeThenClose { connections in
                                try await withThrowingDiscardingTaskGroup { connectionGroup in
                                    for try await (connection, firstBytes) in connections {
                                        connectionGroup.addTask {
                                            await self.carry(
                                                connection, firstBytes: firstBytes, from: id, to: peer, port: port,
                                                orchestrator: orchestrator)
                                        }
                                    }
                                }
                            }
                        } onCancel: {
                            server.channel.close(promise: nil)
                        }
                    } catch {
                        self.logger.info(
                            "an ensemble listener ended",
                            metadata: ["offer": "\(id)", "partner": "\(peer.allocation):\(port)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    /// One sandbox connection to `peer`:`port`, carried over a line until either side ends it; its first bytes, when
    /// they came at once (`firstBytes`), ride in its first frame.
    private func carry(
        _ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, firstBytes: EventLoopFuture<EarlyBytesHandler.Outcome>,
        from id: String, to peer: Orrery_Orchestrator_V1_EnsemblePeer, port: UInt32, orchestrator: String
    ) async {
        var early: ByteBuffer?
        switch try? await firstBytes.get() {
        case .early(let bytes):
            early = bytes
            Self.firstBytes.early.increment()
        case .late: Self.firstBytes.late.increment()
        case .notWaited: Self.firstBytes.notWaited.increment()
        case .closed, nil: break
        }
        let allocation = peer.allocation
        let chosen = lines.withLock { lines in lines[orchestrator].map { (orchestrator, $0) } ?? lines.first }
        guard let (lineOrchestrator, line) = chosen else {
            // Closed through `executeThenClose`: NIO traps on a channel dropped with its writer open.
            try? await connection.executeThenClose { _, _ in }
            return
        }
        let first = Orrery_Orchestrator_V1_TunnelFrame.with {
            $0.peer = .with {
                $0.offerID = id
                $0.allocation = allocation
                $0.port = port
                $0.deploymentID = peer.deploymentID
                if let early { $0.earlyData = Data(early.readableBytesView) }
            }
        }
        if let calls = warm.withLock({ $0[lineOrchestrator]?.calls }),
            calls.hand(WarmPeerCalls.Assignment(connection: connection, first: first))
        {
            Self.carried.warm.increment()
            return
        }
        Self.carried.ownCall.increment()
        await carryOnItsOwnCall(connection, first: first, over: line)
    }

    /// Sandbox connections to partners (`orrery_agent_partner_connections_total`), by how: handed to a warm call, or
    /// on a call opened for them.
    private static let carried = (
        warm: Counter(label: "orrery_agent_partner_connections_total", dimensions: [("how", "warm")]),
        ownCall: Counter(label: "orrery_agent_partner_connections_total", dimensions: [("how", "own_call")])
    )

    /// Sandbox connections to partners by what became of their first bytes
    /// (`orrery_agent_partner_first_bytes_total`): they rode in the first frame, were waited for in vain, or were not
    /// waited for (the port's connections do not speak first).
    private static let firstBytes = (
        early: Counter(label: "orrery_agent_partner_first_bytes_total", dimensions: [("how", "early")]),
        late: Counter(label: "orrery_agent_partner_first_bytes_total", dimensions: [("how", "late")]),
        notWaited: Counter(label: "orrery_agent_partner_first_bytes_total", dimensions: [("how", "not_waited")])
    )

    /// Carries a sandbox's connection on a `PeerTunnel` call opened for it, `first` its first frame.
    private func carryOnItsOwnCall(
        _ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, first: Orrery_Orchestrator_V1_TunnelFrame,
        over line: any Orrery_Orchestrator_V1_AgentChannel.ClientProtocol
    ) async {
        do {
            try await SandboxTunnels.bridge(connection, first: first) { producer, onResponse in
                try await line.peerTunnel(requestProducer: producer, onResponse: onResponse)
            }
        } catch {
            logger.info(
                "an ensemble connection ended",
                metadata: [
                    "offer": "\(first.peer.offerID)", "partner": "\(first.peer.allocation):\(first.peer.port)",
                    "error": "\(error)",
                ])
        }
    }
}
