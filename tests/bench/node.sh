# Sourced by the benchmark scripts: a fresh node for the consumer scenarios.
#
# bench_node BIN PORT PLAN: creates tenant `bench` on PLAN in DATA_DIR, starts BIN with the consumers in-process on
# PORT (ADMIN_TOKEN, DATA_DIR and the rest from the environment), waits for /health, lifts the tenant's API limit,
# and sets `node_pid`, `token` (ingest) and `api_key` (read). Call it directly, not in $(...): the node is a child
# of the calling shell, which kills and waits for it.
bench_node() {
    local bin="$1" port="$2" plan="$3"
    "$bin" tenant create --name bench --prefix bench --plan "$plan" >/dev/null
    token="$("$bin" token create bench | awk '/^token /{print $2}')"
    CONSUMERS=in-process "$bin" serve &
    node_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    curl -sf -o /dev/null -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -X PATCH \
        -d '{"limits":{"api_requests_per_minute":1000000}}' "http://127.0.0.1:$port/api/tenants/bench"
    api_key="$(curl -sf -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -X POST \
        -d '{"name":"bench","scopes":["read"]}' "http://127.0.0.1:$port/api/tenants/bench/api-keys" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"
}
