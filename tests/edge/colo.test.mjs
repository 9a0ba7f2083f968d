// The location's cache (the Workers Cache API) in front of Workers KV: it answers lookups the isolate's cache misses
// while KV's copy is fresh (KV bills every read; the Cache API is free), and never past that freshness.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Core, get, sleep, worker } from "./harness.mjs";

describe("the location's cache of KV records", () => {
  const core = new Core();
  const workers = [];

  before(async () => {
    core.tenant("acme");
    await core.start();
  });

  after(async () => {
    for (const mf of workers) await mf.dispose();
    core.cleanup();
  });

  it("answers while KV's copy is fresh, without KV or the core, and not a moment longer", async () => {
    // CACHE_TTL_MS=0: every request misses the isolate's cache
    const fresh = worker({ CORE_URLS: core.url, CACHE_TTL_MS: "0" });
    const short = worker({ CORE_URLS: core.url, CACHE_TTL_MS: "0", KV_FILL_TTL_SECS: "2" });
    workers.push(fresh, short);
    const link = core.link("acme", "https://shop.example/colo");
    for (const mf of [fresh, short]) {
      assert.equal((await get(mf, link)).status, 307, "the first click fills KV and the location's cache");
      const kv = await mf.getKVNamespace("TRACKER_KV");
      assert.ok(await kv.get("tenant:acme"), "filled into KV");
      await kv.delete("tenant:acme");
    }
    await core.stop();
    // KV has nothing and the core is down: only the location's cache can answer
    const res = await get(fresh, link);
    assert.equal(res.status, 307, await res.text());
    await sleep(2500);
    const expired = await get(short, link);
    assert.equal(expired.status, 503, "past KV_FILL_TTL_SECS the cached copy is gone with KV's");
    assert.equal((await get(fresh, link)).status, 307, "still fresh for 60 s");
  });
});
