#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free loopback port, for tests and `make run`.
#   pg-throwaway.sh start DIR   creates DIR/data afresh, starts the server, writes DIR/env (shell assignments)
#   pg-throwaway.sh resume DIR  starts the cluster DIR/data holds (on a free port, DIR/env updated), or starts afresh
#   pg-throwaway.sh stop DIR    stops the server (the data stays until DIR is removed)
# initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user. Every connection, over TCP or
# the cluster's own socket, authenticates with a password (SCRAM-SHA-256): a sandboxed workload or any other local
# process that reaches the port cannot use the ledgers. DIR/env (mode 0600) carries the orrery role's password as
# ORRERY_PG_PASSWORD; the superuser's is in DIR/superuser.password (0600).
set -euo pipefail
action=${1:?usage: pg-throwaway.sh start|resume|stop DIR}
dir=${2:?usage: pg-throwaway.sh start|resume|stop DIR}
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGDATA PGSERVICE PGSSLMODE PGOPTIONS

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || { echo "PostgreSQL server binaries are missing: apt-get install -y postgresql" >&2; exit 69; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The server is a daemon: it must not keep a descriptor its starter inherited open.
# shellcheck source=lib/descriptors.sh
. "$(dirname "$0")/lib/descriptors.sh"
without_inherited_descriptors() (
    close_inherited_descriptors
    "$@"
)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ "$action" = resume ]; then
    if [ -f "$dir/env" ] && [ -f "$dir/data/PG_VERSION" ]; then
        dir=$(cd "$dir" && pwd)
        port=$(free_port)
        as_owner "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true  # left running by a kill -9
        without_inherited_descriptors as_owner "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir/socket -c listen_addresses=127.0.0.1 -c max_connections=1000 ${PG_EXTRA_OPTIONS:-}" start >/dev/null \
            || { tail -n 20 "$dir/server.log" >&2; exit 1; }
        sed -i "s/^ORRERY_PG_PORT=.*/ORRERY_PG_PORT=$port/" "$dir/env"
        echo "PostgreSQL resumed on 127.0.0.1:$port (data in $dir/data)"
        exit 0
    fi
    action=start
fi

case "$action" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    rm -rf "$dir/data" "$dir/socket"
    mkdir -p "$dir/data" "$dir/socket"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    port=$(free_port)
    secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
    superuser_password=$(secret)
    orrery_password=$(secret)
    (umask 077; printf '%s\n' "$superuser_password" >"$dir/superuser.password")
    [ "$(id -u)" = 0 ] && chown postgres "$dir/superuser.password"
    as_owner "$pg_bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/superuser.password" \
        -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    without_inherited_descriptors as_owner "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir/socket -c listen_addresses=127.0.0.1 -c max_connections=1000 ${PG_EXTRA_OPTIONS:-}" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    psql_cmd=(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q)
    PGPASSWORD=$superuser_password "${psql_cmd[@]}" \
        -c "CREATE ROLE orrery LOGIN CREATEDB PASSWORD '$orrery_password'" -c "CREATE DATABASE orrery OWNER orrery"
    (umask 077; cat >"$dir/env" <<ENV
ORRERY_PG_BIN=$pg_bin
ORRERY_PG_DATA=$dir/data
ORRERY_PG_PORT=$port
ORRERY_PG_PASSWORD=$orrery_password
ENV
)
    echo "PostgreSQL ready on 127.0.0.1:$port (data in $dir/data)"
    ;;
stop)
    [ -d "$dir/data" ] || exit 0
    as_owner "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: pg-throwaway.sh start|resume|stop DIR" >&2
    exit 64
    ;;
esac
