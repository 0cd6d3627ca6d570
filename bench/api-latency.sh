#!/usr/bin/env bash
# Uncached API latency on each backend, side by side in one run: generate a data set, import it
# into SQLite and PostgreSQL, start one API process on each (release build), and drive the same
# fixed-rate load with uniform random product ids at /reviews and /reviews/meta.
#
#   bench/api-latency.sh [PRODUCTS] [RATE] [DURATION]
#   bench/api-latency.sh 100000 1000 20s
#
# Needs PostgreSQL at $PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test); skips it
# otherwise. Everything runs on this machine: the load tester, the API and the database share
# its cores, which the figures include.
set -euo pipefail
cd "$(dirname "$0")/.."

products=${1:-100000}
rate=${2:-1000}
duration=${3:-20s}
pg_admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench-api}
mkdir -p "$work"

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
bin=target/release/reviews

if [ ! -f "$work/data-$products/reviews.csv" ]; then
  "$bin" generate --out "$work/data-$products" --products "$products" --seed 42
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_api() { # name url port
  "$bin" api --database-url "$2" --listen "127.0.0.1:$3" --metrics-listen "127.0.0.1:$(( $3 + 100 ))" \
    >"$work/api-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$3/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "API on $1 did not become ready; see $work/api-$1.log" >&2
  return 1
}

backends=()
sqlite_db="$work/bench-$products.db"
if [ ! -f "$sqlite_db" ]; then
  "$bin" import --quiet --database-url "sqlite://$sqlite_db" --dir "$work/data-$products" \
    --rejects "$work/rejects-sqlite.csv"
fi
start_api sqlite "sqlite://$sqlite_db" 3701
backends+=("sqlite:3701")

if psql "$pg_admin" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  pg_db="reviews_bench_$products"
  pg_url="${pg_admin%/*}/$pg_db"
  if ! psql "$pg_url" -qAtc 'SELECT 1 FROM reviews LIMIT 1' >/dev/null 2>&1; then
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db" -qc "CREATE DATABASE $pg_db"
    "$bin" import --quiet --database-url "$pg_url" --dir "$work/data-$products" \
      --rejects "$work/rejects-pg.csv"
  fi
  start_api postgres "$pg_url" 3702
  backends+=("postgres:3702")
else
  echo "PostgreSQL not reachable at $pg_admin: SQLite only" >&2
fi

for b in "${backends[@]}"; do
  name=${b%%:*}; port=${b##*:}
  for target in list meta; do
    echo "=== $name $target: $rate req/s for $duration, uniform random ids over 1..$products ==="
    "$bin" load --url "http://127.0.0.1:$port" --targets "$target" --ids "uniform:1..$products" \
      --rate "$rate" --duration "$duration" --seed 7 --quiet --json "$work/$name-$target.json" \
      2>/dev/null | sed -n '/requests \.\.\./,/tester CPU/p'
  done
done
