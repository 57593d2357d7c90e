/// Why an image could not be used, in words a consumer or a device owner can act on.
public enum OCIError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidReference(String)
    case invalidDigest(String)
    /// A manifest, index or configuration that is not what OCI (or Docker's schema 2) describes.
    case invalidManifest(String)
    /// The image offers no manifest for the platform asked for.
    case noMatchingPlatform(String)
    /// Bytes whose digest or size differ from what names them.
    case digestMismatch(String)
    /// The registry refused the credentials, or asks for some that were not given.
    case unauthorized(String)
    case notFound(String)
    /// The registry answered with an error or could not be reached.
    case registry(String)
    /// A layer that is refused as a whole: an escape from the root, a bomb, an unknown format.
    case unsafeLayer(String)
    case storage(String)
    /// The registry is at an address this client must not connect to (a private one, for a service that connects
    /// where a consumer says).
    case forbiddenAddress(String)

    public var description: String {
        switch self {
        case .invalidReference(let why), .invalidDigest(let why), .invalidManifest(let why),
            .noMatchingPlatform(let why), .digestMismatch(let why), .unauthorized(let why), .notFound(let why),
            .registry(let why), .unsafeLayer(let why), .storage(let why), .forbiddenAddress(let why):
            why
        }
    }
}
