#!/usr/bin/env bash
# Builds the edge Worker (edge-worker/build/index.js + wasm) with worker-build and the locally installed
# wasm-bindgen, wasm-opt and esbuild. `--dev` skips optimisation. `--if-stale` is what wrangler's build command
# runs: nothing when the build is newer than every source (`make dev` built it a moment ago), otherwise a build in
# the profile of the last one (so `wrangler dev` rebuilds a dev build on a change, and the Worker is built once).
set -euo pipefail
cd "$(dirname "$0")/.."
built=edge-worker/build/index_bg.wasm
profile=release
case "${1:-}" in
    --dev) profile=dev ;;
    --if-stale)
        profile="$(cat edge-worker/build/.profile 2>/dev/null || echo release)"
        sources=(edge-worker/src edge-worker/Cargo.toml core/tracker-protocol/src core/tracker-protocol/Cargo.toml Cargo.lock)
        if [ -f "$built" ] && [ -z "$(find "${sources[@]}" -newer "$built" -print -quit)" ]; then
            echo "edge Worker: the $profile build is up to date"
            exit 0
        fi
        ;;
esac
source scripts/lib.sh
ensure_worker_tools
(cd edge-worker && worker-build "--$profile")
echo "$profile" > edge-worker/build/.profile
