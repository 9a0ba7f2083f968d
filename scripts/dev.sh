#!/usr/bin/env bash
# `make dev`: build and run the whole platform locally on embedded defaults: a core node (embedded durable log,
# libSQL file) and the edge Worker under `wrangler dev` (local KV and Queues), wired together with a shared
# secret; create a demo tenant and print links to click at the edge. Ctrl-C stops both (the log is flushed).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_worker_tools
say "building the core node"
cargo build -p tracker-core
say "building the edge Worker"
bash scripts/build-worker.sh --dev

export DATA_DIR="${DATA_DIR:-data}"
export PORT="${PORT:-3030}"
EDGE_PORT="${EDGE_PORT:-8787}"
if [ ! -f .dev.vars ]; then
    secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    printf 'EDGE_SHARED_SECRET=%s\n' "$secret" > .dev.vars
    say "wrote .dev.vars with a fresh EDGE_SHARED_SECRET"
fi
EDGE_SHARED_SECRETS="$(sed -n 's/^EDGE_SHARED_SECRET=//p' .dev.vars)"
export EDGE_SHARED_SECRETS

# the platform admin credential (for /api/tenants), kept with the data and never printed into logs
mkdir -p "$DATA_DIR"
if [ ! -s "$DATA_DIR/admin-token" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$DATA_DIR/admin-token")
fi
ADMIN_TOKEN="$(cat "$DATA_DIR/admin-token")"
export ADMIN_TOKEN

./target/debug/tracker-core serve &
core_pid=$!
trap 'kill -TERM $core_pid 2>/dev/null; wait $core_pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

say "demo tenant (data in $DATA_DIR/)"
PUBLIC_URL="http://127.0.0.1:$EDGE_PORT" ./target/debug/tracker-core demo
echo
echo "Core node: http://127.0.0.1:$PORT (serves the same endpoints directly). Edge Worker: http://127.0.0.1:$EDGE_PORT"
echo "Dashboard: http://localhost:$EDGE_PORT/dashboard/ (sign in with the dashboard API key above, or with the admin"
echo "  token in $DATA_DIR/admin-token for the operator's view; also at http://localhost:$PORT/dashboard/)"
echo "Platform API at the edge (admin token in $DATA_DIR/admin-token):"
echo "  TRACKER_API_URL=http://127.0.0.1:$EDGE_PORT TRACKER_API_KEY=\$(cat $DATA_DIR/admin-token) ./target/debug/tracker-core api tenants list"
say "wrangler dev (Ctrl-C to stop everything)"
WRANGLER_SEND_METRICS=false npx wrangler dev --ip 127.0.0.1 --port "$EDGE_PORT" \
    --var "CORE_URLS:http://127.0.0.1:$PORT"
