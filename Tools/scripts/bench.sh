#!/usr/bin/env bash
# `make bench`: release builds, then each benchmark; results in bench-results/. Speed is measured here, never in tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
"$root/Tools/scripts/install-deps.sh"
# The Swift runtime is linked statically: an edge host needs no Swift toolchain to run the agent.
scratch=(--scratch-path .build-release -c release --static-swift-stdlib)
for product in orrery-bench registry device-agent orrery; do swift build "${scratch[@]}" --product "$product"; done
bin=$(swift build "${scratch[@]}" --show-bin-path)
mkdir -p bench-results

echo "== identity"
[ -n "${ORRERY_BENCH_SKIP_IDENTITY:-}" ] || "$bin/orrery-bench" identity --out bench-results/identity.md

echo "== placement (10,000 devices, pure solver)"
"$bin/orrery-bench" placement --out bench-results/placement.md

echo "== registry (10,000 devices)"
work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-bench.XXXXXX")
chmod 755 "$work"  # the postgres user must reach the cluster inside
registry_pid=""
cleanup() {
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    "$root/Tools/scripts/pg-throwaway.sh" stop "$work/pg" || true
    cp "$work/registry.log" bench-results/registry-server.log 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# fsync stays on: these numbers are about real durability.
"$root/Tools/scripts/pg-throwaway.sh" start "$work/pg" >/dev/null
# shellcheck disable=SC1091
. "$work/pg/env"
psql -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -d orrery -q -c "CREATE TABLE pgbench_rows (id bigserial PRIMARY KEY, device text, at timestamptz DEFAULT now())"
echo "INSERT INTO pgbench_rows (device) VALUES ('did:key:z6Mk');" >"$work/insert.sql"
tps=$("$ORRERY_PG_BIN/pgbench" -h 127.0.0.1 -p "$ORRERY_PG_PORT" -U orrery -n -c 8 -j 2 -T 10 -f "$work/insert.sql" orrery \
    | awk '/^tps/ {printf "%.0f", $3; exit}')
echo "{}" >"$work/empty.json"
"$bin/orrery" operator init "$work/credentials" >/dev/null
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_DATABASE=orrery \
    "$bin/registry" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/registry/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --ready-file "$work/registry.json" >"$work/registry.log" 2>&1 &
registry_pid=$!
until [ -s "$work/registry.json" ]; do
    kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
    sleep 0.1
done
port=$(python3 -c "import json; print(json.load(open('$work/registry.json'))['grpc_port'])")
"$bin/orrery-bench" registry --registry "127.0.0.1:$port" --operator-key "$work/credentials/operator.key" \
    --devices "${ORRERY_BENCH_DEVICES:-10000}" --pgbench-tps "$tps" --out bench-results/registry.md

echo "== device agent"
"$bin/orrery-bench" agent --binary "$bin/device-agent" --out bench-results/registry.md
