public import OrreryDatabase

/// Migrations every service with a schema carries, so shared runtime pieces find their tables in each schema.
public enum SharedMigrations {
    /// The replay guard of the capability interceptor: the CID of each single-use invocation a replica has
    /// accepted, kept until the invocation expires, so a replay is refused on every replica.
    public static let consumedInvocations = Migration(
        version: 1,
        name: "consumed invocations",
        statements: [
            """
            CREATE TABLE consumed_invocations (
                cid text PRIMARY KEY,
                command text NOT NULL,
                issuer text NOT NULL,
                expires_at timestamptz NOT NULL,
                consumed_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX consumed_invocations_expires_at ON consumed_invocations (expires_at)",
        ]
    )
}
