#!/usr/bin/env bash
# Benchmarks of the core node against nginx on the same machine, in the same run (`make bench`).
#
#   nginx `return 307`          the HTTP baseline
#   core  GET /t  (v2 signed)   verify HMAC, mint a UUIDv7, build the redirect, hand the click to the log
#   core  GET /p  (postback)    answered only after the event is fsynced
#   core  GET /i  (pixel)       GIF, event durable within the commit window
#   core  POST /batch           1,000-event JSON batches, acknowledged after fsync
#   core  GET /api/links        the platform API: key lookup by hash, rate limit, a page of 50 links with counts,
#                               each link signed (nginx serving a static JSON of the same size is its baseline)
#   consumers                   filter + stats + webhook queue in-process: events/s from the raw log to the hot tier,
#                               on an overage plan and on a hard-capped one (metering and the cap on both)
#   all-in-one                  tests/bench/all-in-one.sh: a steady /batch rate with every consumer in-process,
#                               the hot tier's lag over the run
#
# The ingest rows run the node with CONSUMERS=off, as production does (consumers are processes of their own, on
# other machines); the consumers are measured on their own afterwards, in-process as in the embedded default.
#
# Every row runs ROUNDS times (3), the rows alternating within a round, and prints its median and range: one noisy
# moment moves one sample, not the result. wrk and the servers share this machine's cores, exactly as nginx and
# the node do. Timings are printed, never asserted: CI does not run this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/node.sh
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
NGINX_PORT=18080
CORE_PORT=13030
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "==> installing nginx and wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
echo "==> building the core node (release)"
cargo build --release -p tracker-core 2>&1 | tail -1
bin="${CARGO_TARGET_DIR:-target}/release/tracker-core"

export DATA_DIR="$work/data" PORT=$CORE_PORT PUBLIC_URL="http://127.0.0.1:$CORE_PORT" RUST_LOG=warn
export ADMIN_TOKEN="bench-admin-$(openssl rand -hex 16)"
$bin tenant create --name bench --prefix bench --plan enterprise >/dev/null
token="$($bin token create bench | awk '/^token /{print $2}')"
click="$($bin link sign bench https://example.com/landing --param campaign=bench --param sub1=wrk | sed "s|http://127.0.0.1:$CORE_PORT||")"

cat > "$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /t { add_header Cache-Control no-store; return 307 "https://example.com/landing?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"; }
        location = /links.json { root $work; default_type application/json; }
    }
}
CONF
nginx -c "$work/nginx.conf"

CONSUMERS=off $bin serve &
pids+=($!)
core_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$CORE_PORT/health" >/dev/null && break; sleep 0.1; done
curl -sf -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CORE_PORT$click" | grep -q 307 || { echo "the signed link does not redirect"; exit 1; }

# the API: a tenant whose limit wrk cannot reach, 50 links, and the same answer as a static file for nginx
api_key="$(curl -sf -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
    -d '{"name":"api","key_prefix":"apibench","plan":"enterprise","limits":{"api_requests_per_minute":1000000}}' \
    "http://127.0.0.1:$CORE_PORT/api/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"]["secret"])')"
for i in $(seq 50); do
    curl -sf -o /dev/null -H "authorization: Bearer $api_key" -H 'content-type: application/json' \
        -d "{\"destination\":\"https://shop.example/p/$i?utm_source=bench\"}" "http://127.0.0.1:$CORE_PORT/api/links"
done
curl -sf -H "authorization: Bearer $api_key" "http://127.0.0.1:$CORE_PORT/api/links?limit=50" > "$work/links.json"
chmod 755 "$work" && chmod 644 "$work/links.json"  # nginx workers run as another user
cat > "$work/api.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $api_key"
LUA

python3 - "$work/batch.json" <<'PY'
import json, sys
ev = {"event_type": "purchase", "ip": "203.0.113.1",
      "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
      "params": {"sub1": "google_search", "campaign_id": "camp_8821", "order_id": "o-123456", "amount": "19.99"}}
json.dump([ev] * 1000, open(sys.argv[1], "w"))
PY
cat > "$work/batch.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/batch.json"); wrk.body = f:read("*a"); f:close()
LUA

# run NAME URL [extra wrk args...]: prints "rps p50 p99"
run() {
    local out
    out="$(wrk -t2 -c"$3" -d"$DURATION" --latency "${@:4}" "$2")"
    local rps p50 p99 errors
    rps="$(awk '/^Requests\/sec/{print $2}' <<<"$out")"
    p50="$(awk '$1=="50%"{print $2}' <<<"$out")"
    p99="$(awk '$1=="99%"{print $2}' <<<"$out")"
    errors="$(awk '/Non-2xx or 3xx/{print $5}' <<<"$out")"
    echo "$1|$rps|$p50|$p99|${errors:-0}"
}
# every row ROUNDS times, the rows alternating within each round (machines are noisy): medians and ranges
ROUNDS="${ROUNDS:-3}"
echo "==> measuring ($ROUNDS rounds of ${DURATION} a row, $CONNECTIONS connections, wrk -t2)"
for round in $(seq "$ROUNDS"); do
    {
        run "nginx return 307" "http://127.0.0.1:$NGINX_PORT/t" "$CONNECTIONS"
        run "core GET /t (v2 signed)" "http://127.0.0.1:$CORE_PORT$click" "$CONNECTIONS"
        run "core GET /p (durable)" "http://127.0.0.1:$CORE_PORT/p?key_prefix=bench&event_type=sale&click_id=abc" \
            "$CONNECTIONS"
        run "core GET /i (pixel)" "http://127.0.0.1:$CORE_PORT/i?key_prefix=bench&creative=7" "$CONNECTIONS"
        run "core POST /batch x1000 (durable)" "http://127.0.0.1:$CORE_PORT/batch" 8 -s "$work/batch.lua"
    } >> "$work/tracking.rows"
    {
        run "nginx static links.json ($(wc -c < "$work/links.json") B)" "http://127.0.0.1:$NGINX_PORT/links.json" \
            "$CONNECTIONS"
        run "core GET /api/links?limit=50" "http://127.0.0.1:$CORE_PORT/api/links?limit=50" "$CONNECTIONS" \
            -s "$work/api.lua"
    } >> "$work/api.rows"
    echo "    round $round of $ROUNDS done"
done
rss_kb="$(awk '/VmHWM/{print $2}' "/proc/$core_pid/status")"
# server time of the redirects, from the node's own histogram (all /t requests of the run)
server_time="$(curl -s "http://127.0.0.1:$CORE_PORT/metrics" | awk '
    /^tracker_redirect_duration_seconds_bucket\{le="0.00005"\}/ {a=$2}
    /^tracker_redirect_duration_seconds_bucket\{le="0.001"\}/ {c=$2}
    /^tracker_redirect_duration_seconds_sum/ {sum=$2}
    /^tracker_redirect_duration_seconds_count/ {n=$2}
    END { if (n > 0) printf "mean %.1f us, %.2f%% within 50 us, %.3f%% within 1 ms", 1e6*sum/n, 100*a/n, 100*c/n }')"
log_events="$(curl -s "http://127.0.0.1:$CORE_PORT/metrics" | awk '/^tracker_log_appended_events_total/{print $2}')"

# rows "name|rps|p50|p99|errors", several per name: the first name of a file is the baseline
table() { python3 - "$@" <<'PY'
import statistics, sys
path, vs = sys.argv[1], sys.argv[2]
def seconds(s):
    for unit, f in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * f
    return float(s)
def show(sec):
    return f"{sec * 1e6:.0f} us" if sec < 1e-3 else f"{sec * 1e3:.2f} ms"
rows = {}
for line in open(path):
    name, rps, p50, p99, err = line.strip().split("|")
    rows.setdefault(name, []).append((float(rps), seconds(p50), seconds(p99), int(err or 0)))
base = statistics.median(r[0] for r in next(iter(rows.values())))
for name, rs in rows.items():
    rps = [r[0] for r in rs]
    med = statistics.median(rps)
    spread = f"{min(rps):,.0f}-{max(rps):,.0f}"
    p50, p99 = show(statistics.median(r[1] for r in rs)), show(statistics.median(r[2] for r in rs))
    errors = sum(r[3] for r in rs)
    if "/batch" in name:
        print(f"| {name} | {med:,.0f} batches/s = **{med * 1000:,.0f} events/s** ({spread}) | | {p50} | {p99} | {errors} |")
    else:
        print(f"| {name} | {med:,.0f} ({spread}) | {med / base:.2f}x{vs} | {p50} | {p99} | {errors} |")
PY
}
echo
echo "| endpoint | requests/s: median (range) | vs baseline | p50 | p99 | non-2xx/3xx |"
echo "|---|---:|---:|---:|---:|---:|"
table "$work/tracking.rows" ""
table "$work/api.rows" " of static"
echo
echo "redirect server time (handler, under full load): $server_time"
echo "core node peak RSS: $((rss_kb / 1024)) MB after every row; events written to the log during the run: $log_events"
echo "machine: $(nproc) cores, $(uname -sr); wrk and both servers share the cores"

# the consumers: a fresh node with them in-process, 200,000 events (clicks and their conversions) posted as fast
# as it takes them, the time until every one is filtered and counted in the hot tier (what /api/events/stats
# answers), then the hot routes' latency over them
# a fresh node with the consumers in-process in DATA_DIR $1, tenant `bench` on plan $2: sets token and api_key
consumer_node() {
    kill "$core_pid" && wait "$core_pid" 2>/dev/null || true
    export DATA_DIR="$work/$1"
    bench_node "$bin" "$CORE_PORT" "$2"
    pids+=("$node_pid")
    core_pid=$node_pid
}
consumer_node consumers enterprise
consumers() { python3 - "$@" <<'PY'
import http.client, json, statistics, sys, time
token, key, port, pid, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
now = int(time.time() * 1000)
# clicks with their own click ids and ten traffic sources; every third click converts a few minutes later
bodies, i = [], 0
while i < 150_000:
    batch = []
    for _ in range(750):
        batch.append({"event_type": "click", "timestamp": now - 3_600_000 + i * 20, "ip": f"198.51.100.{i % 250}",
                      "user_agent": ua, "params": {"click_id": f"c{i}", "sub1": f"source{i % 10}"}})
        if i % 3 == 0:
            batch.append({"event_type": "postback", "timestamp": now - 3_600_000 + i * 20 + 180_000,
                          "params": {"click_id": f"c{i}", "payout": "2.50"}})
        i += 1
    bodies.append(json.dumps(batch).encode())
n_events = sum(len(json.loads(b)) for b in bodies)
c = http.client.HTTPConnection("127.0.0.1", port)
start = time.time()
for body in bodies:
    c.request("POST", "/batch", body, {"authorization": f"Bearer {token}", "content-type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
posted = time.time() - start
def get(path):
    c.request("GET", path, headers={"authorization": f"Bearer {key}"})
    r = c.getresponse(); answer = json.loads(r.read())
    assert r.status == 200, answer
    return answer
total = 0
while total < n_events and time.time() - start < 600:
    time.sleep(0.05)
    total = get("/api/events/stats?hours=24")["total"]
took = time.time() - start
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
print(f"| consumers in-process (filter + stats + webhook queue){label} | {total:,} events in {took:.1f} s "
      f"(posted in {posted:.1f} s) = **{total / took:,.0f} events/s** to the hot tier | peak RSS {rss // 1024} MB |")
if label:
    sys.exit(0)
print()
print(f"hot-tier queries over those {total:,} events (20 runs each, one client):")
print()
print("| query | p50 | max | answer |")
print("|---|---:|---:|---|")
queries = [
    ("/api/events?limit=50", lambda a: f"{len(a['data'])} events"),
    ("/api/events?param_key=click_id&param_value=c74999", lambda a: f"{len(a['data'])} events"),
    ("/api/events?event_type=postback&limit=100", lambda a: f"{len(a['data'])} events"),
    ("/api/events/stats?hours=24&group_by=event_type", lambda a: f"total {a['total']}"),
    ("/api/events/stats?hours=24&interval=minute&group_by=param:sub1", lambda a: f"{len(a['series'])} points"),
    ("/api/events/stats?hours=24&param_key=sub1&param_value=source3", lambda a: f"total {a['total']}"),
    ("/api/events/match?trigger=click&result=postback&on=click_id&hours=24&window_secs=3600",
     lambda a: f"{a['summary']['matched']} pairs, rate {a['summary']['match_rate']:.3f}"),
    ("/api/drops?hours=24", lambda a: f"{len(a['data'])} rows"),
]
for path, show in queries:
    times = []
    for _ in range(20):
        t = time.perf_counter(); answer = get(path); times.append((time.perf_counter() - t) * 1000)
    print(f"| `{path}` | {statistics.median(times):.1f} ms | {max(times):.1f} ms | {show(answer)} |")
PY
}
consumers "$token" "$api_key" "$CORE_PORT" "$core_pid" ""

# the same on a hard-capped plan (with room for every event): the filter also checks and records each event id
# against the month's allowance, so a resent event is not counted twice
export PLANS='{"capped": {"monthly_events": 100000000, "query_tiers": ["hot"], "api_requests_per_minute": 1000000}}'
consumer_node consumers-capped capped
consumers "$token" "$api_key" "$CORE_PORT" "$core_pid" ", hard-capped plan"

# the all-in-one node under sustained ingest: the hot tier's lag while /batch takes a steady rate
kill "$core_pid" && wait "$core_pid" 2>/dev/null || true
BIN="$bin" bash tests/bench/all-in-one.sh
