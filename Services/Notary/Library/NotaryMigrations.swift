public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `notary` schema. Never edit a released migration: add the next one.
public enum NotaryMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations,
        Migration(
            version: 2,
            name: "contracts and the append-only log",
            statements: [
                // The log: one row per leaf, exactly as signed. The perfect subtrees' hashes (level 0: the leaf
                // hashes) serve proofs in O(log n) reads; one signed tree head per appended batch.
                """
                CREATE TABLE log_entries (
                    idx bigint PRIMARY KEY CHECK (idx >= 0),
                    leaf bytea NOT NULL
                )
                """,
                """
                CREATE TABLE log_nodes (
                    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
                    position bigint NOT NULL CHECK (position >= 0),
                    hash bytea NOT NULL CHECK (length(hash) = 32),
                    PRIMARY KEY (level, position)
                )
                """,
                """
                CREATE TABLE tree_heads (
                    tree_size bigint PRIMARY KEY CHECK (tree_size > 0),
                    root bytea NOT NULL CHECK (length(root) = 32),
                    signed bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                // Nothing in the log is ever changed or removed, whoever asks.
                """
                CREATE FUNCTION refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'the notary log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
                        USING ERRCODE = 'insufficient_privilege';
                END
                $$
                """,
                "CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries FOR EACH ROW EXECUTE FUNCTION refuse_log_change()",
                "CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON log_entries FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change()",
                "CREATE TRIGGER log_nodes_append_only BEFORE UPDATE OR DELETE ON log_nodes FOR EACH ROW EXECUTE FUNCTION refuse_log_change()",
                "CREATE TRIGGER log_nodes_no_truncate BEFORE TRUNCATE ON log_nodes FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change()",
                "CREATE TRIGGER tree_heads_append_only BEFORE UPDATE OR DELETE ON tree_heads FOR EACH ROW EXECUTE FUNCTION refuse_log_change()",
                "CREATE TRIGGER tree_heads_no_truncate BEFORE TRUNCATE ON tree_heads FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change()",
                // Contracts: staged while proposed, then an index of the log's view of each (state, entries,
                // receipts so far). The log is the truth; this table is how the sequencer checks an act quickly.
                """
                CREATE TABLE contracts (
                    id text PRIMARY KEY,
                    consumer_did text NOT NULL,
                    device_did text NOT NULL,
                    owner_did text NOT NULL,
                    orchestrator_did text NOT NULL,
                    deployment_id text NOT NULL,
                    state smallint NOT NULL,
                    proposal bytea NOT NULL,
                    acceptance bytea,
                    replaces text REFERENCES contracts (id),
                    relocations integer NOT NULL DEFAULT 0,
                    last_sequence bigint NOT NULL DEFAULT 0,
                    entry_indexes bigint[] NOT NULL DEFAULT '{}',
                    proposed_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE INDEX contracts_deployment ON contracts (deployment_id)",
                // The first answer to each (caller, method, idempotency key), so a retry returns it.
                """
                CREATE TABLE idempotent_results (
                    invoker text NOT NULL,
                    method text NOT NULL,
                    idempotency_key text NOT NULL,
                    request_sha256 bytea NOT NULL,
                    response bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (invoker, method, idempotency_key)
                )
                """,
            ]
        ),
        Migration(
            version: 3,
            name: "service levels",
            statements: [
                // When a contract was active, and whether its availability term was checked against the registry's
                // liveness record once it ended.
                """
                ALTER TABLE contracts ADD COLUMN sla_availability double precision NOT NULL DEFAULT 0,
                    ADD COLUMN active_at timestamptz, ADD COLUMN ended_at timestamptz,
                    ADD COLUMN sla_checked boolean NOT NULL DEFAULT false
                """,
                """
                CREATE INDEX contracts_sla_unchecked ON contracts (ended_at)
                WHERE NOT sla_checked AND sla_availability > 0 AND ended_at IS NOT NULL
                """,
            ]
        ),
        Migration(
            version: 4,
            name: "SLA breaches by contract",
            statements: [
                // Which log entries are SLA breaches, by contract, so a contract's record names its breaches
                // without reading its every receipt. Written with the entry, in the sequencer's transaction.
                """
                CREATE TABLE contract_breaches (
                    idx bigint PRIMARY KEY REFERENCES log_entries (idx),
                    contract_id text NOT NULL REFERENCES contracts (id)
                )
                """,
                "CREATE INDEX contract_breaches_by_contract ON contract_breaches (contract_id, idx)",
                "CREATE TRIGGER contract_breaches_append_only BEFORE UPDATE OR DELETE ON contract_breaches FOR EACH ROW EXECUTE FUNCTION refuse_log_change()",
                // The entries logged before this migration are indexed by the notary at start (BreachIndex):
                // [done, upto) is what is left.
                "CREATE TABLE contract_breaches_backfill (upto bigint NOT NULL, done bigint NOT NULL)",
                "INSERT INTO contract_breaches_backfill SELECT coalesce(max(idx) + 1, 0), 0 FROM log_entries",
            ]
        ),
    ]
}
