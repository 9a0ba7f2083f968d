// A hard-capped tenant past its monthly allowance, at the edge (Miniflare) against a real core node: its links,
// pixels and beacons are still answered, its ingestion API answers 429 with Retry-After and RateLimit headers
// (decided from the tenant's record in KV: no round trip to the core on the hot path; the core pushes a purge of
// that record when the tenant reaches its cap), and the clicks past the cap reach the core, which counts them as
// `quota` drops.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Core, EDGE_SECRET, eventually, get, kvOpen, post, serviceSignature, sleep, worker } from "./harness.mjs";

const ALLOWANCE = 3;
const ADMIN = "edge-quota-admin-0123456789abcdef0123";
// the free plan, shrunk to three events a month
const PLANS = JSON.stringify({ free: { monthly_events: ALLOWANCE, query_tiers: ["hot"], api_requests_per_minute: 600 } });

describe("edge worker quota", () => {
  // the filter reads tenants' settings again every 100 ms
  const core = new Core({ PLANS, ADMIN_TOKEN: ADMIN, FILTER_RULES_RELOAD_MS: "100" });
  let mf, token, sloppyToken;

  before(async () => {
    core.tenant("capped");
    token = core.token("capped");
    core.tenant("sloppy");
    sloppyToken = core.token("sloppy");
    mf = worker({ CORE_URLS: await core.reserve(), CACHE_TTL_MS: "0" });
    // the core tells the Worker (its real HTTP address under Miniflare) when a tenant reaches its cap
    core.settings.EDGE_URLS = (await mf.ready).origin;
    await core.start();
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  const adminUsage = async (tenant) => {
    const res = await fetch(`${core.url}/api/admin/usage`, { headers: { authorization: `Bearer ${ADMIN}` } });
    return (await res.json()).data.find((t) => t.key_prefix === tenant)?.totals;
  };

  it("meters the elements of a batch the edge refused, once per request", async () => {
    const auth = { authorization: `Bearer ${sloppyToken}` };
    const mixed = JSON.stringify([{ event_type: "signup" }, { event_type: "bad type!" }, { params: {} }]);
    for (let i = 0; i < 2; i++) {
      // a client retry with the same Idempotency-Key is counted once
      const res = await post(mf, "/batch", mixed, { ...auth, "idempotency-key": "order-1" });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).rejected.length, 2);
    }
    const none = await post(mf, "/batch", JSON.stringify([{ event_type: "" }]), auth);
    assert.equal(none.status, 422);
    const usage = await eventually(async () => {
      const t = await adminUsage("sloppy");
      return t && t.dropped_invalid === 3 && t.accepted === 1 ? t : null;
    }, 20000, "the refused elements in the tenant's usage");
    assert.equal(usage.dropped_invalid, 3);
  });

  it("refuses purges not signed by the core", async () => {
    const url = new URL("/internal/v1/purge", (await mf.ready).origin);
    const ts = Date.now();
    const forged = serviceSignature("not-the-edge-secret-0123456789abcdef", "purge", ts, "", "tenant:capped");
    const res = await fetch(url, { method: "POST", body: "tenant:capped", headers: { "x-tracker-timestamp": String(ts), "x-tracker-signature": forged } });
    assert.equal(res.status, 401);
    const old = ts - 600_000;
    const stale = serviceSignature(EDGE_SECRET, "purge", old, "", "tenant:capped");
    const res2 = await fetch(url, { method: "POST", body: "tenant:capped", headers: { "x-tracker-timestamp": String(old), "x-tracker-signature": stale } });
    assert.equal(res2.status, 401, "a purge older than five minutes is refused");
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

    // the edge's KV copy was filled before the cap; the core's purge makes the next read refill it
    const kv = await mf.getKVNamespace("TRACKER_KV");
    const batch = () => post(mf, "/batch", JSON.stringify([{ event_type: "signup" }]), { authorization: `Bearer ${token}` });
    const started = Date.now();
    let early = 0; // batches the edge took before it learned of the cap: the core drops them as quota
    const res = await eventually(async () => {
      const r = await batch();
      if (r.status === 200) early += 1;
      return r.status === 429 ? r : null;
    }, 10000, "the edge refusing the capped tenant's batches");
    console.log(`the edge refused ingestion ${Date.now() - started} ms after the core's record showed the cap`);
    assert.equal(res.status, 429);
    assert.equal((await res.json()).error.code, "quota_exceeded");
    const retry = Number(res.headers.get("retry-after"));
    const left = Math.ceil((record.quota.blocked_until - Date.now()) / 1000);
    assert.ok(Math.abs(retry - left) <= 5, `Retry-After ${retry}, ${left} s left in the month`);
    assert.equal(res.headers.get("ratelimit-policy"), `"events";q=${ALLOWANCE};w=2592000`);
    assert.equal(res.headers.get("ratelimit"), `"events";r=0;t=${retry}`);
    assert.ok(kvOpen("tenant:capped", await kv.get("tenant:capped")).quota, "the refilled KV record carries the block");
    const ingest = await post(mf, "/ingest", JSON.stringify({ event_type: "signup" }), { authorization: `Bearer ${token}` });
    assert.equal(ingest.status, 429);
    const postback = await get(mf, `/p?token=${token}&event_type=sale`);
    assert.equal(postback.status, 429);

    // a visitor never sees the cap
    assert.equal((await get(mf, link)).status, 307);
    assert.equal((await get(mf, "/i?key_prefix=capped")).status, 200);
    const beacon = await post(mf, "/t/auto", JSON.stringify({ key: "capped", url: "https://shop.example/" }), { "content-type": "text/plain" });
    assert.equal(beacon.status, 204);

    // and the core counted every event past the cap as a quota drop: 3 accepted, 2 + 3 (+ early batches) dropped
    const dropped = 5 + early;
    const usage = await eventually(async () => {
      const t = await adminUsage("capped");
      return t && t.accepted + t.dropped_quota === ALLOWANCE + dropped ? t : null;
    }, 20000, "the core's usage of the capped tenant");
    assert.equal(usage.accepted, ALLOWANCE);
    assert.equal(usage.dropped_quota, dropped);
    assert.equal(usage.redirects, ALLOWANCE + 3);

    // an upgrade made at the core directly (not through the edge's API) reaches the edge at once: the core pushes
    // the purge (EDGE_URLS)
    const patched = await fetch(`${core.url}/api/tenants/capped`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ plan: "pro" }),
    });
    assert.equal(patched.status, 200);
    const lifted = Date.now();
    await eventually(async () => (await batch()).status === 200, 5000, "the edge taking batches after the upgrade");
    console.log(`the edge took batches again ${Date.now() - lifted} ms after the upgrade at the core`);
  });
  it("a tenant refuses open postbacks and budgets the events anyone can send, at the edge and the core", async () => {
    const admin = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };
    const created = await fetch(`${core.url}/api/tenants`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ name: "Open", key_prefix: "openly", plan: "pro" }),
    });
    assert.equal(created.status, 201);
    const key = { authorization: `Bearer ${(await created.json()).api_key.secret}`, "content-type": "application/json" };
    const tokenRes = await fetch(`${core.url}/api/tokens`, { method: "POST", headers: key, body: "{}" });
    const ingestToken = (await tokenRes.json()).secret;
    // open by default, as the replaced system was
    assert.equal((await get(mf, "/p?key_prefix=openly&order=1")).status, 200);
    const put = await fetch(`${core.url}/api/intake`, {
      method: "PUT",
      headers: key,
      body: JSON.stringify({ open_postbacks: false, unauthenticated_monthly_events: 2 }),
    });
    assert.equal(put.status, 200);
    // the core pushed the change to the edge (EDGE_URLS): open postbacks are refused there and here
    let early = 0; // open postbacks the edge took before it learned of the change: kept or dropped by the budget
    const refused = await eventually(async () => {
      const r = await get(mf, "/p?key_prefix=openly&order=2");
      if (r.status === 200) early += 1;
      return r.status === 401 ? r : null;
    }, 5000, "the edge refusing open postbacks");
    assert.equal((await refused.json()).error.code, "unauthorized");
    assert.equal((await fetch(`${core.url}/p?key_prefix=openly&order=3`)).status, 401);
    await sleep(300); // the filter's copy of the tenant's settings is renewed
    // a postback with the tenant's token is still taken
    assert.equal((await get(mf, `/p?token=${ingestToken}&order=4`)).status, 200);
    // pixels anyone can send: they fill the budget (with the open postbacks sent before)
    for (let i = 0; i < 3; i++) assert.equal((await get(mf, `/i?key_prefix=openly&n=${i}`)).status, 200);
    const open = 1 + early + 3;
    const intake = await eventually(async () => {
      const r = await (await fetch(`${core.url}/api/intake`, { headers: key })).json();
      return r.this_month.unauthenticated_kept + r.this_month.unauthenticated_dropped === open ? r : null;
    }, 20000, "the filter judging the open events");
    assert.deepEqual([intake.open_postbacks, intake.unauthenticated_monthly_events], [false, 2]);
    assert.deepEqual([intake.this_month.unauthenticated_kept, intake.this_month.unauthenticated_dropped], [2, open - 2]);
    const usage = await eventually(async () => {
      const t = await adminUsage("openly");
      return t && t.accepted === 3 ? t : null;
    }, 20000, "the billable events of the tenant");
    // billed: the two open events within the budget and the token's postback; those past it are not
    assert.deepEqual([usage.accepted, usage.unauthenticated, usage.dropped_unauthenticated], [3, 2, open - 2]);
    const bad = await fetch(`${core.url}/api/intake`, { method: "PUT", headers: key, body: JSON.stringify({ open_postbacks: "no" }) });
    assert.equal(bad.status, 400);
  });
});

