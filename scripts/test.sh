#!/usr/bin/env bash
# `make test`: everything CI runs. One `cargo test --workspace` invocation (switching packages or features between
# steps rebuilds hundreds of crates).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_rust
say "formatting"
cargo fmt --all --check
say "the protocol crate builds for wasm32-unknown-unknown (the edge Worker)"
cargo check -p tracker-protocol --target wasm32-unknown-unknown
say "test vectors agree with an independent implementation"
python3 tests/vectors/check.py
say "cargo test --workspace"
cargo test --workspace
say "clippy (workspace lints, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
