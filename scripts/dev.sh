#!/usr/bin/env bash
# `make dev`: build and run the platform locally on embedded defaults (embedded durable log, libSQL file),
# create a demo tenant and print links to click. Ctrl-C stops the node gracefully (the log is flushed).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_rust
say "building the core node"
cargo build -p tracker-core
export DATA_DIR="${DATA_DIR:-data}"
say "demo tenant (data in $DATA_DIR/)"
./target/debug/tracker-core demo
echo
say "core node on ${PUBLIC_URL:-http://127.0.0.1:${PORT:-3030}} (Ctrl-C to stop)"
exec ./target/debug/tracker-core serve
