public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `identity` schema. Never edit a released migration: add the next one.
public enum IdentityMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations,
        Migration(
            version: 2,
            name: "revocation log",
            statements: [
                """
                CREATE TABLE revocations (
                    revision bigserial PRIMARY KEY,
                    cid text NOT NULL UNIQUE,
                    revoked_by text NOT NULL,
                    revoked_at timestamptz NOT NULL DEFAULT now(),
                    invocation bytea NOT NULL
                )
                """,
                // Revocations are irreversible: the log is append-only, enforced by the database.
                """
                CREATE FUNCTION revocations_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'the revocation log is append-only';
                END $$
                """,
                """
                CREATE TRIGGER revocations_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON revocations
                FOR EACH STATEMENT EXECUTE FUNCTION revocations_append_only()
                """,
                """
                CREATE FUNCTION revocations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('orrery_revocations', NEW.revision::text);
                    RETURN NEW;
                END $$
                """,
                """
                CREATE TRIGGER revocations_notify AFTER INSERT ON revocations
                FOR EACH ROW EXECUTE FUNCTION revocations_notify()
                """,
            ]
        ),
        Migration(
            version: 3,
            name: "issued delegations",
            statements: [
                """
                CREATE TABLE issued_delegations (
                    idempotency_key text PRIMARY KEY,
                    request_digest text NOT NULL,
                    cid text NOT NULL,
                    container text NOT NULL,
                    issued_to text NOT NULL,
                    issued_at timestamptz NOT NULL DEFAULT now()
                )
                """
            ]
        ),
    ]
}
