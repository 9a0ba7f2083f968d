// The replaced system's clients against the edge Worker (Miniflare) and a real core node, after its tenants were
// imported with the CLI: exactly what its beacon and SDK send (tests/v1/clients.json, recorded from the clients
// themselves), its link and postback shapes, and where the events end up.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Core, ROOT, eventually, get, post, worker } from "./harness.mjs";

const clients = JSON.parse(readFileSync(join(ROOT, "tests/v1/clients.json"), "utf8"));
const token = clients.tenant.ingest_token;
const onEdge = (url) => url.replace("https://track.example.com", "");
const browser = { "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36" };

describe("the replaced system's clients at the edge", () => {
  const core = new Core();
  let mf;
  let sent = 0;

  before(async () => {
    const report = core.cli("tenant", "import", join(ROOT, "tests/v1/export.sql"));
    assert.match(report, /^tenants\s+2\s+0\s+0\s+0$/m, report);
    core.cli("global", "assign", "6vct");
    await core.start();
    mf = worker({ CORE_URLS: core.url });
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  it("takes every beacon its t.js sends", async () => {
    for (const send of clients.beacon.sends) {
      const res = await post(mf, "/t/auto", send.body, { "content-type": send.content_type, ...browser });
      assert.equal(res.status, 204, send.name);
      assert.equal(res.headers.get("access-control-allow-origin"), "*");
      sent += 1;
    }
  });

  it("takes its SDK's batches on a base URL that carries the token, and says how on the plain /batch", async () => {
    const body = clients.sdk_batch.body;
    const res = await post(mf, `/v1/${token}/batch`, body, { "content-type": clients.sdk_batch.content_type });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).accepted, 2);
    sent += 2;
    const plain = await post(mf, "/batch", body, { "content-type": "application/json" });
    assert.equal(plain.status, 401);
    assert.match((await plain.json()).error.message, /\/v1\/<ingest token>/);
    assert.equal((await post(mf, "/v1/pt_6vct_wrong/batch", body)).status, 401);
  });

  it("redirects its links and takes its postbacks and pixels", async () => {
    const urls = clients.sdk_urls;
    let res = await get(mf, onEdge(urls.buildSignedClickUrl.url), browser);
    assert.equal(res.status, 307);
    assert.match(res.headers.get("location"), /^https:\/\/offer\.example\/landing\?a=1&ad_click_id=/);
    res = await get(mf, onEdge(urls.buildTrackedClickUrl.url), browser);
    assert.match(res.headers.get("location"), /^https:\/\/offer\.example\/spring\?ref=tu&ad_click_id=/);
    res = await get(mf, `/t/${clients.tenant.short_link}?sub1=mail&utm%5Bsource%5D=news`, browser);
    assert.equal(res.status, 307, "an imported short link needs no signature");
    res = await get(mf, onEdge(urls.buildPostbackUrl.url));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).authenticated, false);
    res = await get(mf, onEdge(urls.buildPostbackUrl.url).replace("/p?", `/v1/${token}/p?`));
    assert.equal((await res.json()).authenticated, true);
    res = await get(mf, onEdge(urls.buildImpressionUrl.url), browser);
    assert.equal(res.headers.get("content-type"), "image/gif");
    assert.equal(res.headers.get("x-tracker-refused"), null);
    sent += 6;
    // a pixel whose event is refused is still an image
    res = await get(mf, "/i?key_prefix=nobody&campaign_id=1");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/gif");
    assert.equal(res.headers.get("x-tracker-refused"), "unknown_tenant");
  });

  it("delivers every event to the core under the tenant, and the token to nowhere", async () => {
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) >= sent, 20000, `${sent} events at the core`);
    const events = await core.stopAndDump();
    assert.equal(events.length, sent);
    assert.ok(events.every((e) => e.key_prefix === "6vct"));
    assert.ok(!JSON.stringify(events).includes(token), "the token in the base URL is never stored");
    const pageviews = events.filter((e) => e.event_type === "pageview");
    assert.equal(pageviews.length, 4);
    assert.ok(pageviews.some((e) => e.params.page === "/checkout?step=2"));
    const outbound = events.find((e) => e.event_type === "outbound_click");
    assert.equal(outbound.params.href, "https://partner.example/offer?x=1");
    const signup = events.find((e) => e.event_type === "signup");
    assert.equal(signup.overflow, true);
    assert.deepEqual(signup.raw_payload.overflow.params, [["utm[source]", "news"]]);
    assert.equal(signup.raw_payload.v1.request_path, "/signup");
    assert.equal(signup.request_path, "/v1/batch");
    const unsigned = events.find((e) => e.params.sub1 === "mail");
    assert.equal(unsigned.params.tu_id, clients.tenant.short_link);
    assert.deepEqual(unsigned.raw_payload.overflow.params, [["utm[source]", "news"]]);
  });
});
