internal import GRPCCore
internal import Logging
internal import Metrics
internal import OrreryAuth
internal import OrreryProto
internal import OrreryRuntime
internal import SwiftProtobuf
internal import Synchronization

/// The server side of `Operate`: ledger operations over one stream, each authorised on its own exactly as its unary
/// method is (the same capability check, replay guard and argument check), run concurrently up to
/// `maximumInFlight`, each answered with its tag as it finishes. What one operation does wrong is its own answer.
struct OperationStream {
    let api: SettlementAPI
    let capabilities: CapabilityInterceptor
    let logger: Logger
    /// The caller's address, for the failed-authentication throttle (each operation carries its own capability).
    var peer: String? = nil

    /// Operations of one stream running or answered but not yet written; further messages are not read meanwhile.
    static let maximumInFlight = 256

    func run(
        _ operations: RPCAsyncSequence<Orrery_Settlement_V1_Operation, any Error>,
        answering writer: RPCWriter<Orrery_Settlement_V1_OperationResult>
    ) async throws {
        let (results, sink) = AsyncStream<Orrery_Settlement_V1_OperationResult>.makeStream()
        let slots = InFlightSlots(Self.maximumInFlight)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // One writer: answers leave in the order operations finish. A slot is free again only once its answer
            // is written, so a caller that does not read its answers holds at most `maximumInFlight` of them here.
            group.addTask {
                do {
                    for await result in results {
                        try await writer.write(result)
                        slots.release()
                    }
                } catch {
                    slots.close()
                    throw error
                }
            }
            do {
                try await withThrowingDiscardingTaskGroup { running in
                    for try await operation in operations {
                        guard await slots.acquire() else { break }
                        running.addTask { sink.yield(await perform(operation)) }
                    }
                }
            } catch {
                sink.finish()
                throw error
            }
            sink.finish()
            try await group.waitForAll()
        }
    }

    /// One operation's answer: its journal entry, or the status its unary call would have ended with. Counted and
    /// timed by method and code like a unary call (`settlement_operations_total`, `settlement_operation_seconds`).
    func perform(_ operation: Orrery_Settlement_V1_Operation) async -> Orrery_Settlement_V1_OperationResult {
        let start = ContinuousClock.now
        let result = await outcome(of: operation)
        var code = "ok"
        if case .error(let error) = result.outcome { code = "\(RPCError.Code(wireValue: error.code))" }
        let method = operation.request?.method ?? "none"
        Counter(label: "settlement_operations_total", dimensions: [("method", method), ("code", code)]).increment()
        let elapsed = start.duration(to: .now).components
        Metrics.Timer(
            label: "settlement_operation_seconds", dimensions: [("method", method)], preferredDisplayUnit: .seconds
        )
        .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        return result
    }

    private func outcome(of operation: Orrery_Settlement_V1_Operation) async -> Orrery_Settlement_V1_OperationResult {
        var result = Orrery_Settlement_V1_OperationResult()
        result.tag = operation.tag
        let header = operation.authorization.isEmpty ? nil : operation.authorization
        do {
            guard let request = operation.request else {
                throw RPCError(code: .invalidArgument, message: "request: one of deposit, escrow, release or refund")
            }
            result.entry = try await authorised(request, header)
        } catch {
            let status = RPCError(answering: error)
            if !(error is RPCError), !(error is any RPCErrorConvertible) {
                logger.error("a streamed ledger operation failed", metadata: ["error": "\(error)"])
            }
            result.error = .with {
                $0.code = Int32(status.code.rawValue)
                $0.message = status.message
            }
        }
        return result
    }

    /// Runs `request` under the capability `header` carries for its unary method, exactly as the interceptor would
    /// check a unary call of it.
    private func authorised(_ request: Orrery_Settlement_V1_Operation.OneOf_Request, _ header: String?) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let api = api
        let (message, call):
            (any SwiftProtobuf.Message, (Authorization) async throws -> Orrery_Settlement_V1_JournalEntry)
        switch request {
        case .deposit(let deposit): (message, call) = (deposit, { try await api.deposit(deposit, authorization: $0) })
        case .escrow(let escrow): (message, call) = (escrow, { try await api.escrow(escrow, authorization: $0) })
        case .release(let release): (message, call) = (release, { try await api.release(release, authorization: $0) })
        case .refund(let refund): (message, call) = (refund, { try await api.refund(refund, authorization: $0) })
        }
        guard
            let authorization = try await capabilities.authorize(
                authorizationHeader: header, method: "orrery.settlement.v1.Settlement/\(request.method)",
                request: message, peer: peer)
        else { throw RPCError(code: .internalError, message: "\(request.method) is open, which it never is") }
        return try await Authorization.$current.withValue(authorization) { try await call(authorization) }
    }
}

extension Orrery_Settlement_V1_Operation.OneOf_Request {
    /// The unary method the operation stands for (its capability invokes that method's command).
    var method: String {
        switch self {
        case .deposit: "Deposit"
        case .escrow: "Escrow"
        case .release: "Release"
        case .refund: "Refund"
        }
    }
}

/// A counting semaphore for async code: `acquire` waits while every slot is taken (no actor hop when one is free);
/// once closed, it lets no one wait any more.
final class InFlightSlots: Sendable {
    private struct State {
        var free: Int
        var closed = false
        var waiting: [CheckedContinuation<Bool, Never>] = []
    }

    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    /// Takes a slot, waiting for one if need be; false once closed.
    func acquire() async -> Bool {
        if let taken = state.withLock({ Self.take(&$0) }) { return taken }
        return await withCheckedContinuation { slot in
            let taken = state.withLock { state -> Bool? in
                if let taken = Self.take(&state) { return taken }
                state.waiting.append(slot)
                return nil
            }
            if let taken { slot.resume(returning: taken) }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume(returning: true)
    }

    /// Wakes every waiter with false, and answers false from now on.
    func close() {
        let waiting = state.withLock { state in
            state.closed = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for slot in waiting { slot.resume(returning: false) }
    }

    /// true: taken; false: closed; nil: none free.
    private static func take(_ state: inout State) -> Bool? {
        if state.closed { return false }
        guard state.free > 0 else { return nil }
        state.free -= 1
        return true
    }
}
