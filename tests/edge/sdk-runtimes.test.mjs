// The TypeScript SDK in the runtimes it promises besides Node.js: workerd (the Workers runtime, under Miniflare),
// Deno and Bun. Each runs the same `exercise` on the built package: every link of the vectors byte for byte, each
// kind by its own builder (click, short link, postback, pixel, encrypted, the v1 formats), every webhook case judged
// as recorded, UUIDv7 ids and fresh nonces from the runtime's WebCrypto.
//
// SDK_RUNTIMES=deno,bun picks runtimes (scripts/test-clients.sh runs Deno and Bun; the edge suite all three). Deno
// and Bun come from scripts/lib.sh `ensure_js_runtimes` (DENO_BIN, BUN_BIN, else its cache directory); a runtime
// that is missing is skipped with a reason, or fails when SDK_RUNTIMES names it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { ROOT } from "./harness.mjs";

const vectors = JSON.parse(readFileSync(join(ROOT, "tests/vectors/links.json"), "utf8"));
const input = { builds: vectors.builds, keys: vectors.keys, webhook_signatures: vectors.webhook_signatures };
const SDK = join(ROOT, "clients/sdk-typescript/dist/index.js");
const named = (process.env.SDK_RUNTIMES || undefined)?.split(",").filter(Boolean);
const wanted = named ?? ["workerd", "deno", "bun"];

/** What every runtime runs, as source text (it closes over nothing): `sdk` is the package, `v` the vectors. */
function exercise(sdk, v) {
  const BASE = "https://track.example";
  const key = (b) => {
    const g = v.keys.global;
    const k = b.kid === "global"
      ? { kid: "global", signing_secret: g.hmac_secret, encryption_key: g.encryption_key }
      : v.keys[b.key_prefix].find((k) => k.kid === b.kid);
    return { keyPrefix: b.key_prefix ?? "", kid: k.kid, secret: k.signing_secret, encryptionKey: k.encryption_key };
  };
  const nonce = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));
  const urls = v.builds.map((b) => {
    const k = key(b);
    const o = { ext: b.ext ?? [], ...(b.expires_at ? { expiresAt: b.expires_at } : {}) };
    const prefix = b.key_prefix ?? undefined;
    switch (b.format + " " + b.kind) {
      case "v2_signed click": return sdk.clickUrl(BASE, k, b.target, { ...o, params: b.params });
      case "v2_signed short": return sdk.shortLinkUrl(BASE, k, b.target, { ...o, params: b.params });
      case "v2_signed postback": return sdk.postbackUrl(BASE, k, b.params, o);
      case "v2_signed impression": return sdk.pixelUrl(BASE, k, b.params, o);
      case "v2_encrypted click":
        return sdk.encryptedClickUrl(BASE, k, b.target, { ...o, params: b.params }, nonce(b.nonce));
      case "v1_signed click": return sdk.v1SignedUrl(BASE, k.secret, prefix, b.target, b.params);
      case "v1_short short": return sdk.v1ShortUrl(BASE, k.secret, prefix, b.target, b.params);
      case "v1_encrypted click": return sdk.v1EncryptedUrl(BASE, k.encryptionKey, b.target, b.params, nonce(b.nonce));
      default: throw new Error("no builder for " + b.format + " " + b.kind);
    }
  });
  const w = v.webhook_signatures;
  const webhooks = w.cases.map((c) => {
    try {
      return typeof sdk.verifyWebhook(w.secret, c.header, c.body, { now: c.now, toleranceSeconds: w.tolerance_secs });
    } catch (e) {
      return e.code;
    }
  });
  const encrypted = () => sdk.encryptedClickUrl(BASE, key(v.builds[0]), "https://a.example/");
  return {
    urls,
    webhooks,
    ids: [sdk.uuidv7(), sdk.uuidv7()],
    freshNonces: encrypted() !== encrypted(),
    runtime: navigator.userAgent,
  };
}

// what `exercise` reports for each webhook outcome of the vectors: the verified timestamp's type, or the error code
const JUDGED = {
  ok: "number",
  malformed: "malformed_signature",
  stale: "stale_signature",
  mismatch: "invalid_signature",
};
const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function check(answer, runtime) {
  assert.match(answer.runtime, runtime);
  assert.deepEqual(
    new Set(vectors.builds.map((b) => b.kind)),
    new Set(["click", "short", "postback", "impression"]),
    "the vectors have every link kind",
  );
  assert.deepEqual(answer.urls, vectors.builds.map((b) => b.url));
  assert.deepEqual(answer.webhooks, vectors.webhook_signatures.cases.map((c) => JUDGED[c.expect]));
  for (const id of answer.ids) assert.match(id, UUIDV7);
  assert.notEqual(answer.ids[0], answer.ids[1]);
  assert.equal(answer.freshNonces, true);
}

describe("the TypeScript SDK in workerd", { skip: !wanted.includes("workerd") && "not in SDK_RUNTIMES" }, () => {
  let mf;

  before(async () => {
    // bundled as a Worker would bundle it
    const worker = `
      import * as sdk from ${JSON.stringify(SDK)};
      ${exercise}
      export default {
        async fetch(request) {
          return Response.json(exercise(sdk, await request.json()));
        },
      };`;
    const bundled = await build({
      stdin: { contents: worker, resolveDir: ROOT, loader: "js" },
      bundle: true,
      format: "esm",
      write: false,
      logLevel: "warning",
    });
    mf = new Miniflare({ modules: true, script: bundled.outputFiles[0].text, compatibilityDate: "2026-04-01" });
  });

  after(() => mf?.dispose());

  it("builds every vector link, judges every webhook case and mints ids", async () => {
    const res = await mf.dispatchFetch("http://sdk.test/", { method: "POST", body: JSON.stringify(input) });
    const answer = await res.json();
    assert.equal(res.status, 200, JSON.stringify(answer));
    check(answer, /^Cloudflare-Workers$/);
  });
});

const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tracker/runtimes/node_modules/.bin");
const runtimes = [
  { name: "Deno", id: "deno", bin: process.env.DENO_BIN || join(cache, "deno"), args: ["run", "--no-prompt"] },
  { name: "Bun", id: "bun", bin: process.env.BUN_BIN || join(cache, "bun"), args: [] },
];

for (const { name, id, bin, args } of runtimes) {
  const missing = !existsSync(bin) && `${name} is not installed: scripts/lib.sh ensure_js_runtimes installs it`;
  const skip = !wanted.includes(id) ? "not in SDK_RUNTIMES" : named ? false : missing;

  describe(`the TypeScript SDK in ${name}`, { skip }, () => {
    it("builds every vector link, judges every webhook case and mints ids", async () => {
      assert.ok(!missing, `${missing} (SDK_RUNTIMES names ${id})`);
      // a program of its own in a scratch directory (no package.json or deno.json of the repository applies)
      const dir = mkdtempSync(join(tmpdir(), `sdk-${id}-`));
      try {
        const program = join(dir, "program.mjs");
        writeFileSync(
          program,
          `import * as sdk from ${JSON.stringify(pathToFileURL(SDK).href)};\n${exercise}\n` +
            `console.log(JSON.stringify(exercise(sdk, ${JSON.stringify(input)})));\n`,
        );
        const env = { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
        const out = await new Promise((ok, fail) =>
          execFile(bin, [...args, program], { cwd: dir, env, timeout: 30_000 }, (e, stdout, stderr) =>
            e ? fail(new Error(`${name}: ${e.message}\n${stderr}`)) : ok(stdout),
          ),
        );
        check(JSON.parse(out), new RegExp(`^${name}/\\d`));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
