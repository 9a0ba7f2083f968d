#!/usr/bin/env bash
# Builds the edge Worker (edge-worker/build/index.js + wasm) with worker-build and the locally installed
# wasm-bindgen, wasm-opt and esbuild. `--dev` skips optimisation.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_worker_tools
cd edge-worker
if [ "${1:-}" = "--dev" ]; then worker-build --dev; else worker-build --release; fi
