public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `registry` schema. Never edit a released migration: add the next one.
public enum RegistryMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations,
        Migration(
            version: 2,
            name: "devices, change log, join challenges",
            statements: [
                """
                CREATE TABLE devices (
                    did text PRIMARY KEY,
                    owner_did text NOT NULL,
                    status text NOT NULL CHECK (status IN ('online', 'suspect', 'offline', 'left')),
                    architecture text NOT NULL,
                    cpu_cores integer NOT NULL,
                    cpu_mhz integer NOT NULL,
                    ram_bytes bigint NOT NULL,
                    disk_bytes bigint NOT NULL,
                    gpu_model text,
                    gpu_count integer NOT NULL,
                    gpu_vram_bytes bigint NOT NULL,
                    country text,
                    region text,
                    latitude double precision,
                    longitude double precision,
                    price_core_hour bigint NOT NULL,
                    price_gb_ram_hour bigint NOT NULL,
                    price_gpu_hour bigint NOT NULL,
                    price_minimum bigint NOT NULL,
                    labels jsonb NOT NULL,
                    capabilities bytea NOT NULL,
                    free_cpu_millicores integer,
                    free_ram_bytes bigint,
                    free_disk_bytes bigint,
                    free_gpus integer,
                    completed_allocations bigint NOT NULL DEFAULT 0,
                    failed_allocations bigint NOT NULL DEFAULT 0,
                    relocated_away bigint NOT NULL DEFAULT 0,
                    joined_at timestamptz NOT NULL,
                    last_heartbeat_at timestamptz NOT NULL,
                    revision bigint NOT NULL
                )
                """,
                "CREATE INDEX devices_status ON devices (status)",
                "CREATE INDEX devices_hardware ON devices (architecture, cpu_cores, ram_bytes)",
                "CREATE INDEX devices_gpu ON devices (gpu_model, gpu_count) WHERE gpu_count > 0",
                "CREATE INDEX devices_location ON devices (country, region)",
                "CREATE INDEX devices_price ON devices (price_core_hour)",
                "CREATE INDEX devices_labels ON devices USING gin (labels)",
                """
                CREATE TABLE device_changes (
                    revision bigserial PRIMARY KEY,
                    device_did text NOT NULL,
                    kind smallint NOT NULL,
                    record bytea NOT NULL,
                    changed_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                """
                CREATE FUNCTION device_changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('orrery_device_changes', NEW.revision::text);
                    RETURN NEW;
                END $$
                """,
                """
                CREATE TRIGGER device_changes_notify AFTER INSERT ON device_changes
                FOR EACH ROW EXECUTE FUNCTION device_changes_notify()
                """,
                """
                CREATE TABLE join_challenges (
                    nonce bytea PRIMARY KEY,
                    device_did text NOT NULL,
                    expires_at timestamptz NOT NULL
                )
                """,
                """
                CREATE TABLE join_results (
                    idempotency_key text PRIMARY KEY,
                    device_did text NOT NULL,
                    response bytea NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """,
            ]
        ),
        Migration(
            version: 3,
            name: "round-trip times",
            statements: [
                """
                CREATE TABLE rtt_samples (
                    device_did text NOT NULL,
                    landmark text NOT NULL,
                    rtt_ms double precision NOT NULL,
                    measured_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (device_did, landmark)
                )
                """
            ]
        ),
        Migration(
            version: 4,
            name: "recorded outcomes",
            statements: [
                """
                CREATE TABLE recorded_outcomes (
                    idempotency_key text PRIMARY KEY,
                    device_did text NOT NULL,
                    outcome smallint NOT NULL,
                    recorded_at timestamptz NOT NULL DEFAULT now()
                )
                """
            ]
        ),
    ]
}
