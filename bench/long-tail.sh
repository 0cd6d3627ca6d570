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
# PORT (28180) TARGETS (list)
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
bin=target/release/reviews

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
mkdir -p "$WORK"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

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
    "$bin" load --url "http://127.0.0.1:$PORT" --rate "$RATE" --duration "$DURATION" \
        --ids "uniform:1..$PRODUCTS" --targets "$TARGETS" --seed 7 \
        --edge-metrics "http://127.0.0.1:$ADMIN/metrics" \
        --json "$WORK/report-$backend.json" 2>&1 | tail -n 40 || true
    stop_all
done
