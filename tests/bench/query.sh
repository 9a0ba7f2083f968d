#!/usr/bin/env bash
# Query latency (`make bench-query`): the cold tier (DataFusion over the archive's `events` Delta table) and the
# warm tier (Polars over its `rollups` table) against DuckDB asking the same questions over the same Delta tables
# (its `delta` extension, the same Parquet files), in the same run, 2 threads each, median of 5 runs. The archive:
# EVENTS (10,000,000) events of 8 tenants over 30 days, archived once into BENCH_DIR and reused after; the
# questions are one tenant's (1,250,000 events).
#
# Then the Lambda function: `cargo lambda build --profile function` (LAMBDA=0 skips it; the build of the data stack
# with whole-program LTO takes about 40 minutes on 2 cores), its binary and zip sizes, and its cold start from
# process start to the first answer against a Lambda Runtime API (tests/bench/runtime_api.py).
#
# Built with the `bench-data` profile (optimized, no LTO). Timings are printed, never asserted: CI does not run this.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$(dirname "$0")/../.."
EVENTS="${EVENTS:-10000000}"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/tracker/bench-query-$EVENTS}"
ensure_duckdb
mkdir -p "$BENCH_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> building the query benchmark (profile bench-data)"
cargo build --profile bench-data -p tracker-query --bench query 2>&1 | tail -1
bin=$(ls -t target/bench-data/deps/query-* | grep -v '\.d$' | head -1)

echo "==> ours: $EVENTS events in $BENCH_DIR (built once)"
"$bin" --events "$EVENTS" --dir "$BENCH_DIR" | tee "$work/ours.txt"
lake=$(sed -n 's/^lake=//p' "$work/ours.txt")
read -r tenant from to < <(sed -n 's/^tenant=\([^ ]*\) from=\([0-9]*\) to=\([0-9]*\)$/\1 \2 \3/p' "$work/ours.txt")

echo "==> DuckDB $("$TRACKER_DUCKDB_PYTHON" -c 'import duckdb; print(duckdb.__version__)'): the same questions over the same tables"
"$TRACKER_DUCKDB_PYTHON" tests/bench/query_duckdb.py "$lake" "$tenant" "$from" "$to" | tee "$work/duck.txt"

echo
echo "| query | tier | ours (ms) | DuckDB (ms) | ratio | ours | DuckDB |"
echo "|---|---|---:|---:|---:|---|---|"
worst=0
while read -r name tier ms rest; do
    [[ "$name" == lake=* || "$name" == tenant=* ]] && continue
    ours_digest=$(echo "$rest" | sed 's/ scanned=.*//')
    duck=$(grep "^$name duckdb " "$work/duck.txt" || true)
    dms=$(echo "$duck" | awk '{print $3}')
    ddigest=$(echo "$duck" | cut -d' ' -f4-)
    ratio=$(awk -v a="$ms" -v b="$dms" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    worst=$(awk -v a="$ms" -v b="$dms" -v w="$worst" 'BEGIN { r = (b > 0) ? a / b : 0; print (r > w) ? r : w }')
    echo "| $name | $tier | $ms | $dms | $ratio | $ours_digest | $ddigest |"
done < "$work/ours.txt"
echo
echo "slowest against DuckDB: $(printf '%.2f' "$worst")x (target: no query slower than 1.5x)"

if [ "${LAMBDA:-1}" = "1" ]; then
    echo
    echo "==> the Lambda function: cargo lambda build --profile function"
    ensure_cargo_lambda
    cargo lambda build --profile function -p tracker-query --bin tracker-query-lambda 2>&1 | tail -2
    # the profile strips it already; strip again in case a cargo-lambda version adds its own sections
    fn="$work/bootstrap"
    strip --strip-all -o "$fn" target/lambda/tracker-query-lambda/bootstrap
    (cd "$work" && python3 -c 'import zipfile; z = zipfile.ZipFile("fn.zip", "w", zipfile.ZIP_DEFLATED); z.write("bootstrap"); z.close()')
    echo "binary: $(wc -c < target/lambda/tracker-query-lambda/bootstrap) bytes as built, $(wc -c < "$fn") stripped," \
        "$(wc -c < "$work/fn.zip") zipped (Lambda's limits: 50 MB zipped for a direct upload, 250 MB unzipped)"
    ARCHIVE_URL="$lake" QUERY_SECRET="bench-query-secret-0123456789" \
        "$TRACKER_DUCKDB_PYTHON" tests/bench/runtime_api.py "$fn" "$tenant" "$from" "$to"
fi
