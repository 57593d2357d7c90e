public import GRPCCore

extension RPCError {
    /// The status a failed call is answered with: the error itself, its conversion, or INTERNAL with a generic
    /// message (what failed inside is for the log, not for the caller).
    public init(answering error: any Error) {
        if let status = error as? RPCError {
            self = status
        } else if let convertible = error as? any RPCErrorConvertible {
            self.init(convertible)
        } else {
            self.init(code: .internalError, message: "internal error")
        }
    }
}

extension RPCError.Code {
    /// The code a status number on the wire stands for; UNKNOWN for a number that is no error code.
    public init(wireValue: Int32) {
        self = Status.Code(rawValue: Int(wireValue)).flatMap { RPCError.Code($0) } ?? .unknown
    }
}
