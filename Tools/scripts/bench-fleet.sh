#!/usr/bin/env bash
# The fleet benchmarks (`make bench`, or `ORRERY_BENCH_ONLY=fleet make bench` for these alone): orrery-fleet's
# simulated devices against release services on a PostgreSQL of their own, fsync on. Results: bench-results/fleet.md.
#   1. the registry alone with ORRERY_BENCH_FLEET_REGISTRY_DEVICES devices (default 100,000) heartbeating every 5 s
#      for ORRERY_BENCH_FLEET_REGISTRY_SECONDS (default 600): join time, false suspects, heartbeats/s, memory;
#   2. registry, notary, settlement gateway and orchestrator with ORRERY_BENCH_FLEET_DEVICES devices (default 10,000)
#      on agent lines: a mass event first — 200 services run, 10 % of the devices go silent at once and come back
#      90 s later: how fast their services run elsewhere, and whether any moves twice; then deployments at
#      ORRERY_BENCH_FLEET_RATES per second (default 5,10,20,40,100), 60 s each, and an 8-allocation ensemble's
#      placement time.
# Usage: bench-fleet.sh BIN_DIR (the release binaries). ORRERY_BENCH_FLEET_KEEP=1 keeps the logs and reports;
# ORRERY_BENCH_FLEET_ORCHESTRATOR_LOG=info makes the orchestrator's log say each step.
set -euo pipefail
bin=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
registry_devices=${ORRERY_BENCH_FLEET_REGISTRY_DEVICES:-100000}
registry_seconds=${ORRERY_BENCH_FLEET_REGISTRY_SECONDS:-600}
devices=${ORRERY_BENCH_FLEET_DEVICES:-10000}
rates=${ORRERY_BENCH_FLEET_RATES:-5,10,20,40,100}
out=bench-results/fleet.md
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-bench-fleet.XXXXXX")
chmod 755 "$work"  # the postgres user must reach the cluster inside
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$root/Tools/scripts/pg-throwaway.sh" stop "$work/pg" >/dev/null || true
    if [ -n "${ORRERY_BENCH_FLEET_KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
"$root/Tools/scripts/pg-throwaway.sh" start "$work/pg" >/dev/null
# shellcheck disable=SC1091
. "$work/pg/env"
export PGPASSWORD=$ORRERY_PG_PASSWORD
psql -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -d orrery -q -c "CREATE TABLE pgbench_rows (id bigserial PRIMARY KEY, device text, at timestamptz DEFAULT now())"
echo "INSERT INTO pgbench_rows (device) VALUES ('did:key:z6Mk');" >"$work/insert.sql"
tps=$("$ORRERY_PG_BIN/pgbench" -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -n -c 8 -j 2 -T 10 -f "$work/insert.sql" orrery \
    | awk '/^tps/ {printf "%.0f", $3; exit}')
echo "{}" >"$work/empty.json"
"$bin/orrery" operator init "$work/credentials" >/dev/null
operator_did=$(cat "$work/credentials/operator.did")
database=(env ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT="$ORRERY_PG_PORT" ORRERY_DB_USER=orrery
    ORRERY_DB_PASSWORD="$ORRERY_PG_PASSWORD" ORRERY_DB_DATABASE=orrery)

service() {  # name binary extra-arguments… → its gRPC port in $port_of_service, its pid in $pid_of_service
    local name=$1 binary=$2 ready="$work/$1.json"
    shift 2
    "${database[@]}" "$bin/$binary" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
        --identity-key "$work/credentials/$name/service.key" --trust-operator "$operator_did" "$@" \
        --ready-file "$ready" >"$work/$name.log" 2>&1 &
    pid_of_service=$!
    pids+=("$pid_of_service")
    until [ -s "$ready" ]; do
        kill -0 "$pid_of_service" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    port_of_service=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['grpc_port'])" "$ready")
}
rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }
field() {  # json-file python-expression-on-r
    python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1"
}

service registry registry --liveness-interval-ms 5000
registry_port=$port_of_service
registry_pid=$pid_of_service

{
    echo "# Fleet benchmarks"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores: release services and \`orrery-fleet\` (simulated devices on the"
    echo "real protocols, one process) on this machine, PostgreSQL 15 with fsync on (pgbench single-row INSERT, 8 clients:"
    echo "$tps/s), authorisation on for every call."
} >"$out"

echo "== fleet 1: the registry with $registry_devices devices, heartbeats every 5 s, for $registry_seconds s"
"$bin/orrery-fleet" --registry "127.0.0.1:$registry_port" --operator-key "$work/credentials/operator.key" \
    --devices "$registry_devices" --seed 1 --join always --heartbeat-interval 5 --duration "$registry_seconds" \
    --report "$work/registry-fleet.json" --status-every 30 &
fleet_pid=$!
pids+=("$fleet_pid")
wait "$fleet_pid"
r="$work/registry-fleet.json"
{
    echo
    echo "## Registry: $registry_devices devices, each on its own heartbeat stream (5 s)"
    echo
    echo "| measurement | result |"
    echo "|---|---|"
    echo "| join (challenge, countersignature, a chain of 2; 64 at once) | $(field "$r" "'%.0f s (%.0f/s)' % (r['join_seconds'], r['devices'] / r['join_seconds'])") |"
    echo "| heartbeats received over the run | $(field "$r" "'%.0f/s' % r['heartbeats_per_second']") |"
    echo "| false \`suspect\` / \`offline\` over the $registry_seconds s after every device was live | $(field "$r" "'%d / %d' % (r['liveness']['false_suspects'], r['liveness']['false_offline'])") |"
    echo "| heartbeat streams that failed and were reopened | $(field "$r" "r['counters']['heartbeat_stream_failures']") |"
    echo "| registry RSS at the end (peak) | $(rss "$registry_pid") ($(hwm "$registry_pid")) |"
    echo "| orrery-fleet peak RSS ($(field "$r" "r['connections']['registry']") connections) | $(field "$r" "'%.0f MiB' % (r['peak_rss_bytes'] / 1048576)") |"
    echo
    echo "Goal: no false \`suspect\` for 10 minutes; a joined fleet is reused with the same \`--seed\` (\`--join missing\`)."
} | tee -a "$out"

echo "== notary, settlement gateway, orchestrator; $devices devices on agent lines"
service contract-notary contract-notary --identity-delegation "$work/credentials/contract-notary/delegation.ucan" \
    --registry-address "127.0.0.1:$registry_port" \
    --settlement-did "$("$bin/orrery" key show "$work/credentials/settlement-gateway/service.key")"
notary_port=$port_of_service
service settlement-gateway settlement-gateway --identity-delegation "$work/credentials/settlement-gateway/delegation.ucan" \
    --notary-address "127.0.0.1:$notary_port" \
    --notary-did "$("$bin/orrery" key show "$work/credentials/contract-notary/service.key")"
settlement_port=$port_of_service
service orchestrator orchestrator --identity-delegation "$work/credentials/orchestrator/delegation.ucan" \
    --registry-address "127.0.0.1:$registry_port" --notary-address "127.0.0.1:$notary_port" \
    --settlement-address "127.0.0.1:$settlement_port" ${ORRERY_BENCH_FLEET_ORCHESTRATOR_LOG:+--log-level "$ORRERY_BENCH_FLEET_ORCHESTRATOR_LOG"}
orchestrator_port=$port_of_service
orchestrator_pid=$pid_of_service
"$bin/orrery" deposit "$operator_did" 1000000000000 --reference "fleet benchmark credit" --idempotency-key fleet-credit \
    --settlement "127.0.0.1:$settlement_port" --key "$work/credentials/operator.key" >/dev/null
# Another seed: these devices are not the registry benchmark's (those stay offline).
"$bin/orrery-fleet" --registry "127.0.0.1:$registry_port" --orchestrator "127.0.0.1:$orchestrator_port" \
    --operator-key "$work/credentials/operator.key" --devices "$devices" --seed 2 --join always --heartbeat-interval 5 \
    --partitioned 0.1 --partition-seconds 90 --ready-file "$work/fleet-ready.json" --report "$work/fleet.json" \
    --status-every 30 &
fleet_pid=$!
pids+=("$fleet_pid")
until [ -s "$work/fleet-ready.json" ]; do kill -0 "$fleet_pid" || exit 1; sleep 1; done
sleep 10  # the orchestrator's view of the registry catches up with the last joins
echo "== fleet 2: mass event — 200 services, 10 % of the devices silent at once, back after 90 s"
"$bin/orrery-bench" fleet-load --orchestrator "127.0.0.1:$orchestrator_port" --key "$work/credentials/operator.key" \
    --devices "$devices" --rates "" --ensembles 0 --services 200 --services-file "$work/services.txt" --out "$out"
kill -USR1 "$fleet_pid"
sleep 150  # 3¼ intervals + 30 s is 46 s; then the partitioned devices return (90 s) and are heard

echo "== fleet 3: deployments at fixed rates over the same fleet"
{
    echo
    echo "## Orchestrator: $devices devices, notary and settlement gateway in the loop"
    echo
    echo "Each deployment: placement, an offer with its contract, the device's signed bid and acceptance, the contract"
    echo "logged, its cost escrowed, the Deploy, the device's running report (its job then runs 30 s, its receipts"
    echo "recorded, the escrow released). Measured after the mass event below, with its 200 services still running."
} | tee -a "$out"
"$bin/orrery-bench" fleet-load --orchestrator "127.0.0.1:$orchestrator_port" --key "$work/credentials/operator.key" \
    --devices "$devices" --rates "$rates" --seconds 60 --job-seconds 30 --ensembles 100 --out "$out"
echo "| orchestrator RSS after the rates above (peak) | $(rss "$orchestrator_pid") ($(hwm "$orchestrator_pid")) |" | tee -a "$out"
kill -TERM "$fleet_pid"
wait "$fleet_pid" || true
f="$work/fleet.json"
{
    echo
    echo "## Mass event: 10 % of $devices devices silent at once (partitioned, back after 90 s)"
    echo
    echo "| measurement | result |"
    echo "|---|---|"
    echo "| services running on the silenced devices | $(field "$f" "r['mass_event']['replicas_running_on_them']") |"
    echo "| running elsewhere (Deploy on another device) after the silence: p50 / p99 / max | $(field "$f" "'%.1f s / %.1f s / %.1f s' % (r['mass_event']['move_seconds_p50'], r['mass_event']['move_seconds_p99'], r['mass_event']['move_seconds_max'])") |"
    echo "| not moved / moved a second time (after their devices came back) | $(field "$f" "'%d / %d' % (r['mass_event']['not_moved'], r['mass_event']['second_moves'])") |"
    echo "| the registry saw the silenced devices suspect / offline after (p50) | $(field "$f" "'%.1f s / %.1f s' % (r['liveness']['seconds_to_suspect'].get('p50', 0), r['liveness']['seconds_to_offline'].get('p50', 0))") |"
    echo "| false \`suspect\` among the others | $(field "$f" "r['liveness']['false_suspects']") |"
    echo
    echo "Goal: within 3¼ heartbeat intervals + 30 s (46 s at 5 s); no second move."
} | tee -a "$out"
