public import Hummingbird
public import NIOCore

/// The request context of every service's HTTP routes: Hummingbird's basics plus the caller's address, which the
/// capability check's failed-authentication throttle counts per source.
public struct OrreryRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connected peer, nil when the channel has none.
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    /// The peer in gRPC's notation (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), as `ServerContext.remotePeer` gives it.
    public var remotePeer: String? { Self.peer(of: remoteAddress) }

    /// `address` in gRPC's peer notation.
    public static func peer(of address: SocketAddress?) -> String? {
        switch address {
        case .v4: "ipv4:\(address?.ipAddress ?? ""):\(address?.port ?? 0)"
        case .v6: "ipv6:[\(address?.ipAddress ?? "")]:\(address?.port ?? 0)"
        case .unixDomainSocket: "unix:"
        case nil: nil
        }
    }
}
