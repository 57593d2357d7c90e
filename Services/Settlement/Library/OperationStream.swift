internal import GRPCCore
internal import Logging
internal import Metrics
internal import OrreryAuth
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// The server side of `Operate`: ledger operations over one stream, each authorised on its own exactly as its unary
/// method is (the same capability check, replay guard and argument check), run concurrently up to
/// `maximumInFlight`, each answered with its tag as it finishes. What one operation does wrong is its own answer.
struct OperationStream {
    let api: SettlementAPI
    let capabilities: CapabilityInterceptor
    let logger: Logger

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
        let method: String
        switch operation.request {
        case .deposit: method = "Deposit"
        case .escrow: method = "Escrow"
        case .release: method = "Release"
        case .refund: method = "Refund"
        case nil: method = "none"
        }
        var code = "ok"
        if case .error(let error) = result.outcome {
            code = "\(RPCError.Code(Status.Code(rawValue: Int(error.code)) ?? .unknown) ?? .unknown)"
        }
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
            switch operation.request {
            case .deposit(let request):
                result.entry = try await authorised(request, "Deposit", header) {
                    try await api.deposit(request, authorization: $0)
                }
            case .escrow(let request):
                result.entry = try await authorised(request, "Escrow", header) {
                    try await api.escrow(request, authorization: $0)
                }
            case .release(let request):
                result.entry = try await authorised(request, "Release", header) {
                    try await api.release(request, authorization: $0)
                }
            case .refund(let request):
                result.entry = try await authorised(request, "Refund", header) {
                    try await api.refund(request, authorization: $0)
                }
            case nil:
                throw RPCError(code: .invalidArgument, message: "request: one of deposit, escrow, release or refund")
            }
        } catch {
            let status: RPCError
            if let error = error as? RPCError {
                status = error
            } else if let convertible = error as? any RPCErrorConvertible {
                status = RPCError(convertible)
            } else {
                logger.error("a streamed ledger operation failed", metadata: ["error": "\(error)"])
                status = RPCError(code: .internalError, message: "internal error")
            }
            result.error = .with {
                $0.code = Int32(status.code.rawValue)
                $0.message = status.message
            }
        }
        return result
    }

    /// Runs `body` under the capability `header` carries for the unary method `method`, as the interceptor would.
    private func authorised<Request: SwiftProtobuf.Message>(
        _ request: Request, _ method: String, _ header: String?,
        _ body: (Authorization) async throws -> Orrery_Settlement_V1_JournalEntry
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        guard
            let authorization = try await capabilities.authorize(
                authorizationHeader: header, method: "orrery.settlement.v1.Settlement/\(method)", request: request)
        else { throw RPCError(code: .internalError, message: "\(method) is open, which it never is") }
        return try await Authorization.$current.withValue(authorization) { try await body(authorization) }
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
