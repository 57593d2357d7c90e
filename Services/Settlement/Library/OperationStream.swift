internal import GRPCCore
internal import Logging
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

    /// Operations of one stream running at once; further messages are not read until one finishes.
    static let maximumInFlight = 256

    func run(
        _ operations: RPCAsyncSequence<Orrery_Settlement_V1_Operation, any Error>,
        answering writer: RPCWriter<Orrery_Settlement_V1_OperationResult>
    ) async throws {
        let (results, sink) = AsyncStream<Orrery_Settlement_V1_OperationResult>.makeStream()
        let slots = InFlightSlots(Self.maximumInFlight)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // One writer: answers leave in the order operations finish.
            group.addTask {
                for await result in results { try await writer.write(result) }
            }
            do {
                try await withThrowingDiscardingTaskGroup { running in
                    for try await operation in operations {
                        await slots.acquire()
                        running.addTask {
                            sink.yield(await perform(operation))
                            slots.release()
                        }
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

    /// One operation's answer: its journal entry, or the status its unary call would have ended with.
    func perform(_ operation: Orrery_Settlement_V1_Operation) async -> Orrery_Settlement_V1_OperationResult {
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

/// A counting semaphore for async code: `acquire` waits while every slot is taken (no actor hop when one is free).
final class InFlightSlots: Sendable {
    private let state: Mutex<(free: Int, waiting: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) { state = Mutex((count, [])) }

    func acquire() async {
        if state.withLock({ Self.take(&$0.free) }) { return }
        await withCheckedContinuation { slot in
            let free = state.withLock { state in
                if Self.take(&state.free) { return true }
                state.waiting.append(slot)
                return false
            }
            if free { slot.resume() }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }

    private static func take(_ free: inout Int) -> Bool {
        guard free > 0 else { return false }
        free -= 1
        return true
    }
}
