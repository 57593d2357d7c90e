import GRPCNIOTransportHTTP2Posix
import OrreryRuntimeCore
import Testing

/// The transport settings of a service's line kept open to a peer (`ServiceLink`). Measured once by hand on this
/// machine: a peer back after a 30 s outage, just after a failed attempt, was reached 3–6 s later with these settings
/// and not within 13 s with gRPC's defaults. As a timed test it failed in full runs, where every suite shares the test
/// process's two cooperative threads (gRPC's back-off timers among them): what is checked here is the schedule.
@Suite("A line kept open to a peer service")
struct LongLivedLineTests {
    @Test(
        "reconnection attempts are at most 5 s apart (gRPC's default back-off grows to 2 minutes), first after 250 ms")
    func backoff() {
        let backoff = ServiceProbe.longLivedLine.backoff
        #expect(backoff.initial == .milliseconds(250))
        #expect(backoff.max == .seconds(5))
        #expect(backoff.jitter <= 0.2)
        #expect(HTTP2ClientTransport.Posix.Config.defaults.backoff.max > .seconds(60))
    }
}
