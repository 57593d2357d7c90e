#!/usr/bin/env bash
# `make run-ha`: make run's constellation (six services, a demo device) on a highly available PostgreSQL — three
# members under Patroni with synchronous replication, etcd, HAProxy (Deploy/ha/ha-cluster.sh) — under .run-ha/, made
# afresh each time, until Ctrl-C, which stops everything. Try a failover while it runs:
#   Deploy/ha/ha-cluster.sh kill-primary .run-ha/db
# ORRERY_RUN_DIR, ORRERY_RUN_BIN, ORRERY_RUN_PORT_BASE as for make run; ORRERY_HA_PORT_BASE for the database's ports.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run_dir=${ORRERY_RUN_DIR:-$root/.run-ha}
"$root/Tools/scripts/install-deps.sh" --ha
[ -d "$run_dir/db" ] && "$here/ha-cluster.sh" stop "$run_dir/db"
rm -rf "$run_dir"
mkdir -p "$run_dir"
"$here/ha-cluster.sh" start "$run_dir/db"
trap '"$here/ha-cluster.sh" stop "$run_dir/db"; echo "the highly available PostgreSQL stopped"' EXIT
ORRERY_RUN_DIR=$run_dir ORRERY_RUN_DB_ENV=$run_dir/db/env "$root/Tools/scripts/run-local.sh"
