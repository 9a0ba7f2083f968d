# Shared helpers for the make targets: install what the project needs, idempotently and quickly when present.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust with rustup (https://rustup.rs) and run again" >&2
        exit 1
    fi
    # the protocol crate must keep compiling for the Cloudflare Worker (wasm32)
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        say "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi
}
