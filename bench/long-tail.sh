#!/usr/bin/env bash
# The long tail the original could not hold: uniform random product ids over the whole
# generated set (1,000,011 products), so nearly every request misses, through the edge in
# front of two API processes on the full data set. One run per backend, with the load tester's
# per-second table and summary (error rate, p50/p99, hit ratio).
#
#   bench/long-tail.sh                      # both backends, 5,000 req/s for 30 s
#   BACKENDS=sqlite RATE=3000 bench/long-tail.sh
#
# Needs the full set imported by bench/import-full.sh (target/bench-api/bench-1000011.db and
# the PostgreSQL database reviews_bench_1000011). The edge is deploy/edge.example.toml with two
# upstreams and files under $WORK. Load tester, edge and both API processes share this
# machine's two cores.
# Knobs: RATE (5000) DURATION (30s) PRODUCTS (1000011) BACKENDS ("sqlite postgres")
# PORT (28180) TARGETS (list) BIN (a prebuilt binary; default: build this tree's release)
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-5000}
DURATION=${DURATION:-30s}
PRODUCTS=${PRODUCTS:-1000011}
BACKENDS=${BACKENDS:-sqlite postgres}
PORT=${PORT:-28180}
TARGETS=${TARGETS:-list}
ADMIN=$((PORT + 10))
API1=$((PORT + 20))
API2=$((PORT + 21))
pg_admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
bench=target/bench-api
WORK=target/bench-long-tail
bin=${BIN:-target/release/reviews}

# BIN=path runs a binary built elsewhere (an earlier build, for a side-by-side comparison).
[ -n "${BIN:-}" ] || CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
mkdir -p "$WORK"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

cpu_ticks() { # pids… → their utime + stime in clock ticks (a pid gone since counts 0)
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}

wait_ok() { # url
    for _ in $(seq 300); do
        curl -fs "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    exit 1
}

edge_config() {
    # The example config, its four upstreams replaced by this run's two.
    awk -v a1="127.0.0.1:$API1" -v a2="127.0.0.1:$API2" '
        /^\[\[upstream.servers\]\]/ { skip = 1; next }
        skip && /^(address|weight) *=/ { next }
        skip && /^\[/ { skip = 0; printf "[[upstream.servers]]\naddress = \"%s\"\n[[upstream.servers]]\naddress = \"%s\"\n\n", a1, a2 }
        /^#/ && skip { next }
        { print }
    ' deploy/edge.example.toml |
        sed -e "s#^address = \"0.0.0.0:8080\"#address = \"127.0.0.1:$PORT\"#" \
            -e "s#^address = \"127.0.0.1:9090\"#address = \"127.0.0.1:$ADMIN\"#" \
            -e "s#^upgrade_sock = .*#upgrade_sock = \"$PWD/$WORK/edge.sock\"#" \
            -e "s#^pid_file = .*#pid_file = \"$PWD/$WORK/edge.pid\"#" \
            -e 's#^format = "json"#format = "compact"#' \
            -e 's#^level = "info".*#level = "warn"#'
}

for backend in $BACKENDS; do
    case $backend in
        sqlite)
            db="$bench/bench-$PRODUCTS.db"
            [ -f "$db" ] || { echo "missing $db: run bench/import-full.sh first" >&2; exit 1; }
            url="sqlite://$db" ;;
        postgres)
            url="${pg_admin%/*}/reviews_bench_$PRODUCTS"
            psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1 ||
                { echo "missing $url: run bench/import-full.sh first" >&2; exit 1; } ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    echo "=== $backend: $RATE req/s for $DURATION, ids uniform over 1..$PRODUCTS ==="
    for port in $API1 $API2; do
        "$bin" api --database-url "$url" --listen "127.0.0.1:$port" \
            --metrics-listen "127.0.0.1:$((port + 100))" >"$WORK/api-$backend-$port.log" 2>&1 &
        pids+=($!)
        wait_ok "http://127.0.0.1:$port/readyz"
    done
    edge_config >"$WORK/edge.toml"
    "$bin" proxy --config "$WORK/edge.toml" >"$WORK/edge-$backend.log" 2>&1 &
    pids+=($!)
    wait_ok "http://127.0.0.1:$ADMIN/healthz"
    wait_ok "http://127.0.0.1:$PORT/reviews/meta?product_id=1"
    # Where the CPU goes: each server's utime+stime over the run, per request served (the
    # PostgreSQL figure counts the backends of this database only), and the API processes'
    # major faults (pages of the SQLite file read from disk on a runtime worker).
    db_backends() {
        [ "$backend" = postgres ] || return 0
        psql "$pg_admin" -qAtc "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
            WHERE datname = 'reviews_bench_$PRODUCTS'" 2>/dev/null || true
    }
    apis="${pids[0]} ${pids[1]}"
    edge=${pids[2]}
    pg0=$(cpu_ticks $(db_backends)) api0=$(cpu_ticks $apis) edge0=$(cpu_ticks $edge)
    "$bin" load --url "http://127.0.0.1:$PORT" --rate "$RATE" --duration "$DURATION" \
        --ids "uniform:1..$PRODUCTS" --targets "$TARGETS" --seed 7 \
        --edge-metrics "http://127.0.0.1:$ADMIN/metrics" \
        --json "$WORK/report-$backend.json" 2>&1 | tail -n 60 || true
    served=0
    for port in $API1 $API2; do
        n=$(curl -fs "http://127.0.0.1:$((port + 100))/metrics" |
            awk '/^reviews_api_requests_total.*route="\/reviews"/ { n += $2 } END { print n + 0 }')
        served=$((served + n))
    done
    per_request() { # ticks → µs per request served
        awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$served" \
            'BEGIN { if (n > 0) printf "%.0f µs", t * 1e6 / hz / n; else print "-" }'
    }
    echo "  CPU per request served by the APIs ($served): API $(per_request $(($(cpu_ticks $apis) - api0))), edge $(per_request $(($(cpu_ticks $edge) - edge0)))$(
        [ "$backend" = postgres ] && echo ", PostgreSQL $(per_request $(($(cpu_ticks $(db_backends)) - pg0)))")"
    echo "  API major faults: $(for p in $apis; do awk '{ printf "%s ", $12 }' "/proc/$p/stat"; done)"
    stop_all
done
