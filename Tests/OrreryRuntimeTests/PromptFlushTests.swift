import GRPCNIOTransportHTTP2Posix
import OrreryRuntimeCore
import Testing

@testable import OrreryRuntime

/// gRPC's flush coalescing holds each flush up to 100 µs for more writes to join it. On our lines a request's hops
/// are one message each (a tunnel's open, then its answer), so every hop waited the whole delay: measured by
/// `make bench` (services), not here — what is checked is that it is off wherever we make a connection.
@Suite("Writes on the services' gRPC connections go out at once")
struct PromptFlushTests {
    @Test("no flush coalescing on every service's server, on lines kept open, on the agent's and the CLI's calls")
    func noCoalescing() async throws {
        // gRPC's own default, which these settings turn off.
        #expect(HTTP2ClientTransport.Posix.Config.defaults.connection.flushCoalescing != nil)
        #expect(HTTP2ServerTransport.Posix.Config.defaults.connection.flushCoalescing != nil)
        #expect(ServiceProbe.prompt.connection.flushCoalescing == nil)
        #expect(ServiceProbe.longLivedLine.connection.flushCoalescing == nil)
        let settings = try await RuntimeSettingsTests().load()
        let server = ServerTransportSettings.configuration(settings: settings, budget: ConnectionBudget(limit: 16))
        #expect(server.connection.flushCoalescing == nil)
    }
}
