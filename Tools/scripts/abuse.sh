#!/usr/bin/env bash
# `make abuse`: what attacks cost, in release builds — CPU per refused token (in process), then a live identity
# service on a throwaway PostgreSQL: valid calls under a flood of forged ones, and its memory after floods of forged
# calls and of idle connections. Results in bench-results/abuse.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
"$root/Tools/scripts/install-deps.sh"
# shellcheck source=Tools/scripts/release-flags.sh
source "$root/Tools/scripts/release-flags.sh"
prepare_release_scratch .build-release
scratch=(--scratch-path .build-release "${release_flags[@]}")
for product in orrery-bench identity orrery; do swift build "${scratch[@]}" --product "$product"; done
bin=$(swift build "${scratch[@]}" --show-bin-path)
mkdir -p bench-results
work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-abuse.XXXXXX")
chmod 755 "$work"  # the postgres user reaches its cluster below it
identity_pid=
cleanup() {
    [ -n "$identity_pid" ] && kill "$identity_pid" 2>/dev/null && wait "$identity_pid" 2>/dev/null
    "$root/Tools/scripts/pg-throwaway.sh" stop "$work/pg" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== CPU per refusal"
"$bin/orrery-bench" abuse --out bench-results/abuse.md

echo "== a live identity service under attack"
"$root/Tools/scripts/pg-throwaway.sh" start "$work/pg" >/dev/null
# shellcheck disable=SC1091
. "$work/pg/env"
"$bin/orrery" operator init "$work/credentials" >/dev/null
echo "{}" >"$work/empty.json"
ORRERY_DB_HOST=127.0.0.1 ORRERY_DB_PORT=$ORRERY_PG_PORT ORRERY_DB_USER=orrery ORRERY_DB_PASSWORD=$ORRERY_PG_PASSWORD \
    ORRERY_DB_DATABASE=orrery \
    "$bin/identity" --config "$work/empty.json" --grpc-port 0 --http-port 0 --log-level warning \
    --identity-key "$work/credentials/identity/service.key" --trust-operator "$(cat "$work/credentials/operator.did")" \
    --state-dir "$work/identity" --ready-file "$work/identity.ready" >"$work/identity.log" 2>&1 &
identity_pid=$!
for _ in $(seq 1 600); do [ -s "$work/identity.ready" ] && break; sleep 0.1; done
[ -s "$work/identity.ready" ] || { cat "$work/identity.log" >&2; exit 1; }
port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["grpc_port"])' "$work/identity.ready")
"$bin/orrery-bench" flood --identity "127.0.0.1:$port" --operator-key "$work/credentials/operator.key" \
    --pid "$identity_pid" --out bench-results/abuse.md
