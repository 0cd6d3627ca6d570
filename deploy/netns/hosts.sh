#!/usr/bin/env bash
# The deployment of deploy/README.md on one Linux machine: every box a network namespace with
# its own address on one bridge, every service started with the config and flags the README
# gives an operator. Read it as a worked example; cli/tests/stack/multihost.rs runs it.
#
#   hosts.sh up DIR          build the hosts and start everything (configs and logs in DIR)
#   hosts.sh down DIR        stop everything and remove the hosts (safe to repeat)
#   hosts.sh redis-stop DIR | redis-start DIR | db-stop DIR | db-start DIR
#   hosts.sh addr HOST       the address of a host (db redis api-1 api-2 edge-1 edge-2 client)
#
# Needs root (ip netns), redis-server, PostgreSQL 15's initdb/pg_ctl, curl and the reviews
# binary (REVIEWS_BIN, default `reviews` on PATH). Variables: ID, a prefix of at most 5
# characters naming the namespaces and interfaces (default rvw); NET, the /24 (default
# 10.77.0); DATA, a folder of the four CSV files to import before the API processes start.
# Run commands on a host with `ip netns exec $ID-<host> …`, e.g.
#   ip netns exec rvw-client curl -s http://10.77.0.21:8080/reviews/meta?product_id=2
set -Eeuo pipefail

ID=${ID:-rvw}
NET=${NET:-10.77.0}
BIN=${REVIEWS_BIN:-reviews}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
HOSTS=(db redis api-1 api-2 edge-1 edge-2 client)

octet() {
  case $1 in
    db) echo 2 ;; redis) echo 3 ;; api-1) echo 11 ;; api-2) echo 12 ;;
    edge-1) echo 21 ;; edge-2) echo 22 ;; client) echo 100 ;;
    *) echo "unknown host $1" >&2; exit 2 ;;
  esac
}
addr() { echo "$NET.$(octet "$1")"; }
on() { local host=$1; shift; ip netns exec "$ID-$host" "$@"; }

# Waits until a command succeeds (30 s at most).
wait_for() {
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2
  return 1
}

# A background service on a host, its pid in DIR/<name>.pid, its output in DIR/<name>.log.
spawn() {
  local host=$1 name=$2; shift 2
  # `ip netns exec` itself, not the `on` function: $! is then the service's own pid.
  ip netns exec "$ID-$host" "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

network_up() {
  ip link add "${ID}br" type bridge
  ip link set "${ID}br" up
  local n
  for host in "${HOSTS[@]}"; do
    n=$(octet "$host")
    ip netns add "$ID-$host"
    ip link add "${ID}h$n" type veth peer name "${ID}b$n"
    ip link set "${ID}h$n" netns "$ID-$host"
    on "$host" ip link set "${ID}h$n" name eth0
    on "$host" ip addr add "$(addr "$host")/24" dev eth0
    on "$host" ip link set eth0 up
    on "$host" ip link set lo up
    ip link set "${ID}b$n" master "${ID}br" up
  done
}

# db: a cluster of its own, listening on the host's address only (README section 3).
db_init() {
  install -d -o postgres -g postgres -m 0700 "$DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 \
    >"$DIR/initdb.log" 2>&1
  # The API boxes' subnet (README section 3 uses scram-sha-256 and a password; a throwaway
  # cluster trusts it).
  echo "host all all $NET.0/24 trust" >>"$DIR/pg/data/pg_hba.conf"
  db_start
  on client psql -h "$(addr db)" -U postgres -qc 'CREATE DATABASE reviews' >/dev/null
}

db_start() {
  on db runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w \
    -o "-c listen_addresses=$(addr db) -c unix_socket_directories=$DIR/pg -c max_connections=100" \
    start >/dev/null
}

db_stop() {
  on db runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null
}

# redis: no persistence needed (README section 12); bound to the host's address.
redis_start() {
  spawn redis redis redis-server --bind "$(addr redis)" --port 6379 --save '' \
    --appendonly no --protected-mode no
  wait_for redis on client redis-cli -h "$(addr redis)" ping
}

redis_stop() {
  kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true
  wait_for "redis to stop" bash -c "! kill -0 $(cat "$DIR/redis.pid") 2>/dev/null"
}

# Two API processes per API box: api-<box>-<i>.toml as in README section 5.
apis_start() {
  local box i
  for box in api-1 api-2; do
    for i in 1 2; do
      cat >"$DIR/$box-$i.toml" <<TOML
[server]
listen = "0.0.0.0:300$i"
metrics_listen = "$(addr "$box"):930$i"
shutdown_grace = "2s"
[database]
url = "postgres://postgres@$(addr db):5432/reviews"
max_connections = 8
[log]
format = "json"
TOML
      "$BIN" api --config "$DIR/$box-$i.toml" --check >/dev/null 2>&1
      spawn "$box" "$box-$i" "$BIN" api --config "$DIR/$box-$i.toml"
      # The first process migrates the schema; the others start once it has.
      wait_for "$box-$i" on client curl -fsS "http://$(addr "$box"):300$i/readyz"
    done
  done
}

# The edges: edge.toml as in README section 6, plus [invalidation] (section 12).
edges_start() {
  local edge
  for edge in edge-1 edge-2; do
    cat >"$DIR/$edge.toml" <<TOML
threads = 1
[listen]
address = "0.0.0.0:8080"
[admin]
address = "$(addr "$edge"):9090"
token = "multihost"
[[upstream.servers]]
address = "$(addr api-1):3001"
[[upstream.servers]]
address = "$(addr api-1):3002"
[[upstream.servers]]
address = "$(addr api-2):3001"
[[upstream.servers]]
address = "$(addr api-2):3002"
[cache]                            # the routes of edge.example.toml
snapshot_path = "$DIR/$edge.snapshot"
[[cache.routes]]
path = "/reviews"
params = ["product_id", "page", "count", "sort"]
defaults = { page = "1", count = "5", sort = "relevant" }
[[cache.routes]]
path = "/reviews/meta"
params = ["product_id"]
[shutdown]
grace_period = "2s"
graceful_timeout = "1s"
upgrade_sock = "$DIR/$edge.sock"
pid_file = "$DIR/$edge.pid"
[invalidation]
url = "redis://$(addr redis):6379"
stream = "reviews:purges"
TOML
    "$BIN" proxy --config "$DIR/$edge.toml" --check >/dev/null 2>&1
    spawn "$edge" "$edge-process" "$BIN" proxy --config "$DIR/$edge.toml"
    wait_for "$edge" on client curl -fsS "http://$(addr "$edge"):9090/healthz"
    wait_for "$edge's public listener" on client curl -sS -o /dev/null "http://$(addr "$edge"):8080/"
  done
}

down() {
  local ns pids
  if [ -d "$DIR/pg/data" ]; then
    on db runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m immediate stop \
      >/dev/null 2>&1 || true
  fi
  for host in "${HOSTS[@]}"; do
    ns="$ID-$host"
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "${ID}br" 2>/dev/null || true
}

cmd=${1:?usage: hosts.sh up|down|redis-stop|redis-start|db-stop|db-start DIR | addr HOST}
if [ "$cmd" = addr ]; then addr "${2:?host}"; exit 0; fi
DIR=$(realpath "${2:?the directory for configs and logs}")
mkdir -p "$DIR"
case $cmd in
  up)
    # Half-built hosts are removed when anything fails.
    trap 'down' ERR
    network_up
    db_init
    # README section 4: the data before the API processes (DATA: a folder of the four CSVs).
    if [ -n "${DATA:-}" ]; then
      on client "$BIN" import --dir "$DATA" --rejects "$DIR/rejects.csv" \
        --database-url "postgres://postgres@$(addr db):5432/reviews" >"$DIR/import.log" 2>&1
    fi
    redis_start
    apis_start
    edges_start
    trap - ERR
    echo "up: edges at http://$(addr edge-1):8080 and http://$(addr edge-2):8080 (from $ID-client)"
    ;;
  down) down ;;
  redis-stop) redis_stop ;;
  redis-start) redis_start ;;
  db-stop) db_stop ;;
  db-start) db_start ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
