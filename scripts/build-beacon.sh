#!/usr/bin/env bash
# Rebuilds clients/beacon/dist/t.js (committed: the Worker and the core node serve it) from clients/beacon/src/t.js.
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/esbuild clients/beacon/src/t.js --minify --target=es2017 --log-level=warning --outfile=clients/beacon/dist/t.js
echo "clients/beacon/dist/t.js: $(wc -c < clients/beacon/dist/t.js) bytes, $(gzip -9c clients/beacon/dist/t.js | wc -c) gzipped"
