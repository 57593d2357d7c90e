#if canImport(Glibc)
    internal import Glibc
#endif

/// Messages over a Unix socket that may carry an open file descriptor (`SCM_RIGHTS`): the agent's connector inside a
/// sandbox's network namespace opens a socket there and passes it to the agent, which then owns a connection it could
/// not have made from its own namespace.
public enum DescriptorPassing {
    /// Why a message could not be passed.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The most bytes of a message.
    public static let messageLimit = 1024

    /// The size of a control message carrying one descriptor (`CMSG_SPACE(sizeof(int))` on Linux).
    private static var controlSpace: Int { MemoryLayout<cmsghdr>.stride + 8 }

    /// Sends `text` (with `descriptor`, when given) over the connected Unix socket `socket`.
    public static func send(_ text: String, descriptor: Int32? = nil, over socket: Int32) throws(Failure) {
        var payload = Array(text.utf8.prefix(messageLimit))
        if payload.isEmpty { payload = [0x20] }
        var control = [UInt8](repeating: 0, count: descriptor == nil ? 0 : controlSpace)
        let sent = control.withUnsafeMutableBytes { controlBytes -> Int in
            if let descriptor, let base = controlBytes.baseAddress {
                var header = cmsghdr()
                header.cmsg_len = MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size
                header.cmsg_level = SOL_SOCKET
                header.cmsg_type = Int32(SCM_RIGHTS)
                base.storeBytes(of: header, as: cmsghdr.self)
                base.advanced(by: MemoryLayout<cmsghdr>.size).storeBytes(of: descriptor, as: Int32.self)
            }
            return payload.withUnsafeMutableBytes { payloadBytes in
                var vector = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.count > 0 ? controlBytes.baseAddress : nil
                    message.msg_controllen = controlBytes.count
                    var sent: Int
                    repeat { sent = sendmsg(socket, &message, Int32(MSG_NOSIGNAL)) } while sent < 0 && errno == EINTR
                    return sent
                }
            }
        }
        guard sent == payload.count else {
            throw Failure(description: "cannot pass a message: \(String(cString: strerror(errno)))")
        }
    }

    /// Receives one message (and the descriptor it carries, if any) over the connected Unix socket `socket`,
    /// blocking until it comes; nil when the other side closed its end.
    public static func receive(over socket: Int32) throws(Failure) -> (text: String, descriptor: Int32?)? {
        var payload = [UInt8](repeating: 0, count: messageLimit)
        var control = [UInt8](repeating: 0, count: controlSpace)
        var received: Int32?
        let count = control.withUnsafeMutableBytes { controlBytes -> Int in
            payload.withUnsafeMutableBytes { payloadBytes -> Int in
                var vector = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> Int in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    var read: Int
                    repeat {
                        read = recvmsg(socket, &message, Int32(MSG_CMSG_CLOEXEC))
                    } while read < 0 && errno == EINTR
                    if read > 0, message.msg_controllen >= MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size,
                        let base = controlBytes.baseAddress
                    {
                        let header = base.load(as: cmsghdr.self)
                        if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                            received = base.advanced(by: MemoryLayout<cmsghdr>.size).load(as: Int32.self)
                        }
                    }
                    return read
                }
            }
        }
        if count == 0 { return nil }
        guard count > 0 else {
            throw Failure(description: "cannot read a message: \(String(cString: strerror(errno)))")
        }
        return (String(decoding: payload[0..<count], as: UTF8.self), received)
    }
}
