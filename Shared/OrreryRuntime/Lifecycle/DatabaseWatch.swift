public import GRPCCore
internal import Logging
internal import PostgresNIO
internal import Synchronization

/// Whether this service's PostgreSQL answers, probed every `interval` with `SELECT 1` bounded by `timeout` (two
/// probes in a row unanswered: it does not). While it does not, every gRPC service of the process reports NOT_SERVING (gRPC health and `/healthz`), and calls are
/// refused at once with UNAVAILABLE (`DatabaseGate`, the JSON gateway) rather than left hanging on the database.
public final class DatabaseWatch: Sendable {
    private let reachable = Atomic<Bool>(true)
    let interval: Duration
    let timeout: Duration

    public init(interval: Duration = .seconds(1), timeout: Duration = .seconds(2)) {
        self.interval = interval
        self.timeout = timeout
    }

    /// Whether the last probe was answered (true until the first one fails).
    public var isReachable: Bool { reachable.load(ordering: .acquiring) }

    /// The refusal of a call while the database is unreachable.
    static let refusal = RPCError(
        code: .unavailable, message: "the service's database is unreachable; try again shortly")

    /// Probes until cancelled, setting `services` (and the server, "") NOT_SERVING while the database does not
    /// answer and SERVING again once it does.
    func run(client: PostgresClient, health: HealthStatusBook, services: [String], logger: Logger) async {
        var misses = 0
        while !Task.isCancelled {
            // Inconclusive (this process was too busy to time the probe): neither an answer nor a miss.
            guard let probed = await probe(client, logger: logger) else {
                try? await Task.sleep(for: interval)
                continue
            }
            guard !Task.isCancelled else { return }
            // Two unanswered probes in a row: one slow answer on a loaded machine (or a busy pool) is no outage.
            misses = probed ? 0 : misses + 1
            let answered = probed || misses < 2
            let was = reachable.exchange(answered, ordering: .acquiringAndReleasing)
            if was != answered {
                let status: HealthStatusBook.Status = answered ? .serving : .notServing
                for service in [""] + services { health.set(status, for: service) }
                if answered {
                    logger.notice("the database answers again: serving")
                } else {
                    logger.error("the database does not answer: NOT_SERVING, calls refused with UNAVAILABLE")
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Whether `SELECT 1` is answered within the timeout. A query that hangs is not waited for (a hung database
    /// would hang the watch with it); while it is still out, the next probe counts as unanswered without a new one.
    /// Nil when the probe cannot tell: its own timer fired over a timeout late (this process, not the database, was
    /// too busy — a loaded machine starving its threads), or it waits on such a probe's query.
    private func probe(_ client: PostgresClient, logger: Logger) async -> Bool? {
        if let outstanding = outstanding.withLock({ $0 }), !outstanding.isFinished {
            return lastInconclusive.load(ordering: .acquiring) ? nil : false
        }
        let started = ContinuousClock.now
        let (answers, answer) = AsyncStream<Bool>.makeStream(bufferingPolicy: .bufferingOldest(1))
        let flight = QueryInFlight()
        outstanding.withLock { $0 = flight }
        Task {
            let answered = (try? await client.query("SELECT 1", logger: logger).collect()) != nil
            flight.finish()
            answer.yield(answered)
        }
        let timeout = timeout
        let timer = Task {
            try? await Task.sleep(for: timeout)
            answer.yield(false)
        }
        var result = false
        for await answered in answers {
            result = answered
            break
        }
        timer.cancel()
        let late = !result && ContinuousClock.now - started > timeout * 2
        lastInconclusive.store(late, ordering: .releasing)
        return late ? nil : result
    }

    /// Whether the last probe could not tell.
    private let lastInconclusive = Atomic<Bool>(false)

    /// The last probe's query, which may still hang.
    private let outstanding = Mutex<QueryInFlight?>(nil)
}

/// Whether a probe's query ended.
final class QueryInFlight: Sendable {
    private let finished = Atomic<Bool>(false)
    var isFinished: Bool { finished.load(ordering: .acquiring) }
    func finish() { finished.store(true, ordering: .releasing) }
}

/// Refuses every call but health and reflection with UNAVAILABLE while the service's database is unreachable.
public struct DatabaseGate: ServerInterceptor {
    let watch: DatabaseWatch

    public init(watch: DatabaseWatch) { self.watch = watch }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let service = context.descriptor.service.fullyQualifiedService
        guard watch.isReachable || service.hasPrefix("grpc.health.") || service.hasPrefix("grpc.reflection.") else {
            throw DatabaseWatch.refusal
        }
        return try await next(request, context)
    }
}
