#if canImport(Glibc)
    internal import Glibc
#endif

/// Hands an open file descriptor from one process to another over a Unix stream socket (`SCM_RIGHTS`): a helper
/// started inside a sandbox's network namespace opens a socket there and passes it to the agent, which then owns a
/// connection it could not have made from its own namespace.
public enum DescriptorPassing {
    /// Why a descriptor could not be passed.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The size of a control message carrying one descriptor (`CMSG_SPACE(sizeof(int))` on Linux).
    private static var controlSpace: Int { MemoryLayout<cmsghdr>.stride + 8 }

    /// Sends `descriptor` over the connected Unix socket `socket`.
    public static func send(_ descriptor: Int32, over socket: Int32) throws(Failure) {
        var byte: UInt8 = 1
        var control = [UInt8](repeating: 0, count: controlSpace)
        let sent = control.withUnsafeMutableBytes { controlBytes -> Int in
            guard let base = controlBytes.baseAddress else { return -1 }
            var header = cmsghdr()
            header.cmsg_len = MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size
            header.cmsg_level = SOL_SOCKET
            header.cmsg_type = Int32(SCM_RIGHTS)
            base.storeBytes(of: header, as: cmsghdr.self)
            base.advanced(by: MemoryLayout<cmsghdr>.size).storeBytes(of: descriptor, as: Int32.self)
            return withUnsafeMutablePointer(to: &byte) { bytePointer in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(bytePointer), iov_len: 1)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = base
                    message.msg_controllen = controlBytes.count
                    var sent: Int
                    repeat { sent = sendmsg(socket, &message, Int32(MSG_NOSIGNAL)) } while sent < 0 && errno == EINTR
                    return sent
                }
            }
        }
        guard sent == 1 else {
            throw Failure(description: "cannot pass the connection: \(String(cString: strerror(errno)))")
        }
    }

    /// Receives one descriptor over the connected Unix socket `socket` (blocking until it comes or the sender
    /// closed its end).
    public static func receive(over socket: Int32) throws(Failure) -> Int32 {
        var byte: UInt8 = 0
        var control = [UInt8](repeating: 0, count: controlSpace)
        var received: Int32 = -1
        let count = control.withUnsafeMutableBytes { controlBytes -> Int in
            guard let base = controlBytes.baseAddress else { return -1 }
            let read = withUnsafeMutablePointer(to: &byte) { bytePointer in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(bytePointer), iov_len: 1)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = base
                    message.msg_controllen = controlBytes.count
                    var read: Int
                    repeat {
                        read = recvmsg(socket, &message, Int32(MSG_CMSG_CLOEXEC))
                    } while read < 0 && errno == EINTR
                    return read > 0 && message.msg_controllen >= MemoryLayout<cmsghdr>.size ? read : -1
                }
            }
            guard read > 0 else { return read }
            let header = base.load(as: cmsghdr.self)
            guard header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS),
                header.cmsg_len >= MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size
            else { return -1 }
            received = base.advanced(by: MemoryLayout<cmsghdr>.size).load(as: Int32.self)
            return read
        }
        guard count > 0, received >= 0 else {
            throw Failure(description: "no connection was passed back")
        }
        return received
    }
}
