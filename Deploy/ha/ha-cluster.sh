#!/usr/bin/env bash
# A highly available PostgreSQL on this machine's loopback, as the real cluster runs it (Deploy/ha/README.md):
# three PostgreSQL members managed by Patroni with synchronous replication, etcd (v3 API, TLS, client certificates)
# as Patroni's store, Patroni's REST API over TLS with a password on its unsafe endpoints, and HAProxy sending
# connections to whichever member Patroni's REST API says is the primary.
#   ha-cluster.sh start DIR    makes everything under DIR (anew), starts it, waits for a primary and a sync standby,
#                              creates the orrery role and database; DIR/env then holds ORRERY_DB_HOST/PORT/USER/
#                              PASSWORD/DATABASE (through HAProxy) and what the tests need (ports, passwords)
#   ha-cluster.sh stop DIR     stops everything it started
#   ha-cluster.sh kill-primary DIR   kill -9 of every process of the primary member (Patroni and its PostgreSQL);
#                              prints the killed member's name
# ORRERY_HA_PORT_BASE (default 5440): HAProxy on base, PostgreSQL members on base+1..3, their REST APIs on
# base+11..13, etcd on base+21 (clients) and base+22 (peers).
# ORRERY_HA_TTL, ORRERY_HA_LOOP_WAIT, ORRERY_HA_RETRY_TIMEOUT: Patroni's leader key TTL and loop (default 10, 2, 4 s;
# Patroni needs ttl >= loop_wait + 2 * retry_timeout).
set -euo pipefail
action=${1:?usage: ha-cluster.sh start|stop|kill-primary DIR}
dir=${2:?usage: ha-cluster.sh start|stop|kill-primary DIR}
base=${ORRERY_HA_PORT_BASE:-5440}
# stop and kill-primary use the ports the cluster was started on.
[ "$action" != start ] && [ -f "$dir/port-base" ] && base=$(cat "$dir/port-base")
ttl=${ORRERY_HA_TTL:-10} loop_wait=${ORRERY_HA_LOOP_WAIT:-2} retry_timeout=${ORRERY_HA_RETRY_TIMEOUT:-4}
members=(pg1 pg2 pg3)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

for tool in patroni etcd haproxy openssl curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: Tools/scripts/install-deps.sh --ha" >&2; exit 69; }
done
[ -n "$pg_bin" ] || { echo "PostgreSQL is missing: Tools/scripts/install-deps.sh" >&2; exit 69; }

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Run as `detached COMMAND… &`: in the background job itself (so that $! is the command's pid), close what the
# starter inherited (a daemon must not hold it, see pg-throwaway.sh), leave the session, and become COMMAND.
detached() {
    local fd
    for fd in $(ls "/proc/$BASHPID/fd"); do
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" </dev/null
}

rest_port() { echo $((base + 10 + ${1#pg})); }
pg_port() { echo $((base + ${1#pg})); }

# The member Patroni's REST API names as leader, read from any member that answers.
leader() {
    local member
    for member in "${members[@]}"; do
        curl -sS --max-time 2 --cacert "$dir/tls/ca.crt" "https://127.0.0.1:$(rest_port "$member")/cluster" 2>/dev/null \
            | python3 -c 'import json, sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["role"] == "leader"))' \
            2>/dev/null && return 0
    done
    return 1
}

stop_all() {
    local pidfile
    for pidfile in "$dir"/run/*.pid; do
        [ -f "$pidfile" ] || continue
        kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pidfile in "$dir"/run/*.pid; do
            [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pidfile in "$dir"/run/*.pid; do
        [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    done
    # A PostgreSQL left by a killed Patroni.
    local member
    for member in "${members[@]}"; do
        [ -f "$dir/$member/data/postmaster.pid" ] && as_postgres "$pg_bin/pg_ctl" -D "$dir/$member/data" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -f "$dir"/run/*.pid
}

case "$action" in
stop)
    [ -d "$dir/run" ] && stop_all
    exit 0
    ;;
kill-primary)
    primary=$(leader) || { echo "no member leads" >&2; exit 1; }
    patroni_pid=$(cat "$dir/run/patroni-$primary.pid")
    postmaster_pid=$(head -n 1 "$dir/$primary/data/postmaster.pid")
    # Patroni and every process of its PostgreSQL (the postmaster and its children), at once.
    kill -KILL "$patroni_pid" "$postmaster_pid" $(pgrep -P "$postmaster_pid" || true) 2>/dev/null || true
    echo "$primary"
    exit 0
    ;;
start) ;;
*) echo "usage: ha-cluster.sh start|stop|kill-primary DIR" >&2; exit 64 ;;
esac

[ -d "$dir/run" ] && stop_all
rm -rf "$dir"
mkdir -p "$dir/tls" "$dir/run" "$dir/logs"
dir=$(cd "$dir" && pwd)
echo "$base" >"$dir/port-base"
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
superuser_password=$(secret) replication_password=$(secret) rest_password=$(secret) orrery_password=$(secret)

# Certificates: a CA; etcd's server certificate and Patroni's client certificate for etcd; Patroni's REST API's.
(
    cd "$dir/tls"
    newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${newkey[@]}" -days 30 -subj "/CN=orrery ha ca" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -keyout ca.key -out ca.crt 2>/dev/null
    for name in etcd rest patroni-client; do
        usage=serverAuth
        [ "$name" = patroni-client ] && usage=clientAuth
        # etcd's gateway calls its own gRPC server with etcd's certificate, as a client.
        [ "$name" = etcd ] && usage=serverAuth,clientAuth
        openssl req "${newkey[@]}" -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' "$usage" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$name.ext" \
            -out "$name.crt" 2>/dev/null
        rm -f "$name.csr" "$name.ext"
    done
    chmod 0600 ./*.key
)

# etcd: one member here (a real cluster runs three, Deploy/ha/systemd), clients authenticated by certificate.
etcd_client=$((base + 21)) etcd_peer=$((base + 22))
detached etcd --name e1 --data-dir "$dir/etcd" \
    --listen-client-urls "https://127.0.0.1:$etcd_client" --advertise-client-urls "https://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "e1=http://127.0.0.1:$etcd_peer" --initial-cluster-state new \
    --cert-file "$dir/tls/etcd.crt" --key-file "$dir/tls/etcd.key" \
    --client-cert-auth --trusted-ca-file "$dir/tls/ca.crt" >"$dir/logs/etcd.log" 2>&1 &
echo $! >"$dir/run/etcd.pid"

# The orrery role and database, made once the cluster is bootstrapped (Patroni runs this on the first primary).
cat >"$dir/post-bootstrap.sh" <<SH
#!/bin/sh
set -e
psql "\$1" -v ON_ERROR_STOP=1 -q -c "CREATE ROLE orrery LOGIN CREATEDB PASSWORD '$orrery_password'" \
    -c "CREATE DATABASE orrery OWNER orrery"
SH
chmod 0755 "$dir/post-bootstrap.sh"

for member in "${members[@]}"; do
    mkdir -p "$dir/$member"
    cat >"$dir/$member/patroni.yml" <<YAML
scope: orrery
namespace: /orrery/
name: $member
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$(rest_port "$member")
  connect_address: 127.0.0.1:$(rest_port "$member")
  certfile: $dir/tls/rest.crt
  keyfile: $dir/tls/rest.key
  authentication:
    username: patroni
    password: $rest_password
ctl:
  cacert: $dir/tls/ca.crt
etcd3:
  hosts: 127.0.0.1:$etcd_client
  protocol: https
  cacert: $dir/tls/ca.crt
  cert: $dir/tls/patroni-client.crt
  key: $dir/tls/patroni-client.key
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop_wait
    retry_timeout: $retry_timeout
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 500
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
    - locale: C
    - data-checksums
  post_bootstrap: $dir/post-bootstrap.sh
postgresql:
  listen: 127.0.0.1:$(pg_port "$member")
  connect_address: 127.0.0.1:$(pg_port "$member")
  data_dir: $dir/$member/data
  bin_dir: $pg_bin
  pgpass: $dir/$member/pgpass
  # A new replica copies the primary at once (pg_basebackup otherwise waits for a spread checkpoint: minutes).
  basebackup:
    - checkpoint: fast
  pg_hba:
    - local all all scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  authentication:
    superuser:
      username: postgres
      password: $superuser_password
    replication:
      username: replicator
      password: $replication_password
    rewind:
      username: postgres
      password: $superuser_password
  parameters:
    unix_socket_directories: $dir/$member
YAML
done
chmod 0600 "$dir"/pg*/patroni.yml
[ "$(id -u)" = 0 ] && chown -R postgres "$dir"

# Wait for etcd before the members (Patroni gives up at start when its store does not answer).
for _ in $(seq 1 100); do
    curl -sS --max-time 2 --cacert "$dir/tls/ca.crt" --cert "$dir/tls/patroni-client.crt" --key "$dir/tls/patroni-client.key" \
        "https://127.0.0.1:$etcd_client/health" 2>/dev/null | grep -q true && break
    sleep 0.2
done

# Patroni runs as postgres under runuser; the pid file names Patroni itself (runuser's child), so that stop and
# kill-primary reach it.
for member in "${members[@]}"; do
    detached runuser -u postgres -- patroni "$dir/$member/patroni.yml" >>"$dir/logs/patroni-$member.log" 2>&1 &
    runner=$!
    for _ in $(seq 1 50); do
        patroni_pid=$(pgrep -P "$runner" patroni || true)
        [ -n "$patroni_pid" ] && break
        sleep 0.1
    done
    echo "${patroni_pid:-$runner}" >"$dir/run/patroni-$member.pid"
done

haproxy_port=$base
cat >"$dir/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s
listen postgres-primary
    bind 127.0.0.1:$haproxy_port
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
$(for member in "${members[@]}"; do
    echo "    server $member 127.0.0.1:$(pg_port "$member") check port $(rest_port "$member") check-ssl verify required ca-file $dir/tls/ca.crt"
done)
CFG
detached haproxy -db -f "$dir/haproxy.cfg" >"$dir/logs/haproxy.log" 2>&1 &
echo $! >"$dir/run/haproxy.pid"

# Ready: a leader, a synchronous standby, and the orrery role answering through HAProxy.
ready=0
deadline=$((SECONDS + 120))
while [ $SECONDS -lt $deadline ]; do
    roles=$(curl -sS --max-time 2 --cacert "$dir/tls/ca.crt" "https://127.0.0.1:$(rest_port pg1)/cluster" 2>/dev/null \
        | python3 -c 'import json, sys; print(" ".join(sorted(m["role"] + ":" + m["state"] for m in json.load(sys.stdin)["members"])))' 2>/dev/null || true)
    if [[ $roles == *leader:running* && $roles == *sync_standby:* ]] \
        && PGPASSWORD=$orrery_password psql -h 127.0.0.1 -p "$haproxy_port" -U orrery -d orrery -Atqc 'SELECT 1' >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
[ $ready = 1 ] || { echo "the cluster did not come up within 120 s (logs in $dir/logs)" >&2; tail -n 20 "$dir"/logs/*.log >&2; exit 1; }

umask 077
cat >"$dir/env" <<ENV
ORRERY_DB_HOST=127.0.0.1
ORRERY_DB_PORT=$haproxy_port
ORRERY_DB_USER=orrery
ORRERY_DB_PASSWORD=$orrery_password
ORRERY_DB_DATABASE=orrery
ORRERY_HA_REST_PORTS="$(rest_port pg1) $(rest_port pg2) $(rest_port pg3)"
ORRERY_HA_CA=$dir/tls/ca.crt
ORRERY_HA_SUPERUSER_PASSWORD=$superuser_password
ORRERY_HA_REST_PASSWORD=$rest_password
ORRERY_HA_TTL=$ttl
ORRERY_HA_LOOP_WAIT=$loop_wait
ORRERY_HA_RETRY_TIMEOUT=$retry_timeout
ENV
echo "PostgreSQL (Patroni, 3 members, synchronous) through HAProxy on 127.0.0.1:$haproxy_port; leader $(leader)"
