#!/usr/bin/env bash
# Edge benchmark (`make bench-edge`): the built Rust Worker (coalescing clicks into queue messages, and with
# COALESCE_MS=0) against a plain-JavaScript reference Worker doing the same HMAC check and redirect with one queue
# message per click, all in workerd (Miniflare, no wrangler proxy), loaded by wrk in the same run; then the queue
# messages the coalescing Worker sent per click.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -n "${NO_BUILD:-}" ] || bash scripts/build-worker.sh >/dev/null
out="$(mktemp)"
node tests/bench/edge-servers.mjs > "$out" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.1; done
read -r rust each js link < <(python3 -c "import json,sys; d=json.load(open('$out')); print(d['rust'], d['each'], d['js'], d['link'])")
run() {
    local o
    o="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")"
    echo "$1|$(awk '/^Requests\/sec/{print $2}' <<<"$o")|$(awk '$1=="50%"{print $2}' <<<"$o")|$(awk '$1=="99%"{print $2}' <<<"$o")|$(awk '/Non-2xx or 3xx/{print $5}' <<<"$o")"
}
ROUNDS="${ROUNDS:-3}"
echo "==> measuring: $ROUNDS alternating rounds of ${DURATION} per Worker, $CONNECTIONS connections, wrk -t2 (median round shown)"
# each Worker drains its queue backlog after its run; let that finish so it does not slow the next one down
rust_rows=(); each_rows=(); js_rows=()
for _ in $(seq "$ROUNDS"); do
    rust_rows+=("$(run "Rust Worker (tracker-edge, COALESCE_MS=200)" "$rust$link")"); sleep "${SETTLE:-5}"
    js_rows+=("$(run "JavaScript reference Worker" "$js$link")"); sleep "${SETTLE:-5}"
    each_rows+=("$(run "Rust Worker, one message per click (COALESCE_MS=0)" "$each$link")"); sleep "${SETTLE:-5}"
done
median() { printf '%s\n' "$@" | sort -t'|' -k2 -g | sed -n "$(( ($# + 1) / 2 ))p"; }
rust_row="$(median "${rust_rows[@]}")"
each_row="$(median "${each_rows[@]}")"
js_row="$(median "${js_rows[@]}")"
js_rps="$(cut -d'|' -f2 <<<"$js_row")"
rounds() { printf '%s ' "$@" | grep -o '|[0-9.]*|' | tr -d '|' | tr '\n' ' '; }
echo "all rounds, requests/s: Rust $(rounds "${rust_rows[@]}"); Rust one message per click $(rounds "${each_rows[@]}"); JS $(rounds "${js_rows[@]}")"
echo
echo "| worker (workerd via Miniflare) | requests/s | vs JS | p50 | p99 | non-2xx/3xx |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "$js_row" "$each_row" "$rust_row"; do
    IFS='|' read -r name rps p50 p99 err <<<"$r"
    echo "| $name | $rps | $(python3 -c "print(f'{float($rps)/float($js_rps):.2f}x')") | $p50 | $p99 | ${err:-0} |"
done
metric() { curl -s "$rust/metrics" | awk -v m="$1" '$1==m{print $2}'; }
events="$(metric tracker_edge_coalesced_events_total)"
messages="$(metric tracker_edge_coalesced_messages_total)"
echo
echo "Coalescing Worker: $events clicks in $messages queue messages ($(python3 -c "print(f'{$events/max($messages,1):.0f}')") clicks a message, one isolate under load)"
wasm=edge-worker/build/index_bg.wasm
echo
echo "Rust Worker wasm: $(wc -c < $wasm) bytes, $(gzip -9c $wasm | wc -c) bytes gzipped (target: under 409600)"
