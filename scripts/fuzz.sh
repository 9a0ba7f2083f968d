#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target of the protocol crate for FUZZ_SECONDS each. cargo-fuzz needs nightly
# features; RUSTC_BOOTSTRAP lets the stable toolchain build them (sanitizer flags only, never shipped code).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../core/tracker-protocol"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
seconds="${FUZZ_SECONDS:-60}"
# FUZZ_RUNS=10000000: a number of executions per target instead of a time
limit="-max_total_time=$seconds"
[ -z "${FUZZ_RUNS:-}" ] || limit="-runs=$FUZZ_RUNS"
for target in link redirect record_set event_json batch_signature; do
    say "fuzzing $target ($limit)"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- "$limit" -max_len=4096 -print_final_stats=1
done
