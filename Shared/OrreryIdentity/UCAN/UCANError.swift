/// Why a UCAN token or chain is invalid; `name` is the error name the UCAN specification and its fixtures use.
public struct UCANError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Name: String, Sendable {
        case malformedToken = "MalformedToken"
        case invalidSignature = "InvalidSignature"
        case invalidClaim = "InvalidClaim"
        case unavailableProof = "UnavailableProof"
        case expired = "Expired"
        case tooEarly = "TooEarly"
        case invalidAudience = "InvalidAudience"
        case invalidSubject = "InvalidSubject"
        case invalidCommand = "InvalidCommand"
        case matchError = "MatchError"
        case revoked = "Revoked"
    }

    public let name: Name
    /// What exactly is wrong, for a person.
    public let reason: String

    public init(_ name: Name, _ reason: String) {
        self.name = name
        self.reason = reason
    }

    public var description: String { "\(name.rawValue): \(reason)" }
}
