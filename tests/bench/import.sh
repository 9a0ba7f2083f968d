#!/usr/bin/env bash
# History import (`make bench-import`): `tracker-core import` of an NDJSON file of EVENTS events (20 tenants) into
# the embedded event log, each event checked as `/batch` checks it, appended durably (fsync) in chunks with their
# idempotency keys and recorded positions. The baseline, measured in the same run on the same file: DuckDB reading
# the NDJSON into a table (read_json, two threads), parsing and nothing else.
#
# Rounds alternate between the two (ROUNDS, default 3); the table gives medians and ranges. Built with the
# `bench-data` profile (optimized, no LTO). Timings are printed, never asserted: CI does not run this script.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$(dirname "$0")/../.."
EVENTS="${EVENTS:-2000000}"
ROUNDS="${ROUNDS:-3}"
ensure_duckdb
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> building tracker-core (profile bench-data)"
cargo build --profile bench-data -p tracker-core --bin tracker-core 2>&1 | tail -1
bin=target/bench-data/tracker-core

echo "==> $EVENTS events of 20 tenants as NDJSON"
python3 - "$work/events.ndjson" "$EVENTS" <<'PY'
import json, random, sys, uuid
path, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
t0 = 1_767_225_600_000  # 2026-01-01
with open(path, "w") as f:
    for i in range(n):
        e = {
            "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "event_type": ("click", "impression", "postback", "pageview")[i % 4],
            "key_prefix": f"t{i % 20:02d}",
            "timestamp": t0 + i * 7,
            "ip": f"203.0.113.{i % 250}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            "params": {"campaign": f"c{i % 97}", "sub1": f"s{i % 13}", "click_id": f"{i:x}"},
        }
        f.write(json.dumps(e, separators=(",", ":")) + "\n")
PY
echo "    $(du -h "$work/events.ndjson" | cut -f1)"

duck_round() {
    "$TRACKER_DUCKDB_PYTHON" - "$work/events.ndjson" <<'PY'
import sys, time, duckdb
con = duckdb.connect()
con.execute("SET threads TO 2")
t = time.time()
con.execute(f"CREATE TABLE t AS SELECT * FROM read_json('{sys.argv[1]}', format='newline_delimited')")
secs = time.time() - t
n = con.execute("SELECT count(*) FROM t").fetchone()[0]
print(f"{n} {secs:.3f}")
PY
}

import_round() {
    local data="$work/data-$1"
    rm -rf "$data"
    for t in $(seq -f 't%02g' 0 19); do
        DATA_DIR="$data" RUST_LOG=error "$bin" tenant create --name "$t" --prefix "$t" >/dev/null
    done
    local start end
    start=$(date +%s.%N)
    DATA_DIR="$data" RUST_LOG=error "$bin" import "$work/events.ndjson" --quiet --rejects "$work/rejects-$1" >"$work/import-$1.txt"
    end=$(date +%s.%N)
    local imported
    imported=$(grep -o '[0-9]* events imported' "$work/import-$1.txt" | cut -d' ' -f1)
    local stored
    stored=$(DATA_DIR="$data" RUST_LOG=error "$bin" log count | tail -1 | grep -o '[0-9]*')
    [ "$imported" = "$EVENTS" ] && [ "$stored" = "$EVENTS" ] || { echo "imported $imported, stored $stored of $EVENTS" >&2; exit 1; }
    echo "$imported $(python3 -c "print(f'{$end - $start:.3f}')")"
    rm -rf "$data"
}

: >"$work/duck.txt"
: >"$work/import.txt"
for r in $(seq 1 "$ROUNDS"); do
    echo "==> round $r"
    duck_round | tee -a "$work/duck.txt"
    import_round "$r" | tee -a "$work/import.txt"
done

python3 - "$work/import.txt" "$work/duck.txt" "$EVENTS" <<'PY'
import statistics, sys
def rates(path):
    rows = [l.split() for l in open(path) if l.strip()]
    return [int(n) / float(s) for n, s in rows], [float(s) for _, s in rows]
imp, imp_s = rates(sys.argv[1])
duck, duck_s = rates(sys.argv[2])
med = statistics.median
print()
print(f"| {int(sys.argv[3]):,} events (NDJSON) | seconds (median) | events/s (median) | range | vs DuckDB |")
print("|---|---:|---:|---|---:|")
print(f"| tracker-core import into the embedded log (durable) | {med(imp_s):.2f} | {med(imp):,.0f} | {min(imp):,.0f} to {max(imp):,.0f} | {med(imp) / med(duck):.2f}x |")
print(f"| DuckDB read_json into a table | {med(duck_s):.2f} | {med(duck):,.0f} | {min(duck):,.0f} to {max(duck):,.0f} | 1x |")
PY
