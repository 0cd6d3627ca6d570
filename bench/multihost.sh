#!/usr/bin/env bash
# Two edges on hosts of their own (deploy/netns/hosts.sh: network namespaces on one bridge),
# four API processes on two API hosts, PostgreSQL and Redis on theirs, `reviews load` on the
# client host. Two runs, each split evenly over both edges:
#   1. the seed's random-id run: GET /reviews, ids uniform over the products;
#   2. the same with 1% writes (POST /reviews), whose purges cross to the other edge.
# Reports per edge: error rate, p99, hit ratio; and the purge lag (publication on one edge to
# application on the other) p50 / p99 during run 2, from edge_invalidation_lag_seconds, and how
# long each write's answer was held until the other edge had applied its purge
# (edge_invalidation_confirm_seconds, with the confirmations' outcomes).
#
#   sudo bench/multihost.sh                       # 7,000 requests/s for 30 s each
#   RATE=2000 DURATION=60s sudo bench/multihost.sh
#
# Knobs: REVIEWS_BIN (a binary to use instead of building one), RATE (7000, total) DURATION (30s) PRODUCTS (50000) ID (rvb) NET (10.78.0)
# LATENCY (off; e.g. 1ms of netem delay on every host's link).
# All seven hosts, the load generator included, share this machine's cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-7000}
DURATION=${DURATION:-30s}
PRODUCTS=${PRODUCTS:-50000}
export ID=${ID:-rvb} NET=${NET:-10.78.0}
WORK="$ROOT/target/bench-multihost"
HOSTS="$ROOT/deploy/netns/hosts.sh"

if [ -z "${REVIEWS_BIN:-}" ]; then
  echo "building (release)…" >&2
  (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews)
fi
export REVIEWS_BIN=${REVIEWS_BIN:-$ROOT/target/release/reviews}
mkdir -p "$WORK"
if [ ! -f "$WORK/data-$PRODUCTS/reviews.csv" ]; then
  echo "generating $PRODUCTS products…" >&2
  "$REVIEWS_BIN" generate --out "$WORK/data-$PRODUCTS" --products "$PRODUCTS" --seed 42 >/dev/null
fi
# PostgreSQL (its own user) keeps its cluster here.
HOSTDIR=$(mktemp -d /tmp/reviews-multihost.XXXXXX)
chmod 755 "$HOSTDIR"
trap '"$HOSTS" down "$HOSTDIR"; rm -rf "$HOSTDIR"' EXIT
echo "building the hosts and importing…" >&2
DATA="$WORK/data-$PRODUCTS" "$HOSTS" up "$HOSTDIR" >&2

# The purge series of both edges: lag and confirmation histograms, confirmation outcomes.
lag_buckets() {
  for e in 21 22; do
    ip netns exec "$ID-client" curl -s "http://$NET.$e:9090/metrics" |
      grep -E '^edge_invalidation_(lag_seconds_bucket|confirm_seconds_bucket|confirmations_total)'
  done
}

# run NAME TARGETS SEED: both edges at RATE/2 each, at once. Each run and edge draws its own
# ids (a run repeating the last one's ids would find every page cached).
run() {
  local name=$1 targets=$2 seed=$3 e
  for e in 1 2; do
    ip netns exec "$ID-client" "$REVIEWS_BIN" load --url "http://$NET.2$e:8080" \
      --rate $((RATE / 2)) --duration "$DURATION" --targets "$targets" \
      --ids "uniform:1..$PRODUCTS" --seed "$((seed + e))" --quiet \
      --edge-metrics "http://$NET.2$e:9090/metrics" \
      --json "$WORK/$name-edge-$e.json" >"$WORK/$name-edge-$e.txt" 2>&1 &
  done
  wait
}

# LATENCY=1ms: netem delay on every host's link, when the kernel has sch_netem.
if [ -n "${LATENCY:-}" ]; then
  for h in db redis api-1 api-2 edge-1 edge-2 client; do
    ip netns exec "$ID-$h" tc qdisc add dev eth0 root netem delay "$LATENCY" 2>/dev/null || {
      echo "netem is not available on this kernel: running without added latency" >&2
      break
    }
  done
fi

echo "run 1: random ids, reads only…" >&2
run random list=1 0
lag_buckets >"$WORK/lag-before"
echo "run 2: random ids, 1% writes…" >&2
run writes list=99,post=1 10
lag_buckets >"$WORK/lag-after"

python3 - "$WORK" "$RATE" "$DURATION" <<'PY'
import json, sys, collections
work, rate, duration = sys.argv[1:4]
print(f"{rate} requests/s for {duration}, split over two edges; all hosts share this machine's cores")
print("| run | edge | scheduled | error rate | p99 | hit ratio |")
print("|---|---|---|---|---|---|")
for name, label in [("random", "random ids"), ("writes", "random ids, 1% writes")]:
    for e in (1, 2):
        r = json.load(open(f"{work}/{name}-edge-{e}.json"))
        s, lat, edge = r["summary"], r["latency"]["scheduled"], r.get("edge") or {}
        hit = edge.get("hit_ratio")
        print(f"| {label} | edge-{e} | {s['scheduled']:,} | {s['error_rate']*100:.2f}% | "
              f"{lat['p99_ms']:.1f} ms | {'' if hit is None else f'{hit*100:.1f}%'} |")

def buckets(path, series):
    acc = collections.defaultdict(float)
    for line in open(path):
        if not line.startswith(series + "{"):
            continue
        le = line.split('le="')[1].split('"')[0]
        acc[float("inf") if le == "+Inf" else float(le)] += float(line.rsplit(" ", 1)[1])
    return acc
def quantiles(series):
    before = buckets(f"{work}/lag-before", series)
    after = buckets(f"{work}/lag-after", series)
    cum = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = cum[-1][1] if cum else 0.0
    def q(p):
        # Linear within the bucket, as Prometheus's histogram_quantile does.
        rank, lo, below = p * total, 0.0, 0.0
        for le, n in cum:
            if n >= rank:
                return lo + (le - lo) * ((rank - below) / max(n - below, 1e-9)) if le != float("inf") else lo
            lo, below = le, n
        return lo
    return total, q
total, q = quantiles("edge_invalidation_lag_seconds_bucket")
print(f"purge lag over {int(total)} purges applied on the other edge: "
      f"p50 {q(0.5)*1000:.2f} ms, p99 {q(0.99)*1000:.2f} ms")
total, q = quantiles("edge_invalidation_confirm_seconds_bucket")
outcomes = collections.defaultdict(float)
for path, sign in ((f"{work}/lag-after", 1), (f"{work}/lag-before", -1)):
    for line in open(path):
        if line.startswith("edge_invalidation_confirmations_total{"):
            outcomes[line.split('result="')[1].split('"')[0]] += sign * float(line.rsplit(" ", 1)[1])
if total:
    print(f"write answers held for the other edge: {int(total)} writes, "
          f"p50 {q(0.5)*1000:.2f} ms, p99 {q(0.99)*1000:.2f} ms; outcomes "
          + ", ".join(f"{k} {int(v)}" for k, v in sorted(outcomes.items())))
PY
