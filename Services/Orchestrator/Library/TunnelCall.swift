internal import Foundation
internal import GRPCCore
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// A call whose first message says where to open a tunnel and whose later messages are the bytes to carry there
/// (`PortForward`, `PeerTunnel`): the first is read and the tunnel opened; then the caller's messages go to the
/// device's side — their end half-closes it, a bad one ends the call — until the device's side ends, which ends the
/// call. However it ends, the device is told to close its side.
enum TunnelCall {
    /// What one of the caller's later messages asks for.
    enum Step {
        case data(Data)
        /// No more bytes from the caller (the device's side still answers).
        case end
        /// The caller is done with the tunnel: the call ends.
        case close
        case skip
    }

    /// Carries `request` once `open` (its first message read by `opening`, which throws for a bad one) opened a
    /// session; `step` reads each later message (and throws for a bad one). A call that sends nothing fails with
    /// `missing`, or ends quietly when it is nil.
    static func carry<Message: Sendable, Open: Sendable>(
        _ request: RPCAsyncSequence<Message, any Error>,
        opening: @escaping @Sendable (Message) throws -> Open, missing: RPCError?,
        step: @escaping @Sendable (Message) throws -> Step,
        open: (Open) async throws -> TunnelBroker.Session
    ) async throws {
        let (opens, opened) = AsyncStream<Open>.makeStream()
        let (sessions, connected) = AsyncStream<TunnelBroker.Session>.makeStream()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            // The caller's messages: true once the call is to end.
            group.addTask {
                defer { opened.finish() }
                var session: TunnelBroker.Session?
                var first = true
                for try await message in request {
                    if first {
                        first = false
                        opened.yield(try opening(message))
                        opened.finish()
                        for await reached in sessions { session = reached }
                        continue
                    }
                    let next = try step(message)
                    guard let session else { return false }
                    // A device side that ended takes no more: its end ends the call.
                    switch next {
                    case .data(let data):
                        do { try await session.toDevice.write(.with { $0.data = data }) } catch { return false }
                    case .end: try? await session.toDevice.write(.with { $0.end = true })
                    case .close: return true
                    case .skip: continue
                    }
                }
                try? await session?.toDevice.write(.with { $0.end = true })
                return false
            }
            var first: Open?
            for await asked in opens { first = asked }
            guard let first else {
                connected.finish()
                if let missing { throw missing }
                return
            }
            let session: TunnelBroker.Session
            do {
                session = try await open(first)
            } catch {
                connected.finish()
                throw error
            }
            connected.yield(session)
            connected.finish()
            defer { session.close() }
            group.addTask {
                await session.waitUntilDeviceEnded()
                return true
            }
            while let ends = try await group.next() {
                if ends { break }
            }
            group.cancelAll()
        }
    }
}
