// The edge Worker under Miniflare against a real core node: every endpoint, every rejection path, KV cache and
// core fallback, queue delivery into the core's durable log, and tenant isolation.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Core, clickId, eventually, get, kvOpen, kvSeal, post, worker } from "./harness.mjs";

const hmacHex = (secret, message) => createHmac("sha256", secret).update(message).digest("hex");
// a v1 link made without the checks every producer of ours applies (the replaced system's tools, say): only the
// destination is signed
const v1Link = (tenant, dest) => `/t?url=${encodeURIComponent(dest)}&sig=${tenant.prefix}_${hmacHex(tenant.secret, dest)}`;

describe("edge worker endpoints", () => {
  const core = new Core();
  let mf, acme, evil, acmeToken, evilToken;
  const expectStored = []; // event ids the core's log must hold at the end
  let accepted = 0; // events the edge accepted so far: all of them must reach the core
  const delivered = () => core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
  const allDelivered = () => eventually(async () => (await delivered()) >= accepted, 20000, `${accepted} events at the core`);

  before(async () => {
    acme = core.tenant("acme");
    evil = core.tenant("evil");
    acmeToken = core.token("acme");
    evilToken = core.token("evil");
    await core.start();
    mf = worker({ CORE_URLS: core.url, HMAC_SECRET: "global-secret" });
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  it("answers /health", async () => {
    const res = await get(mf, "/health");
    assert.equal(res.status, 200);
    assert.equal((await res.json()).tier, "edge");
  });

  it("redirects a v2 link with the click id, fills KV from the core, and forwards the click", async () => {
    const before = await core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    const res = await get(mf, core.link("acme", "https://shop.example/p?a=1#top", "--param", "campaign=spring"));
    assert.equal(res.status, 307);
    assert.equal(res.headers.get("cache-control"), "no-store, max-age=0");
    assert.equal(res.headers.get("referrer-policy"), "no-referrer");
    const location = res.headers.get("location");
    assert.match(location, /^https:\/\/shop\.example\/p\?a=1&ad_click_id=[0-9a-f-]{36}#top$/);
    expectStored.push(clickId(res));
    accepted += 1;
    const kv = await mf.getKVNamespace("TRACKER_KV");
    const stored = await kv.get("tenant:acme");
    assert.ok(!stored.includes(acme.secret), "the tenant's link secret is not in KV in the clear");
    const record = kvOpen("tenant:acme", stored);
    assert.equal(record.keys[0].kid, acme.kid, "the tenant's keys were fetched from the core and cached in KV, sealed");
    await eventually(async () => (await delivered()) > before, 15000, "delivery to the core");
  });

  it("reads tenants from KV before asking the core", async () => {
    // a tenant the core has never heard of, present only in KV
    const kv = await mf.getKVNamespace("TRACKER_KV");
    const kvonly = { key_prefix: "kvonly", active: true, keys: [{ kid: "k1", signing_secret: acme.secret, encryption_key: null, retires_at_ms: null }] };
    // a record in the clear, or sealed for another KV key, is no record: the core is asked (and knows neither)
    const signedFor = (prefix) => core.link("acme", "https://kv.example/", "--format", "v1").replace("sig=acme_", `sig=${prefix}_`);
    await kv.put("tenant:kvplain", JSON.stringify({ ...kvonly, key_prefix: "kvplain" }));
    assert.equal((await get(mf, signedFor("kvplain"))).status, 404, "a record in the clear is not trusted");
    await kv.put("tenant:kvmoved", kvSeal("tenant:acme", { ...kvonly, key_prefix: "kvmoved" }));
    assert.equal((await get(mf, signedFor("kvmoved"))).status, 404, "a sealed record moved to another key opens for none");
    await kv.put("tenant:kvonly", kvSeal("tenant:kvonly", kvonly));
    // a v1 signature covers only the destination, so acme's secret signs for kvonly too
    const link = core.link("acme", "https://kv.example/", "--format", "v1").replace("sig=acme_", "sig=kvonly_");
    const res = await get(mf, link);
    assert.equal(res.status, 307, "verified with the key found in KV");
    // the core has no such tenant and refuses the forwarded event permanently: it is dead-lettered, not dropped
    const id = clickId(res);
    const letter = await eventually(async () => {
      for (const k of (await kv.list({ prefix: "refused:" })).keys) {
        const body = await kv.get(k.name);
        if (body.includes(id)) return JSON.parse(body);
      }
      return null;
    }, 20000, "the refused event in the dead-letter queue");
    assert.equal(letter.reason, "refused_by_core");
    assert.equal(letter.events[0].key_prefix, "kvonly");
  });

  it("resolves short links through the core on a KV miss and caches them", async () => {
    const link = core.shortLink("acme", "https://acme.example/offer", "--format", "v1", "--param", "sub1=x");
    const tuId = link.match(/\/t\/(tu_[0-9a-f-]+)/)[1];
    const res = await get(mf, link);
    assert.equal(res.status, 307);
    assert.match(res.headers.get("location"), /^https:\/\/acme\.example\/offer\?ad_click_id=/);
    expectStored.push(clickId(res));
    accepted += 1;
    const kv = await mf.getKVNamespace("TRACKER_KV");
    assert.equal(kvOpen(`short:${tuId}`, await kv.get(`short:${tuId}`)).destination, "https://acme.example/offer");
    // another tenant signing acme's short link id with its own valid secret gets nothing
    const denied = await get(mf, `/t/${tuId}?sig=evil_${hmacHex(evil.secret, tuId)}`);
    assert.equal(denied.status, 404);
    assert.equal((await denied.json()).error.code, "unknown_short_link");
  });

  it("refuses bad links with the right 4xx and never redirects", async () => {
    const good = core.link("acme", "https://a.example/", "--param", "c=1");
    const cases = [
      ["/t", 400, "missing_link_params"],
      [good.replace("c=1", "c=2"), 403, "invalid_signature"],
      [good.replace("k=acme.", "k=nobody."), 404, "unknown_tenant"],
      [core.link("acme", "https://a.example/", "--expires-in=-10"), 410, "link_expired"],
      [v1Link(acme, "javascript:alert(1)"), 400, "destination_scheme_not_allowed"],
      [`${good}&c=3`, 400, "duplicate_param"],
      ["/t?url=https%3A%2F%2Fa.example%2F&sig=00", 400, "malformed_signature"],
      ["/nowhere", 404, "not_found"],
    ];
    for (const [path, status, code] of cases) {
      const res = await get(mf, path);
      assert.equal(res.headers.get("location"), null, `${path} must not redirect`);
      assert.equal(res.status, status, path);
      assert.equal((await res.json()).error.code, code, path);
    }
    // a signed destination with credentials goes where a browser would take it: the host after the @, without them
    const creds = await get(mf, v1Link(acme, "https://user@evil.example/"));
    assert.match(creds.headers.get("location"), /^https:\/\/evil\.example\/\?ad_click_id=/);
    expectStored.push(clickId(creds));
    accepted += 1;
    // v1 links signed with the global secret (a Worker secret) work; with another secret they do not
    const dest = "https://g.example/landing";
    const ok = await get(mf, `/t?url=${encodeURIComponent(dest)}&sig=${hmacHex("global-secret", dest)}&sub1=s`);
    assert.equal(ok.status, 307);
    expectStored.push(clickId(ok));
    accepted += 1;
    const forged = await get(mf, `/t?url=${encodeURIComponent(dest)}&sig=${hmacHex("guess", dest)}`);
    assert.equal(forged.status, 403);
  });

  it("serves postbacks, pixels and the beacon with the core's semantics", async () => {
    let res = await get(mf, "/p?key_prefix=acme&event_type=purchase&click_id=c1");
    assert.equal(res.status, 200);
    let body = await res.json();
    assert.equal(body.authenticated, false);
    expectStored.push(body.event_id);
    res = await get(mf, `/p?token=${acmeToken}&click_id=c2`);
    body = await res.json();
    assert.equal(body.authenticated, true);
    expectStored.push(body.event_id);
    accepted += 2;
    res = await get(mf, `/p?token=${evilToken}&key_prefix=acme`);
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error.code, "tenant_mismatch");
    res = await get(mf, "/p?token=trk_ing_forged");
    assert.equal(res.status, 401);

    res = await get(mf, "/i?key_prefix=acme&creative=7");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/gif");
    assert.match(res.headers.get("cache-control"), /no-store/);
    assert.equal(Buffer.from(await res.arrayBuffer()).subarray(0, 6).toString(), "GIF89a");
    accepted += 1;

    res = await post(mf, "/t/auto", JSON.stringify({ key: "acme", url: "https://site.example/a", params: { lang: "en" } }), { "content-type": "text/plain;charset=UTF-8" });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    accepted += 1;
    res = await mf.dispatchFetch("http://edge.test/t/auto", { method: "OPTIONS" });
    assert.equal(res.status, 204);
    assert.match(res.headers.get("access-control-allow-methods"), /POST/);
    res = await post(mf, "/t/auto", JSON.stringify({ key: "ghost" }));
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    res = await post(mf, "/t/auto", "not json");
    assert.equal((await res.json()).error.code, "invalid_beacon");
  });

  it("accepts /batch and /ingest with the tenant from the token, packed into few queue messages", async () => {
    await allDelivered();
    const batchesBefore = await core.metric("tracker_edge_batches_total");
    const events = Array.from({ length: 1000 }, (_, i) => ({
      event_type: "purchase",
      params: { order: `o-${i}`, amount: i, sub1: "google_search" },
      user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    }));
    let res = await post(mf, "/batch", JSON.stringify(events), { authorization: `Bearer ${acmeToken}` });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).accepted, 1000);
    accepted += 1000;
    // a retried request with the same Idempotency-Key is stored once
    const retried = JSON.stringify([1, 2, 3].map((n) => ({ event_type: "retried", params: { n } })));
    for (let i = 0; i < 2; i++) {
      res = await post(mf, "/batch", retried, { authorization: `Bearer ${acmeToken}`, "idempotency-key": "order-42" });
      assert.equal(res.status, 200);
    }
    accepted += 3;
    res = await post(mf, "/batch", retried, { authorization: `Bearer ${acmeToken}`, "idempotency-key": "bad key!" });
    assert.equal((await res.json()).error.code, "invalid_idempotency_key");
    res = await post(mf, "/batch", JSON.stringify([{ event_type: "x", key_prefix: "acme" }]), { authorization: `Bearer ${evilToken}` });
    assert.equal(res.status, 422, "a body naming a tenant is refused");
    res = await post(mf, "/batch", "[]", {});
    assert.equal(res.status, 401);
    res = await post(mf, "/ingest", JSON.stringify({ event_type: "signup", params: { plan: "pro" } }), { authorization: `Bearer ${evilToken}` });
    assert.equal(res.status, 200);
    expectStored.push((await res.json()).event_id);
    accepted += 1;
    // 1,000 events of ~300 bytes travel in a handful of messages, each one signed intake batch at the core
    await allDelivered();
    const batches = (await core.metric("tracker_edge_batches_total")) - batchesBefore;
    assert.ok(batches <= 8, `${batches} queue messages for 1,001 events`);
  });

  it("leaves every event it accepted in the core's durable log, exactly once, under the right tenant", async () => {
    await allDelivered();
    const stored = await core.stopAndDump();
    const ids = new Map();
    for (const e of stored) ids.set(e.event_id, (ids.get(e.event_id) ?? 0) + 1);
    for (const id of expectStored) assert.equal(ids.get(id), 1, `event ${id} stored exactly once`);
    assert.ok([...ids.values()].every((n) => n === 1), "no duplicates");
    const purchases = stored.filter((e) => e.event_type === "purchase" && e.params.order);
    assert.equal(purchases.length, 1000);
    assert.ok(purchases.every((e) => e.key_prefix === "acme" && e.auth === "token"));
    assert.equal(purchases.find((e) => e.params.order === "o-7").params.amount, "7", "params arrive whole");
    assert.equal(stored.filter((e) => e.event_type === "retried").length, 3, "the retried batch is stored once");
    const signup = stored.find((e) => e.event_type === "signup");
    assert.equal(signup.key_prefix, "evil");
    const click = stored.find((e) => e.event_id === expectStored[0]);
    assert.equal(click.params.campaign, "spring");
    assert.equal(click.ip, "203.0.113.7");
    assert.equal(click.auth, "link");
  });
});
