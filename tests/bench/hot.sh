#!/usr/bin/env bash
# The hot tier's drain (`make bench-hot`): a fresh embedded log preloaded with
# EVENTS events (2,000,000), then the filter and the stats consumer in-process (each on its thread, as in the node)
# until the hot tier holds every one. The log's own append rate over the same events is the same-run baseline.
# ROUNDS (3) fresh runs; medians and ranges. Then live traffic at each TRICKLE rate (40,400,4000 events/s) for
# TRICKLE_SECS (10): the rows the hot tier writes per event at each (what a hosted libSQL bills; docs/cost.md).
# Timings are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "==> building the drain benchmark (release)"
cargo build --release -p tracker-consumers --no-default-features --example hot_drain 2>&1 | tail -1
EVENTS="${EVENTS:-2000000}" ROUNDS="${ROUNDS:-3}" TRICKLE="${TRICKLE-40,400,4000}" target/release/examples/hot_drain
echo "machine: $(nproc) cores, $(uname -sr)"
