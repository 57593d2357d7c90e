public import GRPCCore

extension RPCError {
    /// The status a failed call is answered with: the error itself, its conversion, or INTERNAL with a generic
    /// message (what failed inside is for the log, not for the caller).
    public init(answering error: any Error) {
        if let status = error as? RPCError {
            self = status.withBoundedMessage
        } else if let convertible = error as? any RPCErrorConvertible {
            self = RPCError(convertible).withBoundedMessage
        } else {
            self.init(code: .internalError, message: "internal error")
        }
    }

    /// The longest message a caller is answered with, in UTF-8 bytes: a message that quotes the caller's input (a
    /// malformed id, a name) does not grow with it, and stays well inside a peer's header size limit.
    public static let maximumMessageBytes = 1024

    /// This error, its message cut after `maximumMessageBytes` (on a character boundary) with how much was left out.
    public var withBoundedMessage: RPCError {
        guard message.utf8.count > Self.maximumMessageBytes else { return self }
        var kept = ""
        var bytes = 0
        for character in message {
            let size = character.utf8.count
            if bytes + size > Self.maximumMessageBytes - 40 { break }
            kept.append(character)
            bytes += size
        }
        var bounded = self
        bounded.message = kept + "… (\(message.utf8.count - bytes) bytes more)"
        return bounded
    }
}

extension RPCError.Code {
    /// The code a status number on the wire stands for; UNKNOWN for a number that is no error code.
    public init(wireValue: Int32) {
        self = Status.Code(rawValue: Int(wireValue)).flatMap { RPCError.Code($0) } ?? .unknown
    }
}
