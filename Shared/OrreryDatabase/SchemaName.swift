/// A PostgreSQL schema name a service owns. Only lower-case letters, digits and underscores are allowed, so the
/// name is safe to place in SQL where a bind parameter cannot go (DDL).
public struct SchemaName: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String

    /// - Throws: `MigrationError.invalidSchemaName` for anything but `[a-z_][a-z0-9_]{0,62}`.
    public init(_ rawValue: String) throws {
        let isValid =
            !rawValue.isEmpty && rawValue.utf8.count <= 63
            && rawValue.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
            && !(rawValue.utf8.first.map { $0 >= 0x30 && $0 <= 0x39 } ?? true)
        guard isValid else { throw MigrationError.invalidSchemaName(rawValue) }
        self.rawValue = rawValue
    }

    /// The name as a quoted SQL identifier.
    public var quoted: String { "\"\(rawValue)\"" }

    public var description: String { rawValue }
}
