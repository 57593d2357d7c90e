public import GRPCCore
public import OrreryProto
internal import OrreryAuth
internal import SwiftProtobuf
internal import Synchronization

/// A client of the settlement gateway's `Operate` stream: many callers' ledger operations over one stream, each
/// with its own capability, each caller awaiting its own answer (matched by tag).
///
/// `run(on:)` holds the stream open; `perform` sends an operation and waits for its result. When the stream ends,
/// every operation still waiting fails with `UNAVAILABLE`, and so does every later `perform`: make a new instance.
public final class SettlementOperations: Sendable {
    private struct State {
        var waiting: [UInt64: CheckedContinuation<Orrery_Settlement_V1_JournalEntry, any Error>] = [:]
        var nextTag: UInt64 = 1
        var ended: RPCError?
    }

    private let state = Mutex(State())
    private let outbound: AsyncStream<Orrery_Settlement_V1_Operation>
    private let sender: AsyncStream<Orrery_Settlement_V1_Operation>.Continuation

    public init() {
        (outbound, sender) = AsyncStream.makeStream()
    }

    /// Holds the stream open over `client` until it ends (the server closes it, the connection fails, or the
    /// calling task is cancelled).
    public func run(on client: GRPCClient<some ClientTransport>) async {
        let outbound = outbound
        do {
            try await Orrery_Settlement_V1_Settlement.Client(wrapping: client).operate(
                requestProducer: { writer in
                    for await operation in outbound { try await writer.write(operation) }
                },
                onResponse: { response in
                    for try await result in response.messages { self.deliver(result) }
                })
            end(RPCError(code: .unavailable, message: "the settlement operation stream ended"))
        } catch {
            end(RPCError(code: .unavailable, message: "the settlement operation stream failed: \(error)"))
        }
    }

    /// Sends `request` under `authorization` ("Bearer <UCAN container>" invoking the request's method) and waits
    /// for its journal entry; throws the operation's status as an `RPCError` when it is refused or fails.
    public func perform(
        _ request: Orrery_Settlement_V1_Operation.OneOf_Request, authorization: String
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        try await withCheckedThrowingContinuation { answer in
            let tag = state.withLock { state -> UInt64? in
                if state.ended != nil { return nil }
                let tag = state.nextTag
                state.nextTag += 1
                state.waiting[tag] = answer
                return tag
            }
            guard let tag else {
                answer.resume(throwing: state.withLock { $0.ended } ?? RPCError(code: .unavailable, message: "ended"))
                return
            }
            sender.yield(
                .with {
                    $0.tag = tag
                    $0.authorization = authorization
                    $0.request = request
                })
        }
    }

    /// `perform` with the `authorization` entry of `metadata` (as a signer made it for the unary call).
    public func perform(
        _ request: Orrery_Settlement_V1_Operation.OneOf_Request, metadata: Metadata
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        try await perform(request, authorization: metadata.authorizationHeader ?? "")
    }

    /// Whether the stream has ended (every later `perform` fails).
    public var hasEnded: Bool { state.withLock { $0.ended != nil } }

    /// Stops sending: the stream ends once the server has answered what it was sent.
    public func finish() {
        sender.finish()
    }

    private func deliver(_ result: Orrery_Settlement_V1_OperationResult) {
        guard let answer = state.withLock({ $0.waiting.removeValue(forKey: result.tag) }) else { return }
        switch result.outcome {
        case .entry(let entry): answer.resume(returning: entry)
        case .error(let error):
            answer.resume(
                throwing: RPCError(code: Self.code(error.code), message: error.message))
        case nil: answer.resume(throwing: RPCError(code: .internalError, message: "the gateway answered nothing"))
        }
    }

    private func end(_ error: RPCError) {
        sender.finish()
        let stranded = state.withLock { state in
            state.ended = state.ended ?? error
            defer { state.waiting = [:] }
            return state.waiting
        }
        for answer in stranded.values { answer.resume(throwing: error) }
    }

    /// A status code as the gateway sent it (an unknown number is `unknown`).
    private static func code(_ wireValue: Int32) -> RPCError.Code {
        Status.Code(rawValue: Int(wireValue)).flatMap { RPCError.Code($0) } ?? .unknown
    }
}
