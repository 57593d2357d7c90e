/// A UCAN command: lower case, `/`-separated segments, no trailing slash; `/` is "top".
public struct Command: Sendable, Hashable, CustomStringConvertible {
    public let string: String

    /// - Throws: `UCANError(.malformedToken)` for a malformed command.
    public init(_ string: String) throws {
        guard string.hasPrefix("/"), string == "/" || !string.hasSuffix("/"), string == string.lowercased(),
            !string.contains("//")
        else { throw UCANError(.malformedToken, "'\(string)' is not a command (lower case, '/a/b', no trailing '/')") }
        self.string = string
    }

    /// Whether this command proves `other`: equal, or a prefix of it by whole segments (`/a` covers `/a/b`, not `/ab`).
    public func covers(_ other: Command) -> Bool {
        string == "/" || other.string == string || other.string.hasPrefix(string + "/")
    }

    public var description: String { string }
}
