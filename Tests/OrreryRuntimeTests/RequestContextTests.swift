import NIOCore
import OrreryRuntime
import Testing

@Suite("HTTP callers' addresses in gRPC's notation, so both listeners count failed authentications alike")
struct RequestContextTests {
    @Test("IPv4, IPv6 and Unix-socket peers")
    func peers() throws {
        #expect(OrreryRequestContext.peer(of: try SocketAddress(ipAddress: "192.0.2.7", port: 4321)) == "ipv4:192.0.2.7:4321")
        #expect(OrreryRequestContext.peer(of: try SocketAddress(ipAddress: "2001:db8::1", port: 80)) == "ipv6:[2001:db8::1]:80")
        #expect(OrreryRequestContext.peer(of: try SocketAddress(unixDomainSocketPath: "/tmp/x.sock")) == "unix:")
        #expect(OrreryRequestContext.peer(of: nil) == nil)
    }
}
