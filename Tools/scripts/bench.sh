#!/usr/bin/env bash
# `make bench`: release builds, then each benchmark; results in bench-results/. Speed is measured here, never in tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# The ingress benchmark holds 1,000 connections open through several processes.
ulimit -n 65536 2>/dev/null || true
"$root/Tools/scripts/install-deps.sh"
# shellcheck source=Tools/scripts/release-flags.sh
source "$root/Tools/scripts/release-flags.sh"
prepare_release_scratch .build-release
scratch=(--scratch-path .build-release "${release_flags[@]}")
for product in orrery-bench orrery-fleet registry orchestrator contract-notary settlement-gateway device-agent orrery; do swift build "${scratch[@]}" --product "$product"; done
bin=$(swift build "${scratch[@]}" --show-bin-path)
mkdir -p bench-results
# ORRERY_BENCH_ONLY="settlement notary" runs only those measurements (services they need still start).
# ORRERY_BENCH_SETTLEMENT_CONTRACTS (default 6000, a third per measurement): more gives longer, steadier windows.
want() { [ -z "${ORRERY_BENCH_ONLY:-}" ] || [[ " $ORRERY_BENCH_ONLY " == *" $1 "* ]]; }

echo "== identity"
[ -n "${ORRERY_BENCH_SKIP_IDENTITY:-}" ] || ! want identity || "$bin/orrery-bench" identity --out bench-results/identity.md

echo "== abuse (CPU per refusal before authentication)"
! want abuse || "$bin/orrery-bench" abuse --out bench-results/abuse.md

echo "== images (a ~100 MiB image from a registry on loopback; skopeo + umoci beside)"
if want images; then
    "$root/Tools/scripts/install-deps.sh" --test-venv
    images_work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-bench-images.XXXXXX")
    chmod 711 "$images_work"  # a container's root (another uid) passes through to its image
    "$root/.venv-test/bin/python" "$root/Tests/python/oci_registry.py" serve "$images_work/registry" token \
        >"$images_work/registry.out" 2>&1 &
    images_registry=$!
    until [ -s "$images_work/registry/ready.json" ]; do
        kill -0 "$images_registry" 2>/dev/null || { cat "$images_work/registry.out" >&2; exit 1; }
        sleep 0.2
    done
    "$root/.venv-test/bin/python" "$root/Tests/python/oci_registry.py" push "$images_work/registry" big:96 public/big:v1 >/dev/null
    images_address=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$images_work/registry/ready.json")
    "$bin/orrery-bench" images --registry "$images_address" --ca "$images_work/registry/registry.crt" \
        --user reader --password read-secret-2 --image public/big:v1 --work "$images_work/work" \
        --out bench-results/images.md || { kill "$images_registry"; exit 1; }
    kill "$images_registry"
    wait "$images_registry" 2>/dev/null || true
    rm -rf "$images_work"
fi

echo "== outputs (a 256 MiB output to an S3-compatible store on loopback; boto3 beside)"
if want outputs; then
    outputs_work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-bench-outputs.XXXXXX")
    "$root/.venv-test/bin/python" "$root/Tests/python/s3_server.py" serve "$outputs_work/s3" \
        >"$outputs_work/s3.out" 2>&1 &
    outputs_server=$!
    until grep -q '^READY ' "$outputs_work/s3.out" 2>/dev/null; do
        kill -0 "$outputs_server" 2>/dev/null || { cat "$outputs_work/s3.out" >&2; exit 1; }
        sleep 0.2
    done
    outputs_ready=$(sed -n 's/^READY //p' "$outputs_work/s3.out")
    field() { python3 -c "import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$outputs_ready" "$1"; }
    "$bin/orrery-bench" outputs --endpoint "$(field endpoint)" --access-key "$(field access_key)" \
        --secret-key "$(field secret_key)" --region "$(field region)" --python "$root/.venv-test/bin/python" \
        --script "$root/Tests/python/s3_server.py" --work "$outputs_work/work" --out bench-results/outputs.md \
        || { kill "$outputs_server"; exit 1; }
    kill "$outputs_server"
    wait "$outputs_server" 2>/dev/null || true
    rm -rf "$outputs_work"
fi

echo "== placement (10,000 devices, pure solver)"
! want placement || "$bin/orrery-bench" placement --out bench-results/placement.md

echo "== fleet (orrery-fleet's simulated devices: the registry at 100,000, the orchestrator at 10,000, a mass event)"
! want fleet || "$root/Tools/scripts/bench-fleet.sh" "$bin"

echo "== registry (10,000 devices)"
work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-bench.XXXXXX")
chmod 755 "$work"  # the postgres user must reach the cluster inside
registry_pid=""
extra_pids=()
cleanup() {
    for pid in "${extra_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    "$root/Tools/scripts/pg-throwaway.sh" stop "$work/pg" || true
    cp "$work/registry.log" bench-results/registry-server.log 2>/dev/null || true
    # ORRERY_BENCH_KEEP=1 keeps the services' logs and state for a look after.
    if [ "${ORRERY_BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# fsync stays on: these numbers are about real durability.
"$root/Tools/scripts/pg-throwaway.sh" start "$work/pg" >/dev/null
# shellcheck disable=SC1091
. "$work/pg/env"
export PGPASSWORD=$ORRERY_PG_PASSWORD  # psql and pgbench log in as orrery with its password
psql -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -d orrery -q -c "CREATE TABLE pgbench_rows (id bigserial PRIMARY KEY, device text, at timestamptz DEFAULT now())"
echo "INSERT INTO pgbench_rows (device) VALUES ('did:key:z6Mk');" >"$work/insert.sql"
tps=$("$ORRERY_PG_BIN/pgbench" -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -n -c 8 -j 2 -T 10 -f "$work/insert.sql" orrery \
    | awk '/^tps/ {printf "%.0f", $3; exit}')
echo "{}" >"$work/empty.json"
"$bin/orrery" operator init "$work/credentials" >/dev/null
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD ORRERY_DB_DATABASE=orrery \
    "$bin/registry" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/registry/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --ready-file "$work/registry.json" >"$work/registry.log" 2>&1 &
registry_pid=$!
until [ -s "$work/registry.json" ]; do
    kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
    sleep 0.1
done
port=$(python3 -c "import json; print(json.load(open('$work/registry.json'))['grpc_port'])")
! want registry || "$bin/orrery-bench" registry --registry "127.0.0.1:$port" --operator-key "$work/credentials/operator.key" \
    --devices "${ORRERY_BENCH_DEVICES:-10000}" --pgbench-tps "$tps" --out bench-results/registry.md

wait_ready() {  # file pid log
    until [ -s "$1" ]; do kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }; sleep 0.1; done
}

# Starts a device agent on STATE, its owner OWNER_KEY (delegated by OWNER_UCAN), at PRICE per core-hour, its line to
# the orchestrator at ORCHESTRATOR_PORT, and joins it through the registry at REGISTRY_PORT; further arguments go to
# the agent. Sets agent_did and agent_pid (called without a subshell, so that its pid stays in extra_pids).
start_agent() {  # state owner_key owner_ucan price orchestrator_port registry_port agent-arguments…
    local state=$1 owner_key=$2 owner_ucan=$3 price=$4 line_to=$5 registry_port=$6
    shift 6
    agent_did=$("$bin/device-agent" id --state-dir "$state")
    "$bin/orrery" ucan delegate --key "$owner_key" --to "$agent_did" --cmd /orrery/registry --exp 1h \
        --proof "$owner_ucan" >"$state.ucan"
    echo "{\"owner\": {\"prices\": {\"per_core_hour\": $price}}, \"orchestrators\": [\"127.0.0.1:$line_to\"]}" >"$state.json"
    "$bin/device-agent" --state-dir "$state" --config "$state.json" --grpc-port 0 --http-port 0 --log-level warning \
        --ready-file "$state.ready" "$@" >"$state.log" 2>&1 &
    agent_pid=$!
    extra_pids+=("$agent_pid")
    wait_ready "$state.ready" "$agent_pid" "$state.log"
    "$bin/device-agent" join --registry "127.0.0.1:$registry_port" --token "$state.ucan" --state-dir "$state" \
        --config "$state.json" >/dev/null
}

echo "== contract notary (PostgreSQL fsync on)"
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD ORRERY_DB_DATABASE=orrery \
    "$bin/contract-notary" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/contract-notary/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --identity-delegation "$work/credentials/contract-notary/delegation.ucan" --ready-file "$work/notary.json" \
    >"$work/notary.log" 2>&1 &
extra_pids+=($!)
wait_ready "$work/notary.json" "$!" "$work/notary.log"
notary_port=$(python3 -c "import json; print(json.load(open('$work/notary.json'))['grpc_port'])")
want notary && rm -f bench-results/notary.md && "$bin/orrery-bench" notary --notary "127.0.0.1:$notary_port" --key "$work/credentials/operator.key" \
    --out bench-results/notary.md

echo "== settlement gateway (escrow + release, releases proven by the notary above)"
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD ORRERY_DB_DATABASE=orrery \
    "$bin/settlement-gateway" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/settlement-gateway/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --identity-delegation "$work/credentials/settlement-gateway/delegation.ucan" \
    --notary-did "$("$bin/orrery" key show "$work/credentials/contract-notary/service.key")" \
    --ready-file "$work/settlement.json" >"$work/settlement.log" 2>&1 &
extra_pids+=($!)
wait_ready "$work/settlement.json" "$!" "$work/settlement.log"
settlement_port=$(python3 -c "import json; print(json.load(open('$work/settlement.json'))['grpc_port'])")
want settlement && rm -f bench-results/settlement.md && "$bin/orrery-bench" settlement --notary "127.0.0.1:$notary_port" --settlement "127.0.0.1:$settlement_port" \
    --key "$work/credentials/operator.key" --pgbench-tps "$tps" --out bench-results/settlement.md \
    --contracts "${ORRERY_BENCH_SETTLEMENT_CONTRACTS:-6000}"
want settlement && "$bin/orrery-bench" chain-signing --out bench-results/settlement.md

echo "== device agent"
! want agent || "$bin/orrery-bench" agent --binary "$bin/device-agent" --out bench-results/registry.md

if want actors; then
    echo "== actors (their own constellation on a second database: heartbeats every second)"
    psql -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -d orrery -q -c "CREATE DATABASE orrery_actors"
    actors_db=(env ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT="$ORRERY_PG_PORT" ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD="$ORRERY_PG_PASSWORD" ORRERY_DB_DATABASE=orrery_actors)
    operator_did=$(cat "$work/credentials/operator.did")
    service() {  # name binary ready-name extra-arguments… (its gRPC port in $port_of_service)
        local name=$1 binary=$2 ready="$work/actors-$3.json"
        shift 3
        "${actors_db[@]}" "$bin/$binary" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
            --identity-key "$work/credentials/$name/service.key" --trust-operator "$operator_did" "$@" \
            --ready-file "$ready" >"$ready.log" 2>&1 &
        extra_pids+=($!)
        wait_ready "$ready" "$!" "$ready.log"
        port_of_service=$(python3 -c "import json; print(json.load(open('$ready'))['grpc_port'])")
    }
    service registry registry registry --liveness-interval-ms 1000
    a_registry=$port_of_service
    service contract-notary contract-notary notary --identity-delegation "$work/credentials/contract-notary/delegation.ucan"
    a_notary=$port_of_service
    service orchestrator orchestrator orchestrator --identity-delegation "$work/credentials/orchestrator/delegation.ucan" \
        --registry-address "127.0.0.1:$a_registry" --notary-address "127.0.0.1:$a_notary"
    a_orchestrator=$port_of_service
    # A second replica on the same database: the fourth agent's line is held there, so its mail is relayed.
    service orchestrator orchestrator orchestrator2 --identity-delegation "$work/credentials/orchestrator/delegation.ucan" \
        --registry-address "127.0.0.1:$a_registry" --notary-address "127.0.0.1:$a_notary"
    a_orchestrator2=$port_of_service
    "$bin/orrery" key new "$work/actors-owner.key" >/dev/null
    "$bin/orrery" ucan delegate --key "$work/credentials/operator.key" \
        --to "$("$bin/orrery" key show "$work/actors-owner.key")" --cmd /orrery/registry --exp 1h >"$work/actors-owner.ucan"
    actor_devices=()
    for agent in 1 2 3 4; do
        line_to=$a_orchestrator
        if [ "$agent" = 4 ]; then line_to=$a_orchestrator2; fi  # the fourth agent's line: the second replica
        start_agent "$work/actors-agent$agent" "$work/actors-owner.key" "$work/actors-owner.ucan" $((agent * 10)) \
            "$line_to" "$a_registry" --liveness-interval-ms 1000
        if [ "$agent" = 4 ]; then actor_devices+=(--far-device "$agent_did"); else actor_devices+=(--device "$agent_did"); fi
        if [ "$agent" = 1 ]; then doomed_agent_pid=$agent_pid; fi
    done
    sleep 3  # the orchestrators see all four online
    "$bin/orrery-bench" actors --orchestrator "127.0.0.1:$a_orchestrator" --key "$work/credentials/operator.key" \
        "${actor_devices[@]}" --kill-pid "$doomed_agent_pid" --kill-state "$work/actors-agent1" --liveness-ms 1000 \
        --out bench-results/actors.md
fi

want deploy || want outputs || want services || exit 0
echo "== submit → running (an orchestrator and 3 real agents on this registry)"
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD ORRERY_DB_DATABASE=orrery \
    "$bin/orchestrator" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/orchestrator/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --identity-delegation "$work/credentials/orchestrator/delegation.ucan" --registry-address "127.0.0.1:$port" --notary-address "127.0.0.1:$notary_port" --ready-file "$work/orchestrator.json" \
    --ingress-host 127.0.0.1 --ingress-port 0 --ingress-domain bench.localhost --ingress-connections-per-deployment 4096 \
    --ingress-connections-per-client 4096 --ingress-requests-per-second 100000 >"$work/orchestrator.log" 2>&1 &
extra_pids+=($!)
wait_ready "$work/orchestrator.json" "$!" "$work/orchestrator.log"
orchestrator_port=$(python3 -c "import json; print(json.load(open('$work/orchestrator.json'))['grpc_port'])")
"$bin/orrery" key new "$work/owner.key" >/dev/null
owner_did=$("$bin/orrery" key show "$work/owner.key")
"$bin/orrery" ucan delegate --key "$work/credentials/operator.key" --to "$owner_did" --cmd /orrery/registry --exp 1h \
    >"$work/owner.ucan"
service_agent_pids=()
service_devices=()  # web on the first, probe on the second: the ensemble network's path between two agents
for agent in 1 2 3; do
    start_agent "$work/agent$agent" "$work/owner.key" "$work/owner.ucan" $((agent * 10)) "$orchestrator_port" "$port"
    if [ "$agent" = 1 ]; then first_agent_pid=$agent_pid; fi
    service_agent_pids+=(--agent-pid "$agent_pid")
    service_devices+=(--device "$agent_did")
done
! want deploy || "$bin/orrery-bench" deploy --orchestrator "127.0.0.1:$orchestrator_port" \
    --key "$work/credentials/operator.key" --allowed-provider "$owner_did" --out bench-results/placement.md

if want outputs; then
    echo "== a 1 GiB output into the orchestrator's content store (the agents above)"
    "$bin/orrery-bench" content-store --orchestrator "127.0.0.1:$orchestrator_port" \
        --key "$work/credentials/operator.key" --allowed-provider "$owner_did" --out bench-results/outputs.md
fi

if want services; then
    echo "== port-forward: throughput and latency through the agent's line (the agents above)"
    rm -f bench-results/services.md
    "$bin/orrery-bench" port-forward --orchestrator "127.0.0.1:$orchestrator_port" \
        --key "$work/credentials/operator.key" --cli "$bin/orrery" --allowed-provider "$owner_did" \
        --out bench-results/services.md
    echo "== ingress and the ensemble network: throughput, latency, 1,000 idle connections (the agents above)"
    "$bin/orrery-bench" ingress --orchestrator "127.0.0.1:$orchestrator_port" \
        --key "$work/credentials/operator.key" --allowed-provider "$owner_did" "${service_agent_pids[@]}" \
        "${service_devices[@]:0:4}" --out bench-results/services.md
fi

want deploy || exit 0
echo "== a joined agent's memory (right after the deployments above)"
busy=$(awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$first_agent_pid/status")
printf '\n| joined device agent (heartbeating, agent channel open), right after running its share of the deployments above (goal ≤ 35 MiB) | %s |\n' \
    "$busy" | tee -a bench-results/registry.md
