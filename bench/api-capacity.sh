#!/usr/bin/env bash
# What an uncached request costs the API: closed-loop throughput of each route and the API's own
# CPU per request, on both backends in one run.
#
# The API process is pinned to one core (`taskset -c $API_CORE`, so tokio sizes itself to one
# worker), `wrk -t1 -c32` to the other, uniform random product ids over the generated set. CPU
# per request is the API process's utime+stime delta from /proc/<pid>/stat over the run divided
# by the requests wrk completed; the database server's CPU (PostgreSQL) is not in it. Each
# route's throughput is also given as a share of `/healthz`, which costs the API only HTTP.
#
#   bench/api-capacity.sh [PRODUCTS] [DURATION]
#   bench/api-capacity.sh 100000 10s
#   BINARIES="before=target/bench-api/reviews-main after=target/release/reviews" bench/api-capacity.sh
#
# Knobs (environment): BACKENDS ("sqlite postgres"), BINARIES (label=path pairs compared in one
# run; default: this tree's release build), API_CORE (0), CLIENT_CORE (1), CONNECTIONS (32),
# PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/test). Needs wrk and taskset. PostgreSQL
# runs unpinned; the load, the API and the database share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."

products=${1:-100000}
duration=${2:-10s}
backends=${BACKENDS:-sqlite postgres}
api_core=${API_CORE:-0}
client_core=${CLIENT_CORE:-1}
connections=${CONNECTIONS:-32}
pg_admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench-api}
mkdir -p "$work"
for tool in wrk taskset curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

if [ -z "${BINARIES:-}" ]; then
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
  BINARIES="this=target/release/reviews"
fi
# The data tools of the last binary listed fill the databases (the schema is the same for all).
tools=${BINARIES##*=}

if [ ! -f "$work/data-$products/reviews.csv" ]; then
  "$tools" generate --out "$work/data-$products" --products "$products" --seed 42
fi

pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

# A random product id per request: wrk's Lua hook, seeded so runs are comparable.
lua="$work/random-ids.lua"
cat >"$lua" <<'EOF'
local prefix, products
function init(args)
  prefix = args[1]
  products = tonumber(args[2])
  math.randomseed(7)
end
function request()
  if products == 0 then return wrk.format("GET", prefix) end
  return wrk.format("GET", prefix .. math.random(1, products))
end
EOF

db_url() { # backend → URL, importing the set first if needed
  case $1 in
    sqlite)
      local db="$work/bench-$products.db"
      if [ ! -f "$db" ]; then
        "$tools" import --quiet --database-url "sqlite://$db" --dir "$work/data-$products" \
          --rejects "$work/rejects-sqlite.csv" >&2
      fi
      # Read the whole file into the page cache: this measures CPU per request, not the disk
      # (some VMs, this one included, evict page-cache pages idle for a minute or so).
      cat "$db" >/dev/null
      echo "sqlite://$db" ;;
    postgres)
      local name="reviews_bench_$products" url="${pg_admin%/*}/reviews_bench_$products"
      psql "$pg_admin" -qAtc 'SELECT 1' >/dev/null 2>&1 || return 1
      if ! psql "$url" -qAtc 'SELECT 1 FROM reviews LIMIT 1' >/dev/null 2>&1; then
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $name" -qc "CREATE DATABASE $name" >&2
        "$tools" import --quiet --database-url "$url" --dir "$work/data-$products" \
          --rejects "$work/rejects-pg.csv" >&2
      fi
      echo "$url" ;;
    *) echo "unknown backend $1" >&2; return 1 ;;
  esac
}

cpu_ticks() { # utime + stime of a process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

hz=$(getconf CLK_TCK)
port=3711
rows=()
for backend in $backends; do
  if ! url=$(db_url "$backend"); then
    echo "$backend not reachable: skipped" >&2
    continue
  fi
  for entry in $BINARIES; do
    label=${entry%%=*}; bin=${entry#*=}
    taskset -c "$api_core" "$bin" api --database-url "$url" --listen "127.0.0.1:$port" \
      --metrics-listen "127.0.0.1:$((port + 100))" >"$work/capacity-$label-$backend.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    for route in "healthz:/healthz:0" "list:/reviews?product_id=:$products" \
                 "meta:/reviews/meta?product_id=:$products"; do
      name=${route%%:*}; rest=${route#*:}; path=${rest%:*}; n=${rest##*:}
      # Warm up: pools filled, pages of the database file in the page cache.
      taskset -c "$client_core" wrk -t1 -c"$connections" -d3s -s "$lua" \
        "http://127.0.0.1:$port" -- "$path" "$n" >/dev/null
      before=$(cpu_ticks "$pid")
      out=$(taskset -c "$client_core" wrk -t1 -c"$connections" -d"$duration" -s "$lua" \
        "http://127.0.0.1:$port" -- "$path" "$n")
      after=$(cpu_ticks "$pid")
      requests=$(awk '/requests in/ { print $1 }' <<<"$out")
      rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
      errors=$(awk '/Non-2xx/ { print $5 " non-2xx" }
        /Socket errors/ { gsub(/,/, ""); n = $4 + $6 + $8 + $10; if (n) print n " socket" }' <<<"$out" | paste -sd' ')
      cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" \
        'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
      [ "$name" = healthz ] && base=$rps
      ratio=$(awk -v r="$rps" -v b="$base" 'BEGIN { printf "%.3f", r / b }')
      rows+=("| $label | $backend | $name | $rps | ${ratio}× | $cpu_us | ${errors:-0} |")
      echo "$label $backend $name: $rps req/s, ${ratio}× healthz, $cpu_us µs API CPU/request" >&2
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
done

echo
echo "wrk -t1 -c$connections for $duration per route, API on core $api_core, client on core $client_core, $products products; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| build | backend | route | req/s | × /healthz | API CPU µs/request | errors |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
