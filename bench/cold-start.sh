#!/usr/bin/env bash
# The seed's own test from a cold start: `reviews up` on an empty data directory (demo data
# generated and imported, two API processes on SQLite, the edge in front), then the original's
# 7,000 requests/s random-id run for 60 s, reporting every second: requests, failures, p99 and
# the edge's hit ratio (sampled from its /metrics each second). With RELOAD_AT=30 the edge is
# reloaded (`reviews proxy --reload`, the cache handed over) at second 30 of the run.
#
#   bench/cold-start.sh                  # cold start, 60 s
#   RELOAD_AT=30 bench/cold-start.sh     # the same with a zero-downtime reload at second 30
#
# Knobs: DURATION (60s) SCENARIO (reviews-random50k-7k) RELOAD_AT (off) PORT (28080)
# BIN (a prebuilt `reviews` binary to run instead of building this tree)
# Everything (load tester, edge, both API processes) shares this machine's cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-60s}
SCENARIO=${SCENARIO:-reviews-random50k-7k}
RELOAD_AT=${RELOAD_AT:-}
PORT=${PORT:-28080}
ADMIN=$((PORT + 10))
API_PORT=$((PORT + 20))
WORK="$ROOT/target/bench-cold"
if [ -n "${BIN:-}" ]; then
    # A prebuilt binary: two builds compared back to back without a rebuild between them.
    [ -x "$BIN" ] || { echo "BIN=$BIN is not an executable" >&2; exit 1; }
else
    BIN="$ROOT/target/release/reviews"
    echo "building (release)…" >&2
    (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews)
fi

rm -rf "$WORK" && mkdir -p "$WORK"
"$BIN" up --db "$WORK/data/reviews.db" --port "$PORT" --admin-port "$ADMIN" --api-port "$API_PORT" \
    >"$WORK/up.log" 2>&1 &
UP=$!
SAMPLER=
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    kill -TERM "$UP" 2>/dev/null || true
    wait "$UP" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    grep -q "Ctrl-C stops everything" "$WORK/up.log" && break
    if ! kill -0 "$UP" 2>/dev/null; then cat "$WORK/up.log" >&2; exit 1; fi
    sleep 0.5
done
echo "stack is up (demo data generated and imported into an empty database)" >&2

# The edge's cache counters, once a second, with the time they were read.
(
    while true; do
        printf '%s ' "$(date +%s.%N)"
        curl -s "http://127.0.0.1:$ADMIN/metrics" |
            awk '/^edge_cache_requests_total\{/ { sub(/.*cache_status="/, ""); sub(/"\}/, ""); printf "%s=%s ", $1, $2 }'
        echo
        sleep 1
    done
) >"$WORK/cache.samples" &
SAMPLER=$!

if [ -n "$RELOAD_AT" ]; then
    (sleep "$RELOAD_AT" && "$BIN" proxy --config "$WORK/data/edge.toml" --reload >"$WORK/reload.log" 2>&1 &&
        echo "reloaded at ${RELOAD_AT}s" >&2) &
fi

START=$(date +%s.%N)
"$BIN" load --url "http://127.0.0.1:$PORT" --scenario "$SCENARIO" --duration "$DURATION" \
    --json "$WORK/report.json" >"$WORK/load.txt" 2>&1 || true
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=
tail -n 25 "$WORK/load.txt"

python3 - "$WORK/report.json" "$WORK/cache.samples" "$START" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
start = float(sys.argv[3])
samples = []
for line in open(sys.argv[2]):
    parts = line.split()
    if not parts:
        continue
    t = float(parts[0]) - start
    counts = dict(p.split("=") for p in parts[1:] if "=" in p)
    samples.append((t, {k: float(v) for k, v in counts.items()}))

def ratio_in(second):
    # The counters' change over the sampled interval that covers this second best.
    before = [s for s in samples if s[0] <= second]
    after = [s for s in samples if s[0] >= second + 1]
    if not before or not after:
        return None
    a, b = before[-1][1], after[0][1]
    d = {k: b.get(k, 0) - a.get(k, 0) for k in b}
    if any(v < 0 for v in d.values()):
        # The two samples came from different processes (a reload's handover): no ratio.
        return None
    total = sum(d.values())
    return d.get("hit", 0) / total if total else None

s = report["summary"]
print()
print(f"run: {report['plan']['scenario']}: {s['scheduled']} scheduled, {s['ok']} ok")
print("| second | scheduled | ok | failed | p99 ms | hit ratio |")
print("|---|---|---|---|---|---|")
for sec in report["timeline"]:
    r = ratio_in(sec["second"])
    p99 = sec.get("p99_ms")
    print(f"| {sec['second']} | {sec['scheduled']} | {sec['ok']} | {sec['failed'] + sec['dropped']} | "
          f"{'-' if p99 is None else f'{p99:.1f}'} | {'-' if r is None else f'{r:.1%}'} |")
PY
