#!/usr/bin/env bash
# Producer throughput on Apache Iggy (`make bench-iggy`): the same 1,000-event /batch load against a core node on
# the embedded log (the baseline, same run) and a core node writing to the Iggy server at IGGY_TEST_ADDR (an Iggy
# connection string, e.g. iggy://iggy:iggy@127.0.0.1:8090 for `docker run apache/iggy`). Timings are printed,
# never asserted. Without IGGY_TEST_ADDR it says so and exits.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${IGGY_TEST_ADDR:-}" ]; then
    echo "IGGY_TEST_ADDR is not set: no Iggy server to measure (see the README's Apache Iggy section)"
    exit 0
fi
DURATION="${DURATION:-10s}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
echo "==> building the core node (release)"
cargo build --release -p tracker-core 2>&1 | tail -1
bin=target/release/tracker-core

python3 - "$work/batch.json" <<'PY'
import json, sys
ev = {"event_type": "purchase", "ip": "203.0.113.1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
      "params": {"sub1": "google_search", "campaign_id": "camp_8821", "order_id": "o-123456", "amount": "19.99"}}
json.dump([ev] * 1000, open(sys.argv[1], "w"))
PY

# start NAME PORT [env...]: a node with its own data, a tenant and a token (in $work/NAME.token)
start() {
    local name=$1 port=$2; shift 2
    mkdir -p "$work/$name"
    env DATA_DIR="$work/$name" RUST_LOG=warn "$@" $bin tenant create --name bench --prefix bench --plan enterprise >/dev/null
    env DATA_DIR="$work/$name" RUST_LOG=warn "$@" $bin token create bench | awk '/^token /{print $2}' > "$work/$name.token"
    env DATA_DIR="$work/$name" PORT="$port" RUST_LOG=warn "$@" $bin serve > "$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
}
measure() {
    local token=$1 port=$2
    cat > "$work/batch-$port.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/batch.json"); wrk.body = f:read("*a"); f:close()
LUA
    wrk -t2 -c8 -d"$DURATION" -s "$work/batch-$port.lua" "http://127.0.0.1:$port/batch" | awk '/^Requests\/sec/{print $2}'
}
stream="bench$(date +%s)"
start embedded 13041
start iggy 13042 IGGY_URL="$IGGY_TEST_ADDR" IGGY_STREAM="$stream"
embedded_token="$(cat "$work/embedded.token")"
iggy_token="$(cat "$work/iggy.token")"
sleep 2
echo "==> measuring (${DURATION} each, wrk -t2 -c8, 1,000-event batches)"
e="$(measure "$embedded_token" 13041)"
i="$(measure "$iggy_token" 13042)"
spooled="$(curl -s http://127.0.0.1:13042/health/broker | python3 -c 'import json,sys; print(json.load(sys.stdin).get("spooled_events"))')"
echo
echo "| log | batches/s | events/s | vs embedded |"
echo "|---|---:|---:|---:|"
echo "| embedded (fjall) | $e | $(python3 -c "print(f'{float($e)*1000:,.0f}')") | 1.00x |"
echo "| Apache Iggy (${IGGY_TEST_ADDR##*@}, stream $stream) | $i | $(python3 -c "print(f'{float($i)*1000:,.0f}')") | $(python3 -c "print(f'{float($i)/float($e):.2f}x')") |"
echo
echo "events left in the Iggy node's spool at the end: $spooled (0 means Iggy took everything directly)"
