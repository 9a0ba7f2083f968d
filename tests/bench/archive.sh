#!/usr/bin/env bash
# The archive's throughput (`make bench-archive`): events/s from the embedded log into the Delta tables (events and
# rollups, exactly-once commits), on the local disk and on a local S3 server (moto), then OPTIMIZE and the data
# file sizes before and after. The baseline, measured in the same run on the same events: DuckDB writing them
# from NDJSON to Parquet partitioned by tenant and date (COPY ... PARTITION_BY), the same job without the log or
# the exactly-once commits.
#
# Built with the `bench-data` profile (optimized, no LTO: a fraction of a release build of the data stack).
# Timings are printed, never asserted: CI does not run this script.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$(dirname "$0")/../.."
EVENTS="${EVENTS:-2000000}"
ensure_duckdb
ensure_moto
work="$(mktemp -d)"
s3_pid=""
cleanup() {
    [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building the archive benchmark (profile bench-data)"
cargo build --profile bench-data -p tracker-archive --bench archive 2>&1 | tail -1
bin=$(ls -t target/bench-data/deps/archive-* | grep -v '\.d$' | head -1)

echo "==> local disk: $EVENTS events"
"$bin" --events "$EVENTS" --ndjson "$work/events.ndjson" | tee "$work/local.txt"

echo "==> DuckDB baseline: the same events from NDJSON to partitioned Parquet"
"$TRACKER_DUCKDB_PYTHON" - "$work/events.ndjson" "$work/duck" <<'PY' | tee "$work/duck.txt"
import sys, time, duckdb
src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads TO 2")
t = time.time()
n = con.execute(f"SELECT count(*) FROM read_json('{src}', format='newline_delimited')").fetchone()[0]
read = time.time() - t
t = time.time()
con.execute(f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited')) TO '{out}' "
            "(FORMAT parquet, PARTITION_BY (tenant, date), COMPRESSION snappy)")
secs = time.time() - t
print(f"duckdb_events={n}")
print(f"duckdb_seconds={secs:.2f}")
print(f"duckdb_events_per_second={n / secs:.0f}")
PY

echo "==> local S3 server (moto): $EVENTS events"
port=19000
"$TRACKER_S3_PYTHON" tests/archive/s3_server.py "$port" >/dev/null 2>&1 &
s3_pid=$!
for _ in $(seq 1 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
done
curl -fs -X PUT "http://127.0.0.1:$port/bench" >/dev/null
AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=auto AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
    AWS_ALLOW_HTTP=true "$bin" --events "$EVENTS" --base s3://bench/lake | tee "$work/s3.txt"

get() { grep "^$2=" "$1" | cut -d= -f2-; }
echo
echo "| path | events | seconds | events/s | vs DuckDB |"
echo "|---|---|---|---|---|"
duck=$(get "$work/duck.txt" duckdb_events_per_second)
for row in "archiver, local disk:$work/local.txt" "archiver, local S3 (moto):$work/s3.txt"; do
    name="${row%%:*}"; f="${row#*:}"
    eps=$(get "$f" archive_events_per_second)
    printf "| %s | %s | %s | %s | %sx |\n" "$name" "$(get "$f" archived_events)" "$(get "$f" archive_seconds)" "$eps" \
        "$(python3 -c "print(round($eps / $duck, 2))")"
done
printf "| DuckDB NDJSON to partitioned Parquet | %s | %s | %s | 1x |\n" "$(get "$work/duck.txt" duckdb_events)" \
    "$(get "$work/duck.txt" duckdb_seconds)" "$duck"
echo
echo "files, local disk:  before OPTIMIZE $(get "$work/local.txt" files_before_optimize)"
echo "                    after OPTIMIZE  $(get "$work/local.txt" files_after_optimize)"
echo "                    rollups         $(get "$work/local.txt" rollup_files_after_optimize)"
echo "files, local S3:    before OPTIMIZE $(get "$work/s3.txt" files_before_optimize)"
echo "                    after OPTIMIZE  $(get "$work/s3.txt" files_after_optimize)"
echo "maintenance (retention, OPTIMIZE, checkpoint, VACUUM): local $(get "$work/local.txt" maintenance_seconds) s, S3 $(get "$work/s3.txt" maintenance_seconds) s"
