internal import Foundation
internal import Logging
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization
internal import OrreryRuntimeCore

/// The agent lines this replica holds, and the loop that delivers pending offers to them. An offer is a row in
/// the database, so whichever replica holds a device's line delivers it; each line remembers what it was sent.
final class AgentHub: Sendable {
    private struct Line {
        let id: UUID
        let continuation: AsyncStream<Orrery_Orchestrator_V1_OrchestratorMessage>.Continuation
        var sent: Set<String> = []
    }

    private let lines = Mutex<[String: Line]>([:])
    private let offers: OfferStore
    private let logger: Logger
    /// How often pending offers are looked for.
    let pollInterval: Duration
    /// Turns a Deploy into what the device is sent (a stateful replica's checkpoint chunks first, then the Deploy
    /// with its resume); nil sends every Deploy as it is.
    private let checkpoints: CheckpointReader?
    /// Seals a private image's pull token and presigned data URLs to the device a Deploy goes to; nil sends none.
    private let secrets: DeploymentSecrets?

    /// Whether this replica holds the device's line.
    func holds(_ device: String) -> Bool { lines.withLock { $0[device] != nil } }

    /// This process among the orchestrator's replicas, for the claims on instructions it delivers.
    let instance = "orc-" + UUID().uuidString.lowercased()

    init(
        offers: OfferStore, checkpoints: CheckpointReader?, secrets: DeploymentSecrets? = nil, logger: Logger,
        pollInterval: Duration = .milliseconds(200)
    ) {
        self.offers = offers
        self.checkpoints = checkpoints
        self.secrets = secrets
        self.logger = logger
        self.pollInterval = pollInterval
    }

    /// Registers a device's line (replacing an older one of the same device); messages for it arrive on the stream.
    func open(device: String) -> (id: UUID, messages: AsyncStream<Orrery_Orchestrator_V1_OrchestratorMessage>) {
        let (stream, continuation) = AsyncStream<Orrery_Orchestrator_V1_OrchestratorMessage>.makeStream()
        let id = UUID()
        let replaced = lines.withLock { lines in
            let old = lines[device]
            lines[device] = Line(id: id, continuation: continuation)
            return old
        }
        replaced?.continuation.finish()
        return (id, stream)
    }

    func close(device: String, id: UUID) {
        let closed = lines.withLock { lines -> Line? in
            guard lines[device]?.id == id else { return nil }
            return lines.removeValue(forKey: device)
        }
        closed?.continuation.finish()
    }

    /// Sends `message` on the device's line, if this replica holds it.
    func send(_ message: Orrery_Orchestrator_V1_OrchestratorMessage, to device: String) {
        _ = lines.withLock { $0[device]?.continuation.yield(message) }
    }

    /// Tells the devices whose lines are held here that these offers were withdrawn (a Stop each): one that bid
    /// frees the capacity it promised at once. Other replicas' devices learn it when they next send their inventory.
    func tellWithdrawn(_ withdrawn: [OfferStore.Withdrawn]) {
        for offer in withdrawn {
            send(
                .with {
                    $0.stop = .with {
                        $0.offerID = offer.offerID
                        $0.reason = "withdrawn: \(offer.reason)"
                    }
                }, to: offer.device)
        }
    }

    /// Delivers pending offers to the lines held here until cancelled.
    func run() async {
        await PeriodicWork("delivering offers", every: pollInterval, logger: logger) { try await self.deliver() }.run()
    }

    func deliver() async throws {
        // The lines are asked one device at a time: a copy of thousands of DIDs per poll cost a tenth of the
        // orchestrator's CPU with 10,000 lines held (perf, fleet benchmark).
        guard lines.withLock({ !$0.isEmpty }) else { return }
        var messages: [(device: String, key: String, message: Orrery_Orchestrator_V1_OrchestratorMessage)] = []
        // Only the offers not yet sent on a line held here are read in full.
        let waiting = try await offers.pendingOffers()
        let unsent = lines.withLock { lines in
            waiting.filter { offer in lines[offer.device].map { !$0.sent.contains("offer:\(offer.id)") } ?? false }
        }
        for (device, offer) in try await offers.pending(ids: unsent.map(\.id)) {
            messages.append((device, "offer:\(offer.offerID)", .with { $0.offer = offer }))
        }
        for (device, instruction, mine) in try await offers.instructions(for: holds, instructor: instance) {
            guard mine else {
                // Another replica delivers it (its claim holds): said once per line, so a reader of both replicas'
                // logs sees who did.
                let key: String
                switch instruction {
                case .deploy(let deploy): key = "deploy:\(deploy.offerID)"
                case .stop(let stop): key = "stop:\(stop.offerID)"
                }
                let first = lines.withLock { lines -> Bool in
                    guard var line = lines[device], !line.sent.contains("held:" + key) else { return false }
                    line.sent.insert("held:" + key)
                    lines[device] = line
                    return true
                }
                if first {
                    logger.info(
                        "another replica delivers this instruction",
                        metadata: ["message": "\(key)", "device": "\(device)"])
                }
                continue
            }
            switch instruction {
            case .deploy(let deploy):
                messages.append((device, "deploy:\(deploy.offerID)", .with { $0.deploy = deploy }))
            case .stop(let stop): messages.append((device, "stop:\(stop.offerID)", .with { $0.stop = stop }))
            }
        }
        for (device, key, message) in messages {
            let send = lines.withLock {
                lines -> AsyncStream<Orrery_Orchestrator_V1_OrchestratorMessage>.Continuation? in
                guard var line = lines[device], !line.sent.contains(key) else { return nil }
                line.sent.insert(key)
                lines[device] = line
                return line.continuation
            }
            guard let send else { continue }
            if case .deploy(var deploy) = message.kind, checkpoints != nil || secrets != nil {
                do {
                    if let secrets { deploy = try await secrets.attach(deploy, device: device) }
                    let prepared =
                        try await checkpoints?.prepare(deploy, device: device) ?? [.with { $0.deploy = deploy }]
                    for message in prepared { send.yield(message) }
                } catch {
                    // Not sent: the next round tries again.
                    _ = lines.withLock { $0[device]?.sent.remove(key) }
                    logger.warning(
                        "cannot prepare a deploy", metadata: ["offer": "\(deploy.offerID)", "error": "\(error)"])
                    continue
                }
            } else {
                send.yield(message)
            }
            logger.info("sent to agent", metadata: ["message": "\(key)", "device": "\(device)"])
        }
    }
}
