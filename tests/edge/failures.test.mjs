// Failure behaviour of the edge: core down (retries, then the dead-letter queue, parked in KV), failover between
// core nodes, and per-tenant rate limits that are checked only after authenticity.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Core, clickId, eventually, freePort, get, kvSeal, worker } from "./harness.mjs";

describe("edge worker failure modes", () => {
  const core = new Core();
  const workers = [];
  let deadUrl;

  before(async () => {
    core.tenant("acme");
    core.tenant("beta");
    await core.start();
    deadUrl = `http://127.0.0.1:${await freePort()}`;
  });

  after(async () => {
    for (const mf of workers) await mf.dispose();
    core.cleanup();
  });

  it("retries while every core node is down, then dead-letters the events (parked in KV), never drops them", async () => {
    // the queue gives up after one retry here, before the consumer's own parking (tests/edge/outage.test.mjs):
    // the dead-letter queue's consumer parks the message, with its batch id, for the replay
    const mf = worker({ CORE_URLS: deadUrl, RETRY_MIN_DELAY_SECS: "1" }, { maxRetries: 1 });
    workers.push(mf);
    const kv = await mf.getKVNamespace("TRACKER_KV");
    // with the core down the tenant's keys must already be at the edge: put the record the core serves into KV,
    // as the platform API does
    const link = core.link("acme", "https://a.example/");
    await kv.put("tenant:acme", kvSeal("tenant:acme", JSON.parse(await core.lookup("/internal/v1/tenants/acme"))));
    const res = await get(mf, link);
    assert.equal(res.status, 307, "the redirect does not depend on the core");
    const id = clickId(res);
    const parked = await eventually(async () => {
      const { keys } = await kv.list({ prefix: "dlq:" });
      for (const k of keys) {
        const body = await kv.get(k.name);
        if (body.includes(id)) return body;
      }
      return null;
    }, 30000, "the dead letter");
    assert.equal(JSON.parse(parked).events[0].event_id, id, "the whole event is in the dead letter");
    assert.match(JSON.parse(parked).batch_id, /^q-/, "with the batch id it was sent with, for an idempotent replay");
  });

  it("answers redirects without waiting for a slow core", async () => {
    // a core that takes 3 s to answer anything
    const slow = createServer((req, res) => setTimeout(() => { res.writeHead(503); res.end(); }, 3000));
    await new Promise((ok) => slow.listen(0, "127.0.0.1", ok));
    try {
      const mf = worker({ CORE_URLS: `http://127.0.0.1:${slow.address().port}` });
      workers.push(mf);
      const record = kvSeal("tenant:acme", JSON.parse(await core.lookup("/internal/v1/tenants/acme")));
      await (await mf.getKVNamespace("TRACKER_KV")).put("tenant:acme", record);
      const link = core.link("acme", "https://a.example/");
      await get(mf, link); // warm the isolate
      const started = Date.now();
      const res = await get(mf, link);
      const took = Date.now() - started;
      assert.equal(res.status, 307);
      assert.ok(took < 1000, `the redirect took ${took} ms while the core needs 3,000`);
    } finally {
      slow.closeAllConnections();
      slow.close();
    }
  });

  it("delivers straight to the core when the queue cannot take a click", async () => {
    const mf = worker({ CORE_URLS: core.url }, { eventsQueue: false });
    workers.push(mf);
    const before = await core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    const res = await get(mf, core.link("acme", "https://a.example/fallback"));
    assert.equal(res.status, 307, "the click is answered anyway");
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) > before, 15000, "direct delivery");
  });

  it("fails over to the next core node", async () => {
    // a message keeps to its home node for FAILOVER_AFTER_SECS (a batch is never split between two nodes' logs by a
    // brief restart), then goes to any that takes it
    const mf = worker({ CORE_URLS: `${deadUrl},${core.url}`, FAILOVER_AFTER_SECS: "2", RETRY_MIN_DELAY_SECS: "1" });
    workers.push(mf);
    const before = await core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    for (let i = 0; i < 4; i++) assert.equal((await get(mf, core.link("beta", `https://b.example/${i}`))).status, 307);
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) >= before + 4, 20000, "delivery through the live node");
  });

  it("rate-limits per tenant and client IP, after authenticity, without touching other tenants", async () => {
    const mf = worker({ CORE_URLS: core.url, RATE_LIMIT_IP_PER_SEC: "2" });
    workers.push(mf);
    const link = core.link("acme", "https://a.example/");
    // forged requests are refused as forged and spend nobody's budget
    for (let i = 0; i < 10; i++) assert.equal((await get(mf, link.replace(/s=[^&]+/, "s=AAAA"))).status, 400);
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await get(mf, link)).status);
    assert.deepEqual(statuses.slice(0, 4), [307, 307, 307, 307], "a burst of twice the rate passes");
    const limited = await get(mf, link);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);
    assert.equal((await limited.json()).error.code, "rate_limited");
    assert.equal((await get(mf, link, { "cf-connecting-ip": "198.51.100.1" })).status, 307, "another client is not limited");
    assert.equal((await get(mf, core.link("beta", "https://b.example/"))).status, 307, "another tenant is not limited");
  });

  it("limits how often one client can send the edge to the core with unknown ids", async () => {
    const mf = worker({ CORE_URLS: core.url, RATE_LIMIT_LOOKUP_MISS_PER_SEC: "2" });
    workers.push(mf);
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await get(mf, `/p?key_prefix=nobody${i}`, { "cf-connecting-ip": "192.0.2.9" })).status);
    assert.deepEqual(statuses.slice(0, 4), [404, 404, 404, 404], "misses are answered from the core while within the limit");
    assert.ok(statuses.slice(4).every((s) => s === 429), `then refused without asking the core: ${statuses}`);
    const limited = await get(mf, "/p?key_prefix=nobody99", { "cf-connecting-ip": "192.0.2.9" });
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);
    assert.equal((await get(mf, "/p?key_prefix=nobody0", { "cf-connecting-ip": "192.0.2.9" })).status, 404, "a cached answer costs nothing");
    assert.equal((await get(mf, "/p?key_prefix=acme", { "cf-connecting-ip": "192.0.2.10" })).status, 200, "other clients are unaffected");
  });
});
