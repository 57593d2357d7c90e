#!/usr/bin/env bash
# `make run`: the whole constellation on this machine — a PostgreSQL of its own under .run/, the six services and
# one demo device agent — until Ctrl-C, which stops everything, PostgreSQL included. Everything under .run/ is kept
# from one run to the next (the database, the credentials, the demo device's state); `make run-reset` starts over.
# ORRERY_RUN_DIR: another directory than .run/; ORRERY_RUN_BIN: prebuilt executables there (nothing is installed or
# built); ORRERY_RUN_PORT_BASE: gRPC on base+1…base+6, HTTP on base+2001…base+2006 (default 7400);
# ORRERY_RUN_DB_ENV: a file of ORRERY_DB_* assignments for a database that runs already (make run-ha's), used instead
# of a PostgreSQL of its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -n "${ORRERY_RUN_BIN:-}" ]; then
    bin=$ORRERY_RUN_BIN
else
    "$root/Tools/scripts/install-deps.sh"
    echo "== building"
    swift build
    bin=$(swift build --show-bin-path)
fi

run_dir=${ORRERY_RUN_DIR:-$root/.run}
shown=${run_dir#"$root/"}  # how the hints below name it
mkdir -p "$run_dir"
pids=()
stop_all() {
    trap - INT TERM EXIT
    echo
    echo "== stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${ORRERY_RUN_DB_ENV:-}" ] || "$root/Tools/scripts/pg-throwaway.sh" stop "$run_dir/pg"
    echo "stopped (logs in $run_dir/logs; everything is kept for the next make run, make run-reset starts over)"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

if [ -n "${ORRERY_RUN_DB_ENV:-}" ]; then
    # shellcheck disable=SC1090
    . "$ORRERY_RUN_DB_ENV"
    export ORRERY_DB_HOST ORRERY_DB_PORT ORRERY_DB_USER ORRERY_DB_DATABASE ORRERY_DB_PASSWORD
    ORRERY_PG_PORT=$ORRERY_DB_PORT
else
    "$root/Tools/scripts/pg-throwaway.sh" resume "$run_dir/pg"
    # shellcheck disable=SC1091
    . "$run_dir/pg/env"
    export ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_DATABASE=orrery
    export ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD
fi
export ORRERY_LOG_FORMAT=json

# Identities: the operator, a key and a delegation per service (kept across runs).
"$bin/orrery" operator init "$run_dir/credentials" >/dev/null
operator_did=$(cat "$run_dir/credentials/operator.did")

mkdir -p "$run_dir/logs" "$run_dir/ready" "$run_dir/config"
rm -f "$run_dir"/ready/*.json
base=${ORRERY_RUN_PORT_BASE:-7400}
services=(identity registry orchestrator contract-notary settlement-gateway device-agent)
offset=1
for service in "${services[@]}"; do
    echo "{}" >"$run_dir/config/$service.json"
    # The demo device: its owner's prices and place, and the orchestrator whose offers it answers.
    [ "$service" = device-agent ] && cat >"$run_dir/config/$service.json" <<JSON
{"owner": {"location": {"country": "DE", "region": "Berlin", "latitude": 52.52, "longitude": 13.40},
           "prices": {"per_core_hour": 100, "per_gb_ram_hour": 10, "minimum_per_job": 10},
           "labels": {"tier": "demo"}},
 "orchestrators": ["127.0.0.1:$((base + 3))"],
 "landmarks": ["127.0.0.1:$((base + 2))", "127.0.0.1:$((base + 3))"]}
JSON
    # The agent reads no operator settings: it holds its own key and joins with its owner's delegation.
    if [ "$service" = device-agent ]; then
        extra=(--state-dir "$run_dir/device-agent")
    else
        extra=(--trust-operator "$operator_did" --identity-key "$run_dir/credentials/$service/service.key"
               --identity-delegation "$run_dir/credentials/$service/delegation.ucan")
    fi
    # The agent follows revocations once it holds a delegation (it joins with its owner's, in the registry issue).
    case "$service" in
        identity) extra+=(--operator-key "$run_dir/credentials/operator.key") ;;  # issues onboarding delegations
        device-agent) ;;
        orchestrator) extra+=(--identity-address "127.0.0.1:$((base + 1))" --registry-address "127.0.0.1:$((base + 2))"
                              --notary-address "127.0.0.1:$((base + 4))" --settlement-address "127.0.0.1:$((base + 5))"
                              --ingress-host 127.0.0.1 --ingress-port "$((base + 80))" --ingress-domain orrery.localhost) ;;
        contract-notary) extra+=(--identity-address "127.0.0.1:$((base + 1))" --registry-address "127.0.0.1:$((base + 2))"
                                 --settlement-did "$("$bin/orrery" key show "$run_dir/credentials/settlement-gateway/service.key")") ;;
        settlement-gateway) extra+=(--identity-address "127.0.0.1:$((base + 1))" --notary-address "127.0.0.1:$((base + 4))"
                                    --notary-did "$("$bin/orrery" key show "$run_dir/credentials/contract-notary/service.key")") ;;
        *) extra+=(--identity-address "127.0.0.1:$((base + 1))") ;;
    esac
    "$bin/$service" --config "$run_dir/config/$service.json" \
        --grpc-port $((base + offset)) --http-port $((base + 2000 + offset)) \
        --ready-file "$run_dir/ready/$service.json" "${extra[@]}" >"$run_dir/logs/$service.log" 2>&1 &
    pids+=($!)
    offset=$((offset + 1))
    # The identity service first: the others follow its revocation log.
    if [ "$service" = identity ]; then
        until [ -s "$run_dir/ready/identity.json" ]; do
            kill -0 "${pids[0]}" 2>/dev/null || { cat "$run_dir/logs/identity.log" >&2; exit 1; }
            sleep 0.1
        done
    fi
done

for i in "${!services[@]}"; do
    service=${services[$i]}
    until [ -s "$run_dir/ready/$service.json" ]; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "$service failed to start; its log:" >&2
            cat "$run_dir/logs/$service.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

# The demo device joins: operator → demo owner → device, the way a real owner onboards a machine.
credentials="$run_dir/credentials"
[ -f "$credentials/demo-owner.key" ] || "$bin/orrery" key new "$credentials/demo-owner.key" >/dev/null
device_did=$("$bin/device-agent" id --state-dir "$run_dir/device-agent")
"$bin/orrery" ucan delegate --key "$credentials/operator.key" --to "$("$bin/orrery" key show "$credentials/demo-owner.key")" \
    --cmd /orrery/registry --exp 30d >"$credentials/demo-owner.ucan"
"$bin/orrery" ucan delegate --key "$credentials/demo-owner.key" --to "$device_did" --cmd /orrery/registry --exp 30d \
    --proof "$credentials/demo-owner.ucan" >"$credentials/demo-device.ucan"
"$bin/device-agent" join --registry "127.0.0.1:$((base + 2))" --token "$credentials/demo-device.ucan" \
    --state-dir "$run_dir/device-agent" --config "$run_dir/config/device-agent.json" >/dev/null

# The demo consumer (the operator) gets NTX to pay for its deployments (ledger mode: no chain is configured).
"$bin/orrery" deposit "$operator_did" 1000000000 --reference "make run demo credit" --idempotency-key demo-credit \
    --settlement "127.0.0.1:$((base + 5))" --key "$credentials/operator.key" >/dev/null

echo
echo "Orrery is running (PostgreSQL on 127.0.0.1:$ORRERY_PG_PORT, logs in $run_dir/logs):"
printf '  %-20s %-18s %-18s %s\n' SERVICE GRPC "HTTP (/metrics)" DID
for service in "${services[@]}"; do
    python3 - "$run_dir/ready/$service.json" <<'PY'
import json, sys
ready = json.load(open(sys.argv[1]))
print(f"  {ready['service']:<20} {ready['grpc']:<18} {ready['http']:<18} {ready['did']}")
PY
done
echo
echo "Try:"
echo "  $bin/orrery info 127.0.0.1:$((base + 2))          # the registry's Info (found through reflection)"
echo "  $bin/orrery health 127.0.0.1:$((base + 3))        # the orchestrator's gRPC health"
echo "  curl -s http://127.0.0.1:$((base + 2002))/metrics  # Prometheus metrics of the registry"
echo "  $bin/orrery revocations --identity 127.0.0.1:$((base + 1)) --key $shown/credentials/operator.key   # an authorised call"
echo "  $bin/orrery devices --registry 127.0.0.1:$((base + 2)) --key $shown/credentials/operator.key   # the demo device, joined and live"
echo "  $bin/orrery run Deploy/examples/cpu-batch.yaml --orchestrator 127.0.0.1:$((base + 3)) --key $shown/credentials/operator.key"
echo "  $bin/orrery logs ID --orchestrator 127.0.0.1:$((base + 3)) --key $shown/credentials/operator.key   # ID from orrery run"
echo "  $bin/orrery run Deploy/examples/web-app.yaml --orchestrator 127.0.0.1:$((base + 3)) --key $shown/credentials/operator.key   # then curl the URL orrery status shows"
echo "  (the ingress serves exposed ports as http://<label>.orrery.localhost:$((base + 80))/)"
echo "  $bin/orrery outputs ID --to out --orchestrator 127.0.0.1:$((base + 3)) --key $shown/credentials/operator.key"
echo "  $bin/orrery contract show CTR --notary 127.0.0.1:$((base + 4)) --key $shown/credentials/operator.key   # CTR from orrery status"
echo "  $bin/orrery ledger verify --notary 127.0.0.1:$((base + 4)) --key $shown/credentials/operator.key   # audit the contract log"
echo "  $bin/orrery balance --settlement 127.0.0.1:$((base + 5)) --key $shown/credentials/operator.key   # NTX held and paid"
echo "  $bin/orrery statement --settlement 127.0.0.1:$((base + 5)) --key $shown/credentials/operator.key"
echo "  (the operator is $operator_did; credentials in $shown/credentials)"
echo
echo "Press Ctrl-C to stop everything."
wait -n "${pids[@]}" || true
echo "a service exited on its own; see $run_dir/logs" >&2
exit 1
