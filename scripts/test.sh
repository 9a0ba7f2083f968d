#!/usr/bin/env bash
# `make test`: everything CI runs. One `cargo nextest run --workspace` invocation (switching packages or features between
# steps rebuilds hundreds of crates).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
# CI's fresh clones share the dependencies' build outputs: `target` is a link to a directory kept between runs,
# and each run removes its own crates' outputs at the end (scripts/prune-target.py), so the directory holds the
# dependencies only. A checkout with a target directory of its own (or CARGO_TARGET_DIR) is left alone.
if [ "${CI:-}" = true ] && [ -z "${CARGO_TARGET_DIR:-}" ] && [ ! -e target ]; then
    shared="${XDG_CACHE_HOME:-$HOME/.cache}/tracker/ci-target"
    mkdir -p "$shared"
    ln -s "$shared" target
    trap 'python3 scripts/prune-target.py target' EXIT
    say "build outputs of dependencies shared with earlier CI runs: $shared"
fi
ensure_worker_tools
ensure_sqld
ensure_duckdb
ensure_moto
ensure_chromium
ensure_mcp_client >/dev/null
ensure_infra_tools
ensure_cargo_machete
ensure_cargo_deny
ensure_cargo_nextest
say "formatting (and no Rust line rustfmt could not fit: it leaves whole functions unformatted around one)"
cargo fmt --all --check
long=$(git ls-files '*.rs' | xargs awk 'length > 120 { print FILENAME ":" FNR ": " length " characters" }')
[ -z "$long" ] || { echo "$long"; echo "lines over 120 characters (max_width in rustfmt.toml)" >&2; exit 1; }
say "no unused dependencies (cargo machete; exceptions carry their reason in the crate's Cargo.toml)"
cargo machete
say "cargo deny: licenses (deny.toml), banned crates, sources"
cargo deny --log-level error check licenses bans sources
if timeout 60 cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --log-level error check advisories
else
    say "not checked here: advisories (the RustSec database on github.com is unreachable from this machine)"
fi
say "docs name only paths that exist"
python3 scripts/doc-paths.py
say "clippy (workspace lints, warnings are errors), natively and for the Worker's wasm32 target"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p tracker-edge --target wasm32-unknown-unknown -- -D warnings
say "the lean core node builds (tracker-core without its optional features)"
cargo check -p tracker-core --no-default-features
say "the protocol crate builds for wasm32-unknown-unknown (the edge Worker)"
cargo check -p tracker-protocol --target wasm32-unknown-unknown
say "test vectors agree with an independent implementation"
python3 tests/vectors/check.py
bash scripts/test-clients.sh
say "cargo nextest run --workspace: each test in a process of its own, stopped after 180 s (.config/nextest.toml)"
if [ -n "${IGGY_TEST_ADDR:-}" ]; then
    cargo nextest run --workspace --run-ignored all
else
    cargo nextest run --workspace
    # tests marked #[ignore] need what this machine cannot have (an Iggy server): named, never silently passed
    say "not run here (each names what it needs; IGGY_TEST_ADDR runs the Iggy ones):"
    cargo nextest list --workspace --run-ignored only --message-format oneline 2>/dev/null | sed 's/^/  /'
fi
say "the Rust SDK's docs build without warnings and their examples run (doctests)"
RUSTDOCFLAGS="-D warnings" cargo doc -p tracker-sdk --no-deps --quiet
cargo test -p tracker-sdk --doc --quiet
say "building the edge Worker (worker-build --release)"
bash scripts/build-worker.sh
gz=$(gzip -9c edge-worker/build/index_bg.wasm | wc -c)
echo "edge Worker wasm: $(wc -c < edge-worker/build/index_bg.wasm) bytes, $gz gzipped (limit 409600)"
[ "$gz" -le 409600 ] || { echo "the Worker's gzipped wasm exceeds 400 KB" >&2; exit 1; }
# the Wrangler dry runs bundle this build; the image's smoke run uses the node nextest built
bash scripts/test-infra.sh
say "edge Worker tests under Miniflare, against a real core node (and headless Chromium for the browser shapes)"
# the node's binary was built (and put at target/debug/) for the nextest run; a `cargo build --bins` here would
# build the whole data stack again, with the features of a build without dev-dependencies
[ -x target/debug/tracker-core ] || { echo "target/debug/tracker-core is missing" >&2; exit 1; }
node --test --test-concurrency=1 tests/edge/
say "the MCP server with the official Python MCP client: stdio and streamable HTTP against a live core node"
bash scripts/test-mcp.sh
say "schemathesis: the OpenAPI document against a live core node"
TRACKER_CORE_BUILT=1 MAX_EXAMPLES="${MAX_EXAMPLES:-25}" bash scripts/api-fuzz.sh
