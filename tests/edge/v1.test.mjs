// The replaced system's clients against the edge Worker (Miniflare) and a real core node, after its tenants were
// imported with the CLI: exactly what its beacon and SDK send (tests/v1/clients.json, recorded from the clients
// themselves), its link and postback shapes, and where the events end up.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Core, ROOT, browser, eventually, get, post, site, worker } from "./harness.mjs";

const clients = JSON.parse(readFileSync(join(ROOT, "tests/v1/clients.json"), "utf8"));
const token = clients.tenant.ingest_token;
const onEdge = (url) => url.replace("https://track.example.com", "");
const desktop = { "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36" };

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
      const res = await post(mf, "/t/auto", send.body, { "content-type": send.content_type, ...desktop });
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
    let res = await get(mf, onEdge(urls.buildSignedClickUrl.url), desktop);
    assert.equal(res.status, 307);
    assert.match(res.headers.get("location"), /^https:\/\/offer\.example\/landing\?a=1&ad_click_id=/);
    res = await get(mf, onEdge(urls.buildTrackedClickUrl.url), desktop);
    assert.match(res.headers.get("location"), /^https:\/\/offer\.example\/spring\?ref=tu&ad_click_id=/);
    res = await get(mf, `/t/${clients.tenant.short_link}?sub1=mail&utm%5Bsource%5D=news`, desktop);
    assert.equal(res.status, 307, "an imported short link needs no signature");
    res = await get(mf, onEdge(urls.buildPostbackUrl.url));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).authenticated, false);
    res = await get(mf, onEdge(urls.buildPostbackUrl.url).replace("/p?", `/v1/${token}/p?`));
    assert.equal((await res.json()).authenticated, true);
    res = await get(mf, onEdge(urls.buildImpressionUrl.url), desktop);
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

// The same shapes sent the way its t.js sends them: navigator.sendBeacon from a page of another origin in a real
// Chromium (text/plain, no preflight), to the Worker and to a core node; and its pixels as <img> on a page, where
// a refused one must still be an image, never a broken one.
describe("the replaced system's beacon shapes from a real browser", () => {
  const core = new Core();
  let mf, chromium, page, shop;

  before(async () => {
    core.cli("tenant", "import", join(ROOT, "tests/v1/export.sql"));
    await core.start();
    mf = worker({ CORE_URLS: core.url });
    const edge = (await mf.ready).origin;
    const bodies = JSON.stringify(clients.beacon.sends.map((s) => s.body));
    const pixels = ["/i?key_prefix=6vct&campaign_id=7", "/i?key_prefix=nobody&campaign_id=7"];
    const img = (base) => pixels.map((p) => `<img width="40" height="40" style="border:1px solid #888" src="${base}${p}">`).join("");
    shop = await site({
      "/": `<!doctype html><title>shop</title><body><h1>shop</h1><p>${img(edge)} ${img(core.url)}</p><script>
        for (const base of ${JSON.stringify([edge, core.url])})
          for (const body of ${bodies}) window.sent = (window.sent || 0) + (navigator.sendBeacon(base + "/t/auto", body) ? 1 : 0);
      </script></body>`,
    });
    chromium = await browser();
    page = await chromium.newPage();
  });

  after(async () => {
    await chromium?.close();
    await shop?.close();
    await mf?.dispose();
    core.cleanup();
  });

  it("every beacon is recorded, at the edge and at the core", async () => {
    await page.goto(shop.url, { waitUntil: "networkidle0" });
    assert.equal(await page.evaluate(() => window.sent), 2 * clients.beacon.sends.length, "the browser queued every beacon");
    const images = await page.$$eval("img", (all) => all.map((i) => ({ done: i.complete, width: i.naturalWidth })));
    assert.deepEqual(images, Array(4).fill({ done: true, width: 1 }), "every pixel is a 1x1 image, refused or not");
    await page.screenshot({ path: join(core.dir, "..", "tracker-v1-beacon.png") });
    const n = clients.beacon.sends.length;
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) >= n + 1, 20000, "the edge's beacons at the core");
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="beacon"}')) >= n, 20000, "the core's beacons");
    const events = await core.stopAndDump();
    const beacons = events.filter((e) => e.request_path === "/t/auto");
    assert.equal(beacons.length, 2 * n);
    for (const e of beacons) {
      assert.equal(e.key_prefix, "6vct");
      assert.match(e.user_agent, /HeadlessChrome|Chrome/);
      assert.equal(e.params.session_id, "7e836cd564bf8426117d94810cdf934d");
    }
    assert.equal(events.filter((e) => e.event_type === "impression").length, 2, "the accepted pixels, one per tier");
  });
});
