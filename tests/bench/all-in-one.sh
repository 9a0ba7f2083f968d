#!/usr/bin/env bash
# The all-in-one node under sustained ingest (`make bench-all-in-one`, and the last table of `make bench`): a
# fresh node on the embedded defaults (every consumer in-process, the archive in DATA_DIR), offered each rate of
# RATES (events/s, default 250,000, 100,000 and 50,000) to POST /batch for DURATION_SECS (20) seconds, the hot
# tier's lag sampled once a second (tests/bench/all_in_one.py). The node's own acknowledged ingest is the same-run
# baseline. Each rate runs on a fresh node, ROUNDS (1) times, the rates alternating. BIN names a built node (else
# the release build). Timings are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/node.sh
RATES="${RATES:-250000 100000 50000}"
SECONDS_EACH="${DURATION_SECS:-20}"
ROUNDS="${ROUNDS:-1}"
CONNECTIONS="${CONNECTIONS:-8}"
CATCH_UP="${CATCH_UP:-120}"
PORT_BASE=13040
work="$(mktemp -d)"
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && { kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${BIN:-}" ]; then
    echo "==> building the core node (release)"
    cargo build --release -p tracker-core 2>&1 | tail -1
fi
bin="${BIN:-${CARGO_TARGET_DIR:-target}/release/tracker-core}"

echo
echo "all-in-one node (ingest, filter, stats, webhooks, archiver in one process), sustained /batch load:"
echo
echo "| offered | acknowledged events/s (baseline) | into the hot tier, events/s | lag at the load's end (events) | lag growth over the second half | catch-up after the load | peak RSS | non-200 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
n=0
for _ in $(seq "$ROUNDS"); do
    for rate in $RATES; do
        n=$((n + 1))
        port=$((PORT_BASE + n))
        export DATA_DIR="$work/node-$n" PORT=$port PUBLIC_URL="http://127.0.0.1:$port" RUST_LOG=warn
        export ADMIN_TOKEN="bench-admin-$(openssl rand -hex 16)"
        bench_node "$bin" "$port" enterprise
        python3 tests/bench/all_in_one.py "$port" "$token" "$api_key" "$node_pid" "$rate" "$SECONDS_EACH" \
            "$CONNECTIONS" "$CATCH_UP" 2>"$work/samples-$n.txt"
        kill "$node_pid" && wait "$node_pid" 2>/dev/null || true
        node_pid=""
        rm -rf "$DATA_DIR"
    done
done
echo
for f in "$work"/samples-*.txt; do cat "$f"; done
echo "machine: $(nproc) cores, $(uname -sr); the load generator shares them with the node"
