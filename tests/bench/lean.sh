#!/usr/bin/env bash
# `make bench-lean`: the core node with every feature (what `make dev` runs) against the lean production node
# (`--no-default-features`: no Iggy client, archiver, query engines or importer), in the same run:
#
#   crates linked     cargo tree -e normal
#   binary size       the release binary
#   redirects/s       wrk on GET /t (a v2 signed link), CONSUMERS=off as in production
#   peak RSS          VmHWM of the node after its redirect rounds
#
# Each variant is built in a target directory of its own (FULL_TARGET_DIR, LEAN_TARGET_DIR: switching features in
# one would rebuild both every time). Rounds alternate the variants; medians and ranges are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
PORT=13031
full_dir="${FULL_TARGET_DIR:-target/bench-full}"
lean_dir="${LEAN_TARGET_DIR:-target/bench-lean}"
work="$(mktemp -d)"
node=""
cleanup() {
    [ -n "$node" ] && kill "$node" 2>/dev/null && wait "$node" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
echo "==> building both variants (release)"
CARGO_TARGET_DIR="$full_dir" cargo build --release -p tracker-core 2>&1 | tail -1
CARGO_TARGET_DIR="$lean_dir" cargo build --release -p tracker-core --no-default-features 2>&1 | tail -1
crates() { cargo tree -p tracker-core -e normal --prefix none "$@" | sed 's/ (\*)//' | sort -u | wc -l; }

# one round of one variant: a fresh node, a signed link, wrk; prints "requests/s peak-RSS-kB"
round() {
    local bin="$1/release/tracker-core" dir="$work/$2-$3"
    export DATA_DIR="$dir" PORT PUBLIC_URL="http://127.0.0.1:$PORT" RUST_LOG=warn CONSUMERS=off ARCHIVE_URL=off
    "$bin" tenant create --name bench --prefix bench --plan enterprise >/dev/null
    local click
    click="$("$bin" link sign bench https://example.com/landing --param campaign=bench | sed "s|$PUBLIC_URL||")"
    "$bin" serve >/dev/null 2>&1 &
    node=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
    local rps
    rps="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$PORT$click" | awk '/^Requests\/sec/{print $2}')"
    echo "$rps $(awk '/VmHWM/{print $2}' "/proc/$node/status")"
    kill "$node" && wait "$node" 2>/dev/null || true
    node=""
}

echo "==> measuring ($ROUNDS rounds of ${DURATION}, alternating)"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="full lean"; else order="lean full"; fi
    for v in $order; do
        if [ "$v" = full ]; then dir="$full_dir"; else dir="$lean_dir"; fi
        echo "$v $(round "$dir" "$v" "$r")" >> "$work/rounds"
    done
done

python3 - "$work/rounds" "$full_dir" "$lean_dir" "$(crates)" "$(crates --no-default-features)" <<'PY'
import os, statistics, sys
path, full_dir, lean_dir, full_crates, lean_crates = sys.argv[1:]
rounds = {}
for line in open(path):
    v, rps, rss = line.split()
    rounds.setdefault(v, []).append((float(rps), int(rss) / 1024))
print("\n| node | crates linked | binary | redirects/s: median (range) | peak RSS: median (range) |")
print("|---|---:|---:|---:|---:|")
for v, crates, d in (("full (default features)", full_crates, full_dir), ("lean (--no-default-features)", lean_crates, lean_dir)):
    rs = rounds[v.split()[0]]
    size = os.path.getsize(f"{d}/release/tracker-core") / 1e6
    rps, rss = [r[0] for r in rs], [r[1] for r in rs]
    print(f"| {v} | {crates} | {size:.1f} MB | {statistics.median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) "
          f"| {statistics.median(rss):.0f} MB ({min(rss):.0f}-{max(rss):.0f}) |")
PY
echo "machine: $(nproc) cores, $(uname -sr); wrk and the node share the cores"
