internal import GRPCCore
public import OrreryIdentity

/// The validated capability a handler runs under: set by `CapabilityInterceptor` for the duration of the call.
public struct Authorization: Sendable {
    /// The validated invocation and its chain.
    public let validated: ChainValidator.Validated
    /// Every delegation the caller's container carried, by CID (a handler may need more than the chain,
    /// e.g. the path of a revocation).
    public let delegations: [CID: Delegation]

    /// The current call's authorization; `UNAUTHENTICATED` outside a call the capability check let through.
    public static func required() throws -> Authorization {
        guard let current else { throw RPCError(code: .unauthenticated, message: "no capability") }
        return current
    }

    public var invoker: DID { validated.invocation.issuer }
    public var invocation: Invocation { validated.invocation }

    /// The authorization of the current RPC, or nil outside one (or for an open method).
    @TaskLocal public static var current: Authorization?
}
