#!/usr/bin/env bash
# The clients' own checks (part of `make test`): the beacon is what esbuild makes of its source and within its size
# budget; the dashboard's committed build is the build of its source; the TypeScript SDK compiles, passes its tests
# (its crypto against WebCrypto, its public types under strict mode), runs under Deno and Bun, and packs; the Python
# SDK passes its tests (and the examples in its docstrings) and builds a wheel. Nothing is published.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "beacon: clients/beacon/dist/t.js is the minified source, at most 1536 bytes gzipped"
node_modules/.bin/esbuild clients/beacon/src/t.js --minify --target=es2017 --log-level=warning --outfile="$work/t.js"
cmp -s "$work/t.js" clients/beacon/dist/t.js || {
    echo "clients/beacon/dist/t.js is not the build of clients/beacon/src/t.js: run scripts/build-beacon.sh" >&2
    exit 1
}
gz=$(gzip -9c clients/beacon/dist/t.js | wc -c)
echo "t.js: $(wc -c < clients/beacon/dist/t.js) bytes, $gz gzipped (budget 1536)"
[ "$gz" -le 1536 ] || { echo "t.js is over its 1.5 KB gzipped budget" >&2; exit 1; }
(cd clients/beacon && npm pack --dry-run --json 2>/dev/null | node -e '
  const [p] = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const files = p.files.map((f) => f.path).sort().join(" ");
  if (files !== "README.md dist/t.js package.json") { console.error("beacon package holds: " + files); process.exit(1); }
  console.log(`npm pack ${p.name}@${p.version}: ${files}`);')

say "dashboard: its types (svelte-check, pages included), and dashboard/dist is the build of dashboard/ (a Svelte compiler warning fails it)"
checked="$(node_modules/.bin/svelte-check --workspace dashboard --tsconfig ./tsconfig.json --fail-on-warnings 2>&1)" || {
    echo "$checked"
    exit 1
}
tail -1 <<<"$checked"
node_modules/.bin/vite build dashboard --outDir "$work/dashboard" --emptyOutDir --logLevel warn
diff -r "$work/dashboard" dashboard/dist || {
    echo "dashboard/dist is not the build of dashboard/: run npm run build:dashboard and commit dashboard/dist" >&2
    exit 1
}
echo "dashboard: $(find dashboard/dist -type f | wc -l) files, $(cat dashboard/dist/assets/* dashboard/dist/index.html | wc -c) bytes (sizes and the budget: tests/edge/dashboard.test.mjs)"

say "TypeScript SDK: its API client generated from the current OpenAPI document, compiled (strict), its tests, npm pack"
(cd clients/sdk-typescript && node scripts/generate-api.mjs --check && ../../node_modules/.bin/tsc -p . && node --test --test-reporter=dot test/)
(cd clients/sdk-typescript && npm pack --dry-run --json --ignore-scripts 2>/dev/null | node -e '
  const [p] = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const files = p.files.map((f) => f.path);
  for (const want of ["dist/index.js", "dist/index.d.ts", "README.md", "package.json"])
    if (!files.includes(want)) { console.error(`${p.name} package lacks ${want}`); process.exit(1); }
  if (files.some((f) => f.startsWith("src/") || f.startsWith("test/"))) { console.error("sources in the package"); process.exit(1); }
  console.log(`npm pack ${p.name}@${p.version}: ${files.length} files, ${p.size} bytes`);')

say "TypeScript SDK under Deno and Bun (from npm, cached): every vector link by its builder, the webhook cases, ids"
# workerd, the third runtime, is in the edge suite (tests/edge/, which runs this file without SDK_RUNTIMES)
ensure_js_runtimes
SDK_RUNTIMES=deno,bun node --test --test-reporter=dot tests/edge/sdk-runtimes.test.mjs

say "Rust SDK: its API client generated from the current OpenAPI document (its tests run with the workspace's)"
python3 clients/tracker-sdk/scripts/generate_api.py --check

say "Python SDK: its API client generated from the current OpenAPI document, its tests and docstring examples, a wheel"
python3 clients/sdk-python/scripts/generate_api.py --check
PYTHONPATH=clients/sdk-python/src python3 -m unittest discover -s clients/sdk-python/tests
venv="${TRACKER_VENV:-$HOME/.cache/tracker/venv}"
"$venv/bin/python" -c 'import setuptools, wheel' 2>/dev/null || "$venv/bin/pip" install -q setuptools wheel
cp -r clients/sdk-python "$work/python"
"$venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/wheel" "$work/python" >/dev/null
wheel=$(ls "$work"/wheel/*.whl)
# Listed first, then searched: `unzip | grep -q` fails under pipefail when grep stops reading early (SIGPIPE).
listing="$(unzip -l "$wheel")"
grep -q "tracker_sdk/py.typed" <<<"$listing" || { echo "the wheel lacks py.typed" >&2; exit 1; }
echo "wheel: $(basename "$wheel")"
