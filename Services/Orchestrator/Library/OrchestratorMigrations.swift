public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `orchestrator` schema. Never edit a released migration: add the next one.
public enum OrchestratorMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations,
        Migration(
            version: 2,
            name: "deployments",
            statements: [
                """
                CREATE TABLE deployments (
                    id text PRIMARY KEY,
                    consumer_did text NOT NULL,
                    idempotency_key text NOT NULL,
                    state smallint NOT NULL,
                    record bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    revision bigint NOT NULL,
                    UNIQUE (consumer_did, idempotency_key)
                )
                """,
                "CREATE INDEX deployments_by_consumer ON deployments (consumer_did, created_at DESC, id DESC)",
                "CREATE INDEX deployments_in_progress ON deployments (state) WHERE state NOT IN (8, 9, 10)",
                """
                CREATE TABLE deployment_events (
                    revision bigserial PRIMARY KEY,
                    deployment_id text NOT NULL REFERENCES deployments (id),
                    state smallint NOT NULL,
                    record bytea NOT NULL,
                    at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, revision)",
                """
                CREATE FUNCTION deployment_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('orrery_deployment_events', NEW.revision::text);
                    RETURN NEW;
                END $$
                """,
                """
                CREATE TRIGGER deployment_events_notify AFTER INSERT ON deployment_events
                FOR EACH ROW EXECUTE FUNCTION deployment_events_notify()
                """,
                // What each placed replica holds on its device, while its deployment is in progress.
                """
                CREATE TABLE assignments (
                    deployment_id text NOT NULL REFERENCES deployments (id),
                    allocation text NOT NULL,
                    replica integer NOT NULL,
                    device_did text NOT NULL,
                    cpu_cores integer NOT NULL,
                    ram_mib bigint NOT NULL,
                    disk_mib bigint NOT NULL,
                    gpus integer NOT NULL,
                    active boolean NOT NULL DEFAULT true,
                    PRIMARY KEY (deployment_id, allocation, replica)
                )
                """,
                "CREATE INDEX assignments_active_by_device ON assignments (device_did) WHERE active",
            ]
        ),
        Migration(
            version: 3,
            name: "offers",
            statements: [
                // state: 0 pending, 1 accepted, 2 declined, 3 expired, 4 withdrawn.
                """
                CREATE TABLE offers (
                    id text PRIMARY KEY,
                    deployment_id text NOT NULL REFERENCES deployments (id),
                    allocation text NOT NULL,
                    replica integer NOT NULL,
                    device_did text NOT NULL,
                    state smallint NOT NULL DEFAULT 0,
                    record bytea NOT NULL,
                    bid bytea,
                    reason text NOT NULL DEFAULT '',
                    created_at timestamptz NOT NULL DEFAULT now(),
                    expires_at timestamptz NOT NULL
                )
                """,
                "CREATE INDEX offers_pending_by_device ON offers (device_did) WHERE state = 0",
                "CREATE INDEX offers_by_deployment ON offers (deployment_id)",
            ]
        ),
        Migration(
            version: 4,
            name: "execution",
            statements: [
                // New offer states: 5 deploying, 6 running, 7 exited, 8 failed to start, 9 stopping.
                """
                ALTER TABLE offers ADD COLUMN exit_code integer, ADD COLUMN usage bytea,
                    ADD COLUMN report text NOT NULL DEFAULT ''
                """,
                "CREATE INDEX offers_instructions_by_device ON offers (device_did) WHERE state IN (5, 9)",
                """
                CREATE TABLE allocation_logs (
                    offer_id text NOT NULL REFERENCES offers (id),
                    stream smallint NOT NULL,
                    "offset" bigint NOT NULL,
                    data bytea NOT NULL,
                    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                    PRIMARY KEY (offer_id, stream, "offset")
                )
                """,
                """
                CREATE TABLE outputs (
                    offer_id text NOT NULL REFERENCES offers (id),
                    path text NOT NULL,
                    sha256 text NOT NULL,
                    content bytea NOT NULL,
                    PRIMARY KEY (offer_id, path)
                )
                """,
            ]
        ),
        Migration(
            version: 5,
            name: "reputation outbox",
            statements: [
                // Outcomes to count on devices' reputation, written with the transition that causes them and sent
                // to the registry afterwards (at least once; the registry counts each key once).
                """
                CREATE TABLE reputation_outbox (
                    idempotency_key text PRIMARY KEY,
                    device_did text NOT NULL,
                    outcome smallint NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    sent_at timestamptz
                )
                """,
                "CREATE INDEX reputation_outbox_unsent ON reputation_outbox (created_at) WHERE sent_at IS NULL",
            ]
        ),
        Migration(
            version: 6,
            name: "contracts",
            statements: [
                // The consumer's delegation of /orrery/notary/propose to this orchestrator (a UCAN container), kept
                // with its deployment: every contract proposed for it embeds it.
                "ALTER TABLE deployments ADD COLUMN consumer_authority bytea NOT NULL DEFAULT ''::bytea",
                // The contract the notary recorded for an accepted offer.
                "ALTER TABLE offers ADD COLUMN contract_id text, ADD COLUMN contract_closed boolean NOT NULL DEFAULT false",
            ]
        ),
        Migration(
            version: 7,
            name: "settlement",
            statements: [
                // The consumer's delegation of /orrery/settlement/escrow to this orchestrator (a UCAN container).
                "ALTER TABLE deployments ADD COLUMN settlement_authority bytea NOT NULL DEFAULT ''::bytea",
                "ALTER TABLE offers ADD COLUMN escrowed boolean NOT NULL DEFAULT false",
                // What the settlement gateway still has to hear about a contract: a release per recorded receipt
                // (by its log index), a refund once the contract ended. Done when the gateway answered for good.
                """
                CREATE TABLE settlement_tasks (
                    contract_id text NOT NULL,
                    kind text NOT NULL CHECK (kind IN ('release', 'refund')),
                    receipt_entry bigint NOT NULL DEFAULT -1,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    done_at timestamptz,
                    attempts integer NOT NULL DEFAULT 0,
                    last_error text NOT NULL DEFAULT '',
                    PRIMARY KEY (contract_id, kind, receipt_entry)
                )
                """,
                "CREATE INDEX settlement_tasks_pending ON settlement_tasks (created_at) WHERE done_at IS NULL",
            ]
        ),
        Migration(
            version: 8,
            name: "actors and checkpoints",
            statements: [
                // Each replica as an actor: its did:key (kept across moves), its key sealed to this orchestrator's
                // key, and the delegation of /orrery/actor this orchestrator issued it.
                """
                CREATE TABLE actors (
                    deployment_id text NOT NULL,
                    allocation text NOT NULL,
                    replica integer NOT NULL,
                    actor_did text NOT NULL,
                    sealed_key bytea NOT NULL,
                    delegation bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (deployment_id, allocation, replica)
                )
                """,
                // Checkpoints: the signed record once every chunk arrived and matched it; chunks as they come.
                """
                CREATE TABLE checkpoints (
                    deployment_id text NOT NULL,
                    allocation text NOT NULL,
                    replica integer NOT NULL,
                    sequence bigint NOT NULL,
                    offer_id text NOT NULL,
                    device_did text NOT NULL,
                    record bytea NOT NULL,
                    size bigint NOT NULL,
                    log_index bigint NOT NULL DEFAULT 0,
                    stored_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (deployment_id, allocation, replica, sequence)
                )
                """,
                """
                CREATE TABLE checkpoint_chunks (
                    offer_id text NOT NULL,
                    sequence bigint NOT NULL,
                    index integer NOT NULL,
                    data bytea NOT NULL,
                    PRIMARY KEY (offer_id, sequence, index)
                )
                """,
            ]
        ),
        Migration(
            version: 9,
            name: "actor grants across deployments",
            statements: [
                // A consumer's delegation letting one actor message the actors of another of its deployments.
                """
                CREATE TABLE actor_grants (
                    cid text PRIMARY KEY,
                    deployment_id text NOT NULL,
                    allocation text NOT NULL,
                    replica integer NOT NULL,
                    to_deployment text NOT NULL,
                    delegation bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE INDEX actor_grants_by_sender ON actor_grants (deployment_id, allocation, replica)",
            ]
        ),
        Migration(
            version: 10,
            name: "messages relayed to agent lines held by another replica",
            statements: [
                """
                CREATE TABLE line_relay (
                    id bigserial PRIMARY KEY,
                    device_did text NOT NULL,
                    message bytea NOT NULL,
                    expires_at timestamptz NOT NULL
                )
                """,
                "CREATE INDEX line_relay_by_device ON line_relay (device_did, id)",
                "CREATE INDEX line_relay_by_expiry ON line_relay (expires_at)",
            ]
        ),
        Migration(
            version: 11,
            name: "contracts of stopped replicas end after their final receipts",
            statements: [
                // When the contract of a replica told to stop (or moved away) is terminated: once its device reported
                // the end with its final receipts recorded, or when the grace for them ran out.
                "ALTER TABLE offers ADD COLUMN terminate_after timestamptz",
                """
                CREATE INDEX offers_contracts_open ON offers (created_at)
                WHERE contract_id IS NOT NULL AND NOT contract_closed
                """,
            ]
        ),
        Migration(
            version: 12,
            name: "settlement incidents",
            statements: [
                // A release the gateway refused for its proof: held (with its contract's refund) until the operator
                // retries or forgoes it.
                """
                ALTER TABLE settlement_tasks ADD COLUMN held_at timestamptz,
                    ADD COLUMN resolution text NOT NULL DEFAULT '', ADD COLUMN resolution_note text NOT NULL DEFAULT ''
                """
            ]
        ),
        Migration(
            version: 13,
            name: "one replica instructs each device",
            statements: [
                // Which orchestrator process delivers an offer's Deploy or Stop, and when it last confirmed it: a
                // lease other replicas wait out before they take over (OfferStore.instructions).
                "ALTER TABLE offers ADD COLUMN instructed_by text, ADD COLUMN instructed_at timestamptz"
            ]
        ),
        Migration(
            version: 14,
            name: "the validated spec stored typed",
            statements: [
                // What WorkloadSpecValidator made of the spec at submit (a PlacementRequest as JSON): placement and
                // every relocation read it instead of validating the spec again. Null for deployments submitted
                // before (validated when read).
                "ALTER TABLE deployments ADD COLUMN placement_request jsonb"
            ]
        ),
        Migration(
            version: 15,
            name: "private images' pull tokens, sealed",
            statements: [
                // A consumer's short-lived pull token for an OCI allocation's image, sealed to the orchestrator's
                // own DID (SealedBox): opened only to reseal it to the device a replica is deployed to.
                """
                CREATE TABLE image_pull_tokens (
                    deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
                    allocation text NOT NULL,
                    sealed bytea NOT NULL,
                    PRIMARY KEY (deployment_id, allocation)
                )
                """
            ]
        ),
        Migration(
            version: 16,
            name: "presigned data URLs, sealed",
            statements: [
                // A consumer's presigned S3 URLs for an allocation's inputs (`in/NAME`) and its replicas' outputs
                // (`out/REPLICA/PATH`), sealed to the orchestrator's own DID as pull tokens are.
                """
                CREATE TABLE data_urls (
                    deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
                    allocation text NOT NULL,
                    name text NOT NULL,
                    sealed bytea NOT NULL,
                    PRIMARY KEY (deployment_id, allocation, name)
                )
                """,
                // An output uploaded to the consumer's bucket is recorded by where it is, its sha256 and its size.
                "ALTER TABLE outputs ADD COLUMN size bigint NOT NULL DEFAULT 0",
                "ALTER TABLE outputs ADD COLUMN location text NOT NULL DEFAULT ''",
                "UPDATE outputs SET size = length(content)",
            ]
        ),
        Migration(
            version: 17,
            name: "the content store for outputs",
            statements: [
                // An output over 3 MiB of an allocation without outputs_to, as its device streams it: how much is held
                // (chunks are appended where it ends), and whether the whole matched its sha256.
                """
                CREATE TABLE stored_outputs (
                    offer_id text NOT NULL REFERENCES offers (id) ON DELETE CASCADE,
                    path text NOT NULL,
                    consumer_did text NOT NULL,
                    size bigint NOT NULL CHECK (size > 0),
                    sha256 text NOT NULL,
                    stored bigint NOT NULL DEFAULT 0 CHECK (stored >= 0 AND stored <= size),
                    complete boolean NOT NULL DEFAULT false,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (offer_id, path)
                )
                """,
                "CREATE INDEX stored_outputs_by_consumer ON stored_outputs (consumer_did)",
                "CREATE INDEX stored_outputs_by_age ON stored_outputs (created_at)",
                """
                CREATE TABLE output_chunks (
                    offer_id text NOT NULL,
                    path text NOT NULL,
                    "offset" bigint NOT NULL,
                    data bytea NOT NULL,
                    PRIMARY KEY (offer_id, path, "offset"),
                    FOREIGN KEY (offer_id, path) REFERENCES stored_outputs (offer_id, path) ON DELETE CASCADE
                )
                """,
            ]
        ),
        Migration(
            version: 18,
            name: "content store chunks appended in one statement",
            statements: [
                // The device an output comes from, so a chunk is appended without reading its offer again.
                "ALTER TABLE stored_outputs ADD COLUMN device_did text NOT NULL DEFAULT ''",
                // Chunks are stored as they are: outputs are mostly compressed or random, and compressing 1 MiB
                // rows only to keep them as they were costs the store's CPU.
                "ALTER TABLE output_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
            ]
        ),
        Migration(
            version: 19,
            name: "checkpoint archives in the content store",
            statements: [
                // Non-zero: not a declared output but the archive of this stateful allocation's checkpoint N (over
                // 64 MiB), kept while it is one of its actor's latest two and its deployment runs.
                "ALTER TABLE stored_outputs ADD COLUMN checkpoint_sequence bigint NOT NULL DEFAULT 0"
            ]
        ),
        Migration(
            version: 20,
            name: "replica health",
            statements: [
                // The replica's health as its device last reported it (orrery.orchestrator.v1.ReplicaHealth), when
                // its spec has a check.
                "ALTER TABLE offers ADD COLUMN health bytea",
                // It stayed unhealthy through its restarts and its device stopped it: it moves to another device.
                "ALTER TABLE offers ADD COLUMN gave_up boolean NOT NULL DEFAULT false",
            ]
        ),
        Migration(
            version: 21,
            name: "agent lines by replica",
            statements: [
                // Which replica holds each device's line (its advertised gRPC address): the others relay tunnels
                // to that device through it.
                """
                CREATE TABLE agent_lines (
                    device_did text PRIMARY KEY,
                    replica_address text NOT NULL,
                    opened_at timestamptz NOT NULL DEFAULT now()
                )
                """
            ]
        ),
        Migration(
            version: 22,
            name: "agent line RTT",
            statements: [
                // The line's RTT as the replica holding it measures it (LinePing/LinePong), smoothed: the ensemble
                // path between two devices is the sum of their lines'.
                "ALTER TABLE agent_lines ADD COLUMN rtt_micros bigint"
            ]
        ),
        Migration(
            version: 23,
            name: "network grants across deployments",
            statements: [
                // A consumer's delegation letting another deployment's allocations reach its deployment on the
                // ensemble network; checked for every connection (its expiry too).
                """
                CREATE TABLE network_grants (
                    cid text PRIMARY KEY,
                    from_deployment text NOT NULL,
                    to_deployment text NOT NULL,
                    issuer_did text NOT NULL,
                    audience_did text NOT NULL,
                    expires_at timestamptz,
                    delegation bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE INDEX network_grants_by_pair ON network_grants (from_deployment, to_deployment)",
            ]
        ),
    ]
}
