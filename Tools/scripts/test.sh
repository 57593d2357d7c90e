#!/usr/bin/env bash
# `make test`: installs what tests need, checks generated code is current, starts a throwaway PostgreSQL,
# builds, runs every test, and stops PostgreSQL even when tests fail.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

"$root/Tools/scripts/install-deps.sh" --test-venv

echo "== building"
swift build --build-tests

echo "== checking that generated protobuf code is current"
"$root/Tools/scripts/check-protos.sh"

pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/orrery-test-pg.XXXXXX")
cleanup() {
    "$root/Tools/scripts/pg-throwaway.sh" stop "$pg_dir" || true
    rm -rf "$pg_dir"
}
trap cleanup EXIT
# fsync off: the tests' cluster is thrown away; speed is measured by `make bench`, never here.
PG_EXTRA_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    "$root/Tools/scripts/pg-throwaway.sh" start "$pg_dir"
# shellcheck disable=SC1091
. "$pg_dir/env"

export ORRERY_TEST_DB_HOST=127.0.0.1
export ORRERY_TEST_DB_PORT=$ORRERY_PG_PORT
export ORRERY_TEST_DB_USER=orrery
export ORRERY_TEST_DB_PASSWORD=$ORRERY_PG_PASSWORD
export ORRERY_TEST_DB_NAME=orrery
export ORRERY_TEST_DB_REQUIRED=1
export ORRERY_TEST_PYTHON="$root/.venv-test/bin/python"
export ORRERY_BIN_DIR
ORRERY_BIN_DIR=$(swift build --show-bin-path)

echo "== running tests"
# A crash's backtrace: the crashed thread only (all threads of a debug test binary took 218 s to symbolicate on CI).
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-threads=crashed,registers=none,images=mentioned}"
test_log="$pg_dir/swift-test.log"
status=0
swift test --skip-build "$@" 2>&1 | tee "$test_log" || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    "$root/Tools/scripts/test-digest.sh" "$test_log" || true
fi
exit "$status"
