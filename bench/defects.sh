#!/usr/bin/env bash
# Defect run: generate a set with corrupted rows at known lines (default 1% at ~1M reviews),
# import it into SQLite and PostgreSQL, and check that exactly the clean rows were loaded and
# that the reject report lists every defect by file, line and class — the generator's
# manifest, no more and no less.
#
#   bench/defects.sh [PRODUCTS] [RATE]       # default 174000 products (~1.0M reviews), 0.01
#
# Needs python3 (to read both CSV reports) and, for the second backend, PostgreSQL at
# $PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

products=${1:-174000}
rate=${2:-0.01}
pg_admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
work=${BENCH_DIR:-target/bench-api}/defects-$products
rm -rf "$work"
mkdir -p "$work"

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews
bin=target/release/reviews

"$bin" generate --out "$work/data" --products "$products" --seed 11 --defects "$rate" |
  tee "$work/generate.txt"

check() { # name url
  echo "=== import into $1 ==="
  # The defects are deliberate, so any number of rejects is allowed (otherwise the importer
  # exits 3); the check below holds the rejects to the manifest, row by row.
  "$bin" import --quiet --max-rejects 100% --database-url "$2" --dir "$work/data" \
    --rejects "$work/rejects-$1.csv" |
    tee "$work/import-$1.txt"
  python3 - "$work/generate.txt" "$work/import-$1.txt" "$work/data/defects.csv" \
    "$work/rejects-$1.csv" <<'PY'
import collections, csv, sys

def counts(path, column):
    # The summary tables: file name, then grouped numbers ("1,234,567").
    out = {}
    for line in open(path):
        parts = line.split()
        if parts and parts[0].endswith(".csv"):
            out[parts[0]] = int(parts[column].replace(",", ""))
    return out

clean = counts(sys.argv[1], 2)
loaded = counts(sys.argv[2], 2)
manifest = collections.Counter(
    (r["file"], int(r["line"]), r["class"]) for r in csv.DictReader(open(sys.argv[3])))
rejects = collections.Counter(
    (r["file"], int(r["line"]), r["class"]) for r in csv.DictReader(open(sys.argv[4])))
ok = True
for f, n in clean.items():
    status = "ok" if loaded.get(f) == n else "MISMATCH"
    ok &= status == "ok"
    print(f"  {f:28} clean {n:>10,}  loaded {loaded.get(f, 0):>10,}  {status}")
missing, extra = manifest - rejects, rejects - manifest
by_class = collections.Counter(c for (_, _, c) in manifest.elements())
print(f"  defects in manifest {sum(manifest.values()):,}, rejects reported {sum(rejects.values()):,}, "
      f"missing {sum(missing.values())}, unexpected {sum(extra.values())}")
print("  by class: " + ", ".join(f"{c} {n:,}" for c, n in sorted(by_class.items())))
for item in list(missing)[:5]:
    print("  missing:", item)
for item in list(extra)[:5]:
    print("  unexpected:", item)
ok &= not missing and not extra
print("  RESULT:", "exactly the clean rows loaded, every defect reported" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
}

check sqlite "sqlite://$work/defects.db"
if psql "$pg_admin" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  db="reviews_defects_$products"
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db" -qc "CREATE DATABASE $db"
  check postgres "${pg_admin%/*}/$db"
else
  echo "PostgreSQL not reachable at $pg_admin: SQLite only" >&2
fi
