#!/usr/bin/env bash
# The MCP server with the official Python MCP client (PyPI `mcp`) against a live core node: tests/mcp/test_mcp.py
# over stdio (target/debug/tracker-mcp) and streamable HTTP (/mcp). Run by `make test` after the nextest run built
# both binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

VENV="$(ensure_mcp_client)"
for bin in tracker-core tracker-mcp; do
  [ -x "target/debug/$bin" ] || { echo "target/debug/$bin is missing (cargo build -p $bin)" >&2; exit 1; }
done

DIR="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADMIN="mcp-admin-$(openssl rand -hex 16)"
trap 'kill $NODE 2>/dev/null && wait $NODE 2>/dev/null; rm -rf "$DIR"' EXIT
DATA_DIR="$DIR" PORT="$PORT" ADMIN_TOKEN="$ADMIN" API_IP_REQUESTS_PER_MINUTE=1000000 RUST_LOG=warn \
  ./target/debug/tracker-core serve &
NODE=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -fs "$BASE/health" >/dev/null && break; sleep 0.1; done

TRACKER_BASE="$BASE" TRACKER_ADMIN="$ADMIN" TRACKER_MCP_BIN="$PWD/target/debug/tracker-mcp" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/mcp
