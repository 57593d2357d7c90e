import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Ports for servers a test starts later (in a container, a namespace, another process) and must name first.
///
/// A port the kernel picked for a moment (bound to 0, released) comes from the ephemeral range, the same range every
/// outgoing connection's source port comes from: on a busy test machine one of them can take it before the server
/// binds it. These ports come from below that range, which only an explicit bind uses, are free when handed out, and
/// are never handed out twice by one process.
public enum TestPorts {
    private static let handedOut = Mutex<Set<Int>>([])

    /// A loopback TCP port below the ephemeral range that nothing is bound to now.
    public static func unused() throws -> Int {
        let ephemeralStart = ephemeralRangeStart()
        let candidates = 20_000..<max(20_001, ephemeralStart)
        for _ in 0..<500 {
            let port = Int.random(in: candidates)
            let fresh = handedOut.withLock { $0.insert(port).inserted }
            if fresh, isFree(port) { return port }
        }
        throw POSIXError(.EADDRINUSE)
    }

    /// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`; 32768 when unreadable).
    static func ephemeralRangeStart() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
            let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
            let start = Int(first)
        else { return 32_768 }
        return start
    }

    /// Whether 127.0.0.1:`port` can be bound now.
    static func isFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
