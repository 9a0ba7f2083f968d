// The TypeScript SDK in the Workers runtime (workerd under Miniflare), not only in Node.js: bundled as a Worker
// would bundle it, it builds the vectors' links byte for byte, verifies a webhook, and mints UUIDv7 ids with the
// runtime's WebCrypto.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { ROOT } from "./harness.mjs";

const vectors = JSON.parse(readFileSync(join(ROOT, "tests/vectors/links.json"), "utf8"));

describe("the TypeScript SDK in workerd", () => {
  let mf;

  before(async () => {
    const worker = `
      import * as sdk from ${JSON.stringify(join(ROOT, "clients/sdk-typescript/dist/index.js"))};
      export default {
        async fetch(request) {
          const { builds, keys, webhook } = await request.json();
          const key = (b) => {
            const k = b.kid === "global" ? { kid: "global", signing_secret: keys.global.hmac_secret, encryption_key: keys.global.encryption_key }
              : keys[b.key_prefix].find((k) => k.kid === b.kid);
            return { keyPrefix: b.key_prefix ?? "", kid: k.kid, secret: k.signing_secret, encryptionKey: k.encryption_key };
          };
          const nonce = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));
          const urls = builds.map((b) => {
            const o = { params: b.params, ext: b.ext ?? [], ...(b.expires_at ? { expiresAt: b.expires_at } : {}) };
            switch (b.format) {
              case "v2_signed": return sdk.signedLink("https://track.example", key(b), b.kind, b.target, o);
              case "v2_encrypted": return sdk.encryptedClickUrl("https://track.example", key(b), b.target, o, nonce(b.nonce));
              case "v1_signed": return sdk.v1SignedUrl("https://track.example", key(b).secret, b.key_prefix ?? undefined, b.target, b.params);
              case "v1_short": return sdk.v1ShortUrl("https://track.example", key(b).secret, b.key_prefix ?? undefined, b.target, b.params);
              default: return sdk.v1EncryptedUrl("https://track.example", key(b).encryptionKey, b.target, b.params, nonce(b.nonce));
            }
          });
          const ok = webhook.cases.find((c) => c.expect === "ok");
          const verified = sdk.verifyWebhook(webhook.secret, ok.header, ok.body, { now: ok.now });
          return Response.json({ urls, verified, id: sdk.uuidv7(), runtime: navigator.userAgent });
        },
      };`;
    const bundled = await build({ stdin: { contents: worker, resolveDir: ROOT, loader: "js" }, bundle: true, format: "esm", write: false, logLevel: "warning" });
    mf = new Miniflare({ modules: true, script: bundled.outputFiles[0].text, compatibilityDate: "2026-04-01" });
  });

  after(() => mf?.dispose());

  it("builds every vector link, verifies a webhook and mints ids", async () => {
    const res = await mf.dispatchFetch("http://sdk.test/", {
      method: "POST",
      body: JSON.stringify({ builds: vectors.builds, keys: vectors.keys, webhook: vectors.webhook_signatures }),
    });
    const answer = await res.json();
    assert.equal(res.status, 200, JSON.stringify(answer));
    assert.equal(answer.runtime, "Cloudflare-Workers");
    assert.deepEqual(answer.urls, vectors.builds.map((b) => b.url));
    assert.equal(typeof answer.verified, "number");
    assert.match(answer.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  });
});
