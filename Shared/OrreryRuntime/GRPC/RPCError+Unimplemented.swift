public import GRPCCore

extension RPCError {
    /// The answer of a method declared in the protos whose implementation belongs to a later issue.
    public static func notYetImplemented(_ method: String, issue: Int) -> RPCError {
        RPCError(code: .unimplemented, message: "\(method) is declared but not implemented yet (issue #\(issue))")
    }
}
