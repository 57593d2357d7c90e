internal import Foundation
public import GRPCCore
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
public import OrreryProto
internal import SwiftProtobuf

/// `orrery.orchestrator.v1.AgentChannel`: a device agent's line. The capability check authorised the device when
/// the stream opened; its first message says which device it is, then it answers offers.
public struct AgentChannelService: Orrery_Orchestrator_V1_AgentChannel.SimpleServiceProtocol {
    let hub: AgentHub
    let offers: OfferStore
    let driver: DeploymentDriver
    let logger: Logger

    public func connect(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_AgentMessage, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_OrchestratorMessage>,
        context: ServerContext
    ) async throws {
        guard let authorization = Authorization.current else {
            throw RPCError(code: .unauthenticated, message: "no capability")
        }
        let device = authorization.invoker
        var incoming = request.makeAsyncIterator()
        guard let first = try await incoming.next(), case .hello(let hello) = first.kind else {
            throw RPCError(code: .invalidArgument, message: "the first message must be a hello naming the device")
        }
        guard hello.deviceDid == device.string else {
            throw RPCError(
                code: .permissionDenied,
                message: "hello.device_did \(hello.deviceDid) is not the invoker \(device): a device speaks for itself")
        }
        let (id, outgoing) = hub.open(device: device.string)
        logger.info("agent connected", metadata: ["device": "\(device)"])
        defer {
            hub.close(device: device.string, id: id)
            logger.info("agent disconnected", metadata: ["device": "\(device)"])
        }
        try await hub.deliver()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outgoing { try await response.write(message) }
            }
            // The line ends when the agent closes it (a newer line of the same device only stops the sending).
            while let message = try await incoming.next() {
                try await handle(message, from: device)
            }
            group.cancelAll()
        }
    }

    private func handle(_ message: Orrery_Orchestrator_V1_AgentMessage, from device: DID) async throws {
        switch message.kind {
        case .bid(let signed):
            let bid: Orrery_Orchestrator_V1_Bid
            do {
                try SignedMessage.verify(signed, type: Orrery_Orchestrator_V1_Bid.protoMessageName, requiring: [device])
                bid = try Orrery_Orchestrator_V1_Bid(serializedBytes: signed.payload)
            } catch {
                throw RPCError(code: .invalidArgument, message: "bid: \(error)")
            }
            guard bid.deviceDid == device.string, let recorded = try await offers.offer(bid.offerID),
                recorded.device == device.string
            else {
                throw RPCError(
                    code: .permissionDenied, message: "bid for offer \(bid.offerID), which is not this device's")
            }
            guard bid.jobCost == recorded.offer.jobCost, bid.orchestratorDid == recorded.offer.orchestratorDid else {
                throw RPCError(
                    code: .invalidArgument, message: "the bid's price or orchestrator differs from offer \(bid.offerID)"
                )
            }
            await record(bid.offerID, device: device, state: .accepted, bid: signed, reason: "bid")
        case .decline(let decline):
            guard decline.reason.count <= 500 else {
                throw RPCError(code: .invalidArgument, message: "decline.reason: at most 500 characters")
            }
            await record(
                decline.offerID, device: device, state: .declined, bid: nil,
                reason: decline.reason.isEmpty ? "declined" : decline.reason)
        case .report(let report):
            if let deployment = try await offers.record(report, device: device.string) {
                logger.info(
                    "allocation report",
                    metadata: ["offer": "\(report.offerID)", "state": "\(report.state)", "reason": "\(report.reason)"])
                try await driver.advance(deployment)
            }
        case .log(let chunk):
            guard chunk.data.count <= 1 << 20 else {
                throw RPCError(code: .invalidArgument, message: "log: at most 1 MiB per chunk")
            }
            _ = try await offers.append(chunk, device: device.string)
        case .output(let output):
            guard try await offers.store(output, device: device.string) else {
                logger.warning(
                    "output refused (not this device's offer, not declared, a wrong sha256, or a repeat)",
                    metadata: ["offer": "\(output.offerID)", "path": "\(output.path)"])
                return
            }
        case .hello:
            throw RPCError(code: .invalidArgument, message: "hello is sent once, first")
        case nil:
            throw RPCError(code: .invalidArgument, message: "an empty message")
        }
    }

    /// Records an answer and advances the deployment at once; a late answer (expired or withdrawn) is logged.
    private func record(
        _ offerID: String, device: DID, state: OfferStore.State, bid: Orrery_Common_V1_Signed?, reason: String
    ) async {
        do {
            guard
                let deployment = try await offers.answer(
                    offerID, device: device.string, state: state, bid: bid, reason: reason)
            else {
                logger.notice(
                    "answer to an offer no longer open", metadata: ["offer": "\(offerID)", "device": "\(device)"])
                return
            }
            logger.info(
                "offer answered",
                metadata: ["offer": "\(offerID)", "device": "\(device)", "answer": "\(state)", "reason": "\(reason)"])
            try await driver.advance(deployment)
        } catch {
            logger.warning("recording an answer failed", metadata: ["offer": "\(offerID)", "error": "\(error)"])
        }
    }
}
