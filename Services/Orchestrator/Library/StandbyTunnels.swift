internal import Foundation
internal import GRPCCore
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf
internal import Synchronization

/// The `Tunnel` calls devices keep open ahead of need (standby), by device. A new tunnel is handed to one — its
/// `open` written as the call's first frame, with the connection's first bytes — instead of asking the device on its
/// line for a new call and waiting while it is opened and its invocation checked: a round trip and a signature check
/// fewer for every connection. At most `perDeviceLimit` per device.
final class StandbyTunnels: Sendable {
    /// One standby call, from the moment the device opened it until it ends.
    final class Call: Sendable {
        let device: String
        /// To the device.
        let toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
        private let state = Mutex(State.waiting)

        private enum State {
            /// In the pool.
            case waiting
            /// Taken for `tunnel`: its caller waits for the device's answer.
            case handed(tunnel: String, delivery: Delivery, answer: Answer)
            /// The device answered (or the caller was told why not).
            case answered
            /// The caller gave up before the device answered.
            case abandoned
            /// The call ended.
            case ended
        }

        typealias Answer = AsyncStream<Result<TunnelBroker.Session, any Error>>.Continuation

        /// Where the device's bytes go, and whether they may go there before the caller has its session.
        struct Delivery: Sendable {
            let deliver: @Sendable (Data) async throws -> Void
            let atOnce: Bool
        }

        /// What a device's answer finds.
        private enum Handed {
            case waiting(tunnel: String, delivery: Delivery, answer: Answer)
            case abandoned
            case nothing
        }

        init(device: String, toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>) {
            self.device = device
            self.toDevice = toDevice
        }

        /// Hands tunnel `tunnel` to this call: writes `open` (with `early` as its first bytes) and waits, at most
        /// `limit`, for the device's answer — the session, its bytes going to `deliver` once `consumerReady()` is
        /// called, or at once (`deliverAtOnce`: from the device's answer on, without waiting for this caller to be
        /// resumed — a caller that has nothing left to do before them and never tries another device once the device
        /// answered). Fails with `Unsent` when the call could not take it (nothing reached the device: another may).
        func hand(
            _ open: Orrery_Orchestrator_V1_OpenTunnel, deliver: @escaping @Sendable (Data) async throws -> Void,
            deliverAtOnce: Bool = false, within limit: Duration
        ) async throws -> TunnelBroker.Session {
            let (answers, answer) = AsyncStream<Result<TunnelBroker.Session, any Error>>.makeStream()
            let taken = state.withLock { state -> Bool in
                guard case .waiting = state else { return false }
                state = .handed(
                    tunnel: open.tunnelID, delivery: Delivery(deliver: deliver, atOnce: deliverAtOnce), answer: answer)
                return true
            }
            guard taken else { throw Unsent() }
            do {
                try await toDevice.write(.with { $0.open = open })
            } catch {
                giveUp()
                throw Unsent()
            }
            let expiry = Task {
                try await Task.sleep(for: limit)
                self.giveUp(
                    RPCError(
                        code: .unavailable,
                        message: "the device did not open the connection within \(limit.components.seconds) s"))
            }
            defer { expiry.cancel() }
            return try await withTaskCancellationHandler {
                for await result in answers { return try result.get() }
                throw CancellationError()
            } onCancel: {
                self.giveUp(CancellationError())
            }
        }

        /// The device's answer to the tunnel handed to this call: its session (nil when it could not connect, or
        /// nobody waits any more — the call then ends). Throws when the device answers what it was not asked.
        func deviceAnswered(_ start: Orrery_Orchestrator_V1_TunnelStart) throws -> TunnelBroker.Session? {
            let found = state.withLock { state -> Handed in
                switch state {
                case .handed(let tunnel, let delivery, let answer):
                    state = .answered
                    return .waiting(tunnel: tunnel, delivery: delivery, answer: answer)
                case .abandoned:
                    state = .answered
                    return .abandoned
                case .waiting, .answered, .ended:
                    return .nothing
                }
            }
            let taken: (tunnel: String, delivery: Delivery, answer: Answer)
            switch found {
            case .waiting(let tunnel, let delivery, let answer): taken = (tunnel, delivery, answer)
            case .abandoned: return nil
            case .nothing:
                throw RPCError(code: .invalidArgument, message: "a start on a standby call answers its open, once")
            }
            guard start.tunnelID == taken.tunnel else {
                taken.answer.yield(
                    .failure(RPCError(code: .unavailable, message: "the device answered another tunnel")))
                taken.answer.finish()
                throw RPCError(
                    code: .invalidArgument, message: "this call was handed tunnel \(taken.tunnel), not another")
            }
            guard start.error.isEmpty else {
                taken.answer.yield(
                    .failure(RPCError(code: .unavailable, message: "the device could not connect: \(start.error)")))
                taken.answer.finish()
                return nil
            }
            let session = TunnelBroker.Session(deliver: taken.delivery.deliver, toDevice: toDevice)
            if taken.delivery.atOnce { session.consumerReady() }
            taken.answer.yield(.success(session))
            taken.answer.finish()
            return session
        }

        /// The call ended: a caller still waiting is told so.
        func ended() {
            let waiting = state.withLock { state -> Answer? in
                defer { state = .ended }
                if case .handed(_, _, let answer) = state { return answer }
                return nil
            }
            waiting?.yield(.failure(RPCError(code: .unavailable, message: "the device's standby call ended")))
            waiting?.finish()
        }

        /// The caller stops waiting (`error` tells it why); the device's answer, if it comes, ends the call.
        private func giveUp(_ error: (any Error)? = nil) {
            let waiting = state.withLock { state -> Answer? in
                guard case .handed(_, _, let answer) = state else { return nil }
                state = .abandoned
                return answer
            }
            if let error { waiting?.yield(.failure(error)) }
            waiting?.finish()
        }
    }

    /// A call that could not take a tunnel; nothing reached the device.
    struct Unsent: Error {}

    /// Standby calls one device may hold open on one orchestrator replica.
    static let perDeviceLimit = 16

    private let calls = Mutex<[String: [Call]]>([:])

    /// Adds a standby call `device` opened; nil when it holds `perDeviceLimit` already.
    func add(device: String, toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>) -> Call? {
        calls.withLock { calls in
            guard calls[device, default: []].count < Self.perDeviceLimit else { return nil }
            let call = Call(device: device, toDevice: toDevice)
            calls[device, default: []].append(call)
            return call
        }
    }

    /// Takes one of `device`'s standby calls out of the pool (the one opened first), if it has one.
    func take(device: String) -> Call? {
        calls.withLock { calls in
            guard var waiting = calls[device], !waiting.isEmpty else { return nil }
            let call = waiting.removeFirst()
            calls[device] = waiting.isEmpty ? nil : waiting
            return call
        }
    }

    /// Takes `call` out of the pool (it ended) if it is still there.
    func remove(_ call: Call) {
        calls.withLock { calls in
            guard var waiting = calls[call.device] else { return }
            waiting.removeAll { $0 === call }
            calls[call.device] = waiting.isEmpty ? nil : waiting
        }
    }

    /// How many standby calls `device` has in the pool.
    func count(device: String) -> Int { calls.withLock { $0[device]?.count ?? 0 } }
}
