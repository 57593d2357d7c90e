/// Why a schema could not be brought up to date.
public enum MigrationError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidSchemaName(String)
    /// The migrations a binary carries must be numbered 1, 2, 3, … without gaps.
    case invalidSequence(schema: String, versions: [Int])
    /// The database was migrated by a newer binary: refusing to run against a schema this one does not know.
    case schemaNewerThanBinary(schema: String, applied: Int, known: Int)
    /// A migration already applied differs from the one this binary carries.
    case checksumMismatch(schema: String, version: Int, name: String)

    public var description: String {
        switch self {
        case .invalidSchemaName(let name):
            return "'\(name)' is not a valid schema name (lower-case letters, digits, underscores)"
        case .invalidSequence(let schema, let versions):
            return "migrations of schema \(schema) must be numbered 1, 2, 3, … without gaps; found \(versions)"
        case .schemaNewerThanBinary(let schema, let applied, let known):
            return "schema \(schema) is at version \(applied) but this binary knows only up to \(known): "
                + "upgrade the binary before starting it against this database"
        case .checksumMismatch(let schema, let version, let name):
            return "migration \(version) (\(name)) of schema \(schema) differs from the one applied to the database"
        }
    }
}
