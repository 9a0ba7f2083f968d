#!/usr/bin/env bash
# `make chaos`: the local stack (the Worker under wrangler, two core nodes with their consumers and archivers) under
# load while the nodes, the whole fleet and the Worker are killed and restarted on a schedule, then the ledger
# (tests/chaos/run.mjs).
# DURATION_SECS (120), KILL_EVERY_SECS (10), DOWN_SECS (4), OUTAGE_SECS (10); KEEP=1 keeps the run's data directory.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_worker_tools
ensure_duckdb
say "building the core node and the edge Worker"
cargo build -q -p tracker-core
bash scripts/build-worker.sh
say "chaos run"
node tests/chaos/run.mjs
