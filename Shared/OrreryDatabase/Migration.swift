internal import Crypto

/// One versioned step of a service's schema. Versions start at 1 and increase by one; a released migration is
/// never edited (its checksum is recorded, and a changed one stops start-up).
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    /// SQL statements run in order, inside the migration transaction, with `search_path` set to the schema.
    public let statements: [String]

    public init(version: Int, name: String, statements: [String]) {
        self.version = version
        self.name = name
        self.statements = statements
    }

    /// SHA-256 (hex) over the name and statements: what was applied is what this binary would apply.
    public var checksum: String {
        var hasher = SHA256()
        hasher.update(data: Array(name.utf8))
        for statement in statements {
            hasher.update(data: [0])
            hasher.update(data: Array(statement.utf8))
        }
        return hasher.finalize().map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
