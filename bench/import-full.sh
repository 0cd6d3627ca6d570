#!/usr/bin/env bash
# Full-size import on each backend: generate the data set (if missing), import it into a fresh
# SQLite file and a fresh PostgreSQL database (release build), and report wall time and peak
# RSS of each import, measured by GNU time around the importer process.
#
#   bench/import-full.sh [PRODUCTS]          # default 1000011: the real set's size, 31.3M rows
#   VERIFY=1 bench/import-full.sh            # also run --verify (reads every table back)
#   BIN=path/to/reviews bench/import-full.sh # a prebuilt binary instead of building one
#
# The data set is a few GB and lives under $BENCH_DIR (default target/bench-api, shared with
# bench/api-latency.sh, which then reuses both databases). Needs PostgreSQL at $PG_ADMIN_URL
# (default postgres://postgres@127.0.0.1:5432/test); skips it otherwise. The importer and the
# database share this machine's cores, which the figures include.
set -euo pipefail
cd "$(dirname "$0")/.."

products=${1:-1000011}
pg_admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench-api}
verify=()
[ "${VERIFY:-0}" = 1 ] && verify=(--verify)
mkdir -p "$work"

if [ ! -x /usr/bin/time ]; then
  echo "GNU time is needed for peak RSS: apt-get install time" >&2
  exit 1
fi

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
  bin=target/release/reviews
fi
data="$work/data-$products"

if [ ! -f "$data/characteristic_reviews.csv" ]; then
  echo "=== generating $products products into $data ==="
  /usr/bin/time -f 'generate: %e s wall, %M KiB peak RSS' \
    "$bin" generate --out "$data" --products "$products" --seed 42
fi
du -sh "$data"

timed_import() { # name url
  echo "=== import into $1 ==="
  /usr/bin/time -f "$1 import: %e s wall, %M KiB peak RSS, %P CPU" \
    "$bin" import --quiet --database-url "$2" --dir "$data" --rejects "$work/rejects-$1.csv" \
    "${verify[@]}"
}

sqlite_db="$work/bench-$products.db"
rm -f "$sqlite_db" "$sqlite_db-wal" "$sqlite_db-shm"
timed_import sqlite "sqlite://$sqlite_db"
ls -l "$sqlite_db"

if psql "$pg_admin" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  pg_db="reviews_bench_$products"
  pg_url="${pg_admin%/*}/$pg_db"
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db" -qc "CREATE DATABASE $pg_db"
  timed_import postgres "$pg_url"
  psql "$pg_url" -qAtc "SELECT 'postgres database size: ' || pg_size_pretty(pg_database_size('$pg_db'))"
else
  echo "PostgreSQL not reachable at $pg_admin: SQLite only" >&2
fi
