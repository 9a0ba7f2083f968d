// A hard-capped tenant past its monthly allowance, at the edge (Miniflare) against a real core node: its links,
// pixels and beacons are still answered, its ingestion API answers 429 with Retry-After and RateLimit headers
// (decided from the tenant's record in KV: no round trip to the core on the hot path), and the clicks past the
// cap reach the core, which counts them as `quota` drops.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Core, eventually, get, post, worker } from "./harness.mjs";

const ALLOWANCE = 3;
const ADMIN = "edge-quota-admin-0123456789abcdef0123";
// the free plan, shrunk to three events a month
const PLANS = JSON.stringify({ free: { monthly_events: ALLOWANCE, query_tiers: ["hot"], api_requests_per_minute: 600 } });

describe("edge worker quota", () => {
  const core = new Core({ PLANS, ADMIN_TOKEN: ADMIN });
  let mf, token;

  before(async () => {
    core.tenant("capped");
    token = core.token("capped");
    await core.start();
    mf = worker({ CORE_URLS: core.url, CACHE_TTL_MS: "0" });
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  it("keeps redirecting past the cap and refuses ingestion with 429 once the edge learns of it", async () => {
    const link = core.link("capped", "https://shop.example/p");
    for (let i = 0; i < ALLOWANCE + 2; i++) {
      const res = await get(mf, link);
      assert.equal(res.status, 307);
      assert.match(res.headers.get("location"), /^https:\/\/shop\.example\/p\?ad_click_id=/);
    }
    // the core's filter counts the allowance; its tenant record then carries the block
    const record = await eventually(async () => {
      const r = JSON.parse(await core.lookup("/internal/v1/tenants/capped"));
      return r.quota ? r : null;
    }, 20000, "the core's record of the capped tenant");
    assert.equal(record.quota.allowance, ALLOWANCE);
    const now = new Date();
    assert.equal(record.quota.blocked_until, Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));

    // the edge's KV copy was filled before the cap; when it expires (KV_FILL_TTL_SECS), the next read refills it
    const kv = await mf.getKVNamespace("TRACKER_KV");
    assert.equal(JSON.parse(await kv.get("tenant:capped")).quota, undefined);
    await kv.delete("tenant:capped");

    const res = await post(mf, "/batch", JSON.stringify([{ event_type: "signup" }]), { authorization: `Bearer ${token}` });
    assert.equal(res.status, 429);
    assert.equal((await res.json()).error.code, "quota_exceeded");
    const retry = Number(res.headers.get("retry-after"));
    const left = Math.ceil((record.quota.blocked_until - Date.now()) / 1000);
    assert.ok(Math.abs(retry - left) <= 5, `Retry-After ${retry}, ${left} s left in the month`);
    assert.equal(res.headers.get("ratelimit-policy"), `"events";q=${ALLOWANCE};w=2592000`);
    assert.equal(res.headers.get("ratelimit"), `"events";r=0;t=${retry}`);
    assert.ok(JSON.parse(await kv.get("tenant:capped")).quota, "the refilled KV record carries the block");
    const ingest = await post(mf, "/ingest", JSON.stringify({ event_type: "signup" }), { authorization: `Bearer ${token}` });
    assert.equal(ingest.status, 429);
    const postback = await get(mf, `/p?token=${token}&event_type=sale`);
    assert.equal(postback.status, 429);

    // a visitor never sees the cap
    assert.equal((await get(mf, link)).status, 307);
    assert.equal((await get(mf, "/i?key_prefix=capped")).status, 200);
    const beacon = await post(mf, "/t/auto", JSON.stringify({ key: "capped", url: "https://shop.example/" }), { "content-type": "text/plain" });
    assert.equal(beacon.status, 204);

    // and the core counted every event past the cap as a quota drop: 3 accepted, 2 + 3 dropped
    const usage = await eventually(async () => {
      const res = await fetch(`${core.url}/api/admin/usage`, { headers: { authorization: `Bearer ${ADMIN}` } });
      const row = (await res.json()).data.find((t) => t.key_prefix === "capped");
      return row && row.totals.accepted + row.totals.dropped_quota === ALLOWANCE + 5 ? row.totals : null;
    }, 20000, "the core's usage of the capped tenant");
    assert.equal(usage.accepted, ALLOWANCE);
    assert.equal(usage.dropped_quota, 5);
    assert.equal(usage.redirects, ALLOWANCE + 3);
  });
});
