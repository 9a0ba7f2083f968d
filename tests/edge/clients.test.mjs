// Our clients in a real headless Chromium, against a real core node and through the edge Worker under Miniflare:
// the beacon served at /t.js (pageviews, an SPA navigation, a custom event queued before the script loaded and one
// after, an outbound click that still navigates, the redirect's ad_click_id on every event, a refused origin in
// the drop ledger), and the TypeScript SDK's links and batch client against the node. Every event is read back
// from /api/events.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { Core, ROOT, browser, eventually, site, worker } from "./harness.mjs";
import * as sdk from "../../clients/sdk-typescript/dist/index.js";

const ADMIN = "admin-token-for-client-tests-0123456789abcdef";
// a browser's own user agent: the filter drops unauthenticated events from headless ones as bots
const CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

describe("the beacon and the SDK in a real browser, at the core and at the edge", () => {
  const core = new Core({ ADMIN_TOKEN: ADMIN, CACHE_TTL_SECS: "0" });
  let mf, edge, chromium, shop;
  const keys = {};
  const signing = {};

  const api = async (method, path, credential, body) => {
    const res = await fetch(`${core.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${credential}`, ...(body && { "content-type": "application/json" }) },
      body: body && JSON.stringify(body),
    });
    return [res.status, await res.json()];
  };
  const tenant = async (prefix) => {
    const [status, body] = await api("POST", "/api/tenants", ADMIN, { name: prefix, key_prefix: prefix, plan: "pro" });
    assert.equal(status, 201, JSON.stringify(body));
    keys[prefix] = body.api_key.secret;
    signing[prefix] = { keyPrefix: prefix, kid: body.signing_key.kid, secret: body.signing_key.signing_secret, encryptionKey: body.signing_key.encryption_key };
  };
  const events = async (prefix, n, what) =>
    eventually(async () => {
      const [, body] = await api("GET", "/api/events?limit=100", keys[prefix]);
      return body.data.length >= n && body.data;
    }, 20000, what);

  before(async () => {
    await core.start();
    mf = worker({ CORE_URLS: core.url, CACHE_TTL_MS: "0" });
    edge = (await mf.ready).origin;
    for (const prefix of ["shopcore", "shopedge", "locked", "options"]) await tenant(prefix);
    const page = (base, prefix) => `<!doctype html><title>shop</title>
      <script>window.tracker=window.tracker||function(){(tracker.q=tracker.q||[]).push(arguments)};tracker('signup',{plan:'pro'})</script>
      <script async src="${base}/t.js" data-key="${prefix}"></script>
      <h1>Landing</h1><p><a id="out" href="http://localhost:PORT/offer">See the offer</a></p>`;
    const pages = {
      "/core/landing": page("CORE", "shopcore"),
      "/edge/landing": page("EDGE", "shopedge"),
      "/locked": page("CORE", "locked"),
      "/locked-edge": page("EDGE", "locked"),
      "/offer": "<!doctype html><title>offer</title><h1>Offer</h1>",
      "/options/hash": `<!doctype html><script async src="CORE/t.js" data-key="options" data-hash data-exclude="/admin/*,/preview,/options/hash#/private*"></script><h1>Hash</h1>`,
      // the script from the core, its events to the edge (data-host), every link click an event (data-track="all")
      "/options/all": `<!doctype html><script src="CORE/t.js" data-key="options" data-host="EDGE/" data-track="all"></script>
        <a id="in" href="/offer">Our offer</a>`,
      "/options/dnt": `<!doctype html><script src="CORE/t.js" data-key="options" data-dnt></script><h1>Private</h1>`,
      "/options/nospa": `<!doctype html><script src="CORE/t.js" data-key="options" data-no-spa data-track="none"></script>
        <a id="out" href="http://localhost:PORT/offer">Out</a>`,
    };
    shop = await site(pages);
    // the pages name the site's own port, known only now
    for (const path of Object.keys(pages)) {
      pages[path] = pages[path].replaceAll("CORE", core.url).replaceAll("EDGE", edge).replaceAll("PORT", new URL(shop.url).port);
    }
    chromium = await browser();
  });

  after(async () => {
    await chromium?.close();
    await shop?.close();
    await mf?.dispose();
    core.cleanup();
  });

  it("serves t.js with its type, caching, ETag and CORS, within 1.5 KB gzipped, at the core and the edge", async () => {
    for (const base of [core.url, edge]) {
      const alias = await fetch(`${base}/t.js`);
      assert.equal(alias.status, 200);
      assert.match(alias.headers.get("content-type"), /^application\/javascript/);
      assert.equal(alias.headers.get("access-control-allow-origin"), "*");
      assert.match(alias.headers.get("cache-control"), /max-age=300\b/);
      const etag = alias.headers.get("etag");
      const script = await alias.text();
      assert.ok(gzipSync(script, { level: 9 }).length <= 1536, "1.5 KB gzipped at most");
      const version = etag.replaceAll('"', "");
      const pinned = await fetch(`${base}/t.js?v=${version}`);
      assert.match(pinned.headers.get("cache-control"), /max-age=31536000, immutable/);
      assert.equal(await pinned.text(), script);
      const again = await fetch(`${base}/t.js`, { headers: { "if-none-match": etag } });
      assert.equal(again.status, 304);
      const stale = await fetch(`${base}/t.js?v=0000`);
      assert.match(stale.headers.get("cache-control"), /max-age=300\b/, "an old version's URL is not cached for long");
    }
  });

  for (const tier of ["core", "edge"]) {
    it(`${tier}: a visit from a tracking link is stitched together by its ad_click_id`, async () => {
      const prefix = `shop${tier}`;
      const base = tier === "core" ? core.url : edge;
      const link = core.link(prefix, `${shop.url}/${tier}/landing`);
      const page = await chromium.newPage();
      await page.setUserAgent(CHROME);
      // the redirect lands on the site with ?ad_click_id=<the click's event id>
      await page.goto(base + link, { waitUntil: "networkidle0" });
      const landed = new URL(page.url());
      const clickId = landed.searchParams.get("ad_click_id");
      assert.match(clickId, /^[0-9a-f-]{36}$/);
      await eventually(() => page.evaluate(() => typeof window.tracker === "function" && !window.tracker.q), 5000, "t.js loaded");
      await page.evaluate(() => {
        history.pushState({}, "", "/pricing");
        history.replaceState({}, "", "/pricing"); // the same page: no second pageview
        tracker("plan_selected", { tier: "gold", seats: 3 });
      });
      // back to the landing page: popstate, a pageview of it again
      await page.evaluate(() => new Promise((done) => { addEventListener("popstate", done, { once: true }); history.back(); }));
      await page.screenshot({ path: join(core.dir, "..", `tracker-beacon-${tier}-landing.png`) });
      // an outbound click: the browser still navigates, the event still arrives
      await Promise.all([page.waitForNavigation(), page.click("#out")]);
      assert.equal(new URL(page.url()).pathname, "/offer");
      await page.screenshot({ path: join(core.dir, "..", `tracker-beacon-${tier}-offer.png`) });
      await page.close();

      const all = await events(prefix, 7, `${tier}: the click and six beacon events`);
      const beacons = all.filter((e) => e.request_path === "/t/auto");
      const byType = {};
      for (const e of beacons) (byType[e.event_type] ??= []).push(e);
      assert.deepEqual(Object.keys(byType).sort(), ["outbound_click", "pageview", "plan_selected", "signup"]);
      const landing = `/${tier}/landing?ad_click_id=${clickId}`;
      assert.deepEqual(byType.pageview.map((e) => e.params.page).sort(), ["/pricing", landing, landing].sort());
      assert.equal(byType.signup[0].params.plan, "pro", "the call made before the script loaded");
      assert.deepEqual([byType.plan_selected[0].params.tier, byType.plan_selected[0].params.seats], ["gold", "3"]);
      assert.equal(byType.outbound_click[0].params.href, `http://localhost:${new URL(shop.url).port}/offer`);
      assert.equal(byType.outbound_click[0].params.text, "See the offer");
      for (const e of beacons) {
        assert.equal(e.params.ad_click_id, clickId, `${e.event_type} carries the click id`);
        assert.equal(e.params.session_id, beacons[0].params.session_id, "one page, one session id");
        assert.equal(e.user_agent, CHROME);
      }
      assert.ok(all.some((e) => e.event_type === "click" && e.event_id === clickId), "the click itself");
    });
  }

  it("the beacon's options: hash routing, excluded paths, Do Not Track, no SPA, no or all click tracking, another host", async () => {
    const page = await chromium.newPage();
    await page.setUserAgent(CHROME);
    await page.goto(`${shop.url}/options/hash`, { waitUntil: "networkidle0" });
    const hash = (to) => page.evaluate((to) => new Promise((done) => {
      addEventListener("hashchange", done, { once: true });
      location.hash = to;
    }), to);
    await hash("#/settings");
    await hash("#/private/keys"); // excluded: with data-hash the hash is part of the path
    await page.evaluate(() => history.pushState({}, "", "/admin/users")); // excluded
    // a browser that asks not to be tracked, on a page whose tag honours it
    await page.evaluateOnNewDocument(() => Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true }));
    await page.goto(`${shop.url}/options/dnt`, { waitUntil: "networkidle0" });
    assert.equal(await page.evaluate(() => { tracker("ignored"); return typeof tracker; }), "function");
    const quiet = await chromium.newPage();
    await quiet.setUserAgent(CHROME);
    await quiet.goto(`${shop.url}/options/nospa`, { waitUntil: "networkidle0" });
    await quiet.evaluate(() => history.pushState({}, "", "/options/elsewhere"));
    await Promise.all([quiet.waitForNavigation(), quiet.click("#out")]);
    const all = await chromium.newPage();
    await all.setUserAgent(CHROME);
    const sentTo = [];
    all.on("request", (r) => r.url().endsWith("/t/auto") && sentTo.push(new URL(r.url()).origin));
    await all.goto(`${shop.url}/options/all`, { waitUntil: "networkidle0" });
    await Promise.all([all.waitForNavigation(), all.click("#in")]); // a link to this same site
    assert.equal(new URL(all.url()).pathname, "/offer");
    await Promise.all([page.close(), quiet.close(), all.close()]);
    assert.deepEqual(sentTo, [edge, edge], "data-host: to the edge, though the script came from the core");
    const seen = await events("options", 5, "the option pages' events");
    await new Promise((ok) => setTimeout(ok, 1500)); // anything more would have arrived by now
    const listed = await events("options", 5, "again");
    const pages = listed.map((e) => `${e.event_type} ${e.params.page}`).sort();
    assert.deepEqual(pages, [
      "outbound_click /options/all",
      "pageview /options/all",
      "pageview /options/hash",
      "pageview /options/hash#/settings",
      "pageview /options/nospa",
    ]);
    const internal = listed.find((e) => e.event_type === "outbound_click");
    assert.equal(internal.params.href, `${shop.url}/offer`, "data-track=all: a link to the same site too");
    assert.equal(internal.params.text, "Our offer");
    assert.equal(seen.length, 5);
  });

  it("a tenant's beacon refuses other origins, at the core and the edge: answered, dropped, in the ledger as `origin`", async () => {
    const [status, body] = await api("PUT", "/api/beacon", keys.locked, { allowed_origins: ["https://shop.example"] });
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(body.allowed_origins, ["https://shop.example"]);
    const [bad, refused] = await api("PUT", "/api/beacon", keys.locked, { allowed_origins: ["shop.example/path"] });
    assert.equal(bad, 400);
    assert.equal(refused.error.code, "invalid_origin");
    const page = await chromium.newPage();
    await page.setUserAgent(CHROME);
    const answers = [];
    page.on("response", (r) => r.url().endsWith("/t/auto") && answers.push(r.status()));
    await page.goto(`${shop.url}/locked`, { waitUntil: "networkidle0" });
    await page.goto(`${shop.url}/locked-edge`, { waitUntil: "networkidle0" }); // the edge reads the same list
    await page.close();
    const [, drops] = await eventually(async () => {
      const answer = await api("GET", "/api/drops?reason=origin", keys.locked);
      return answer[1].totals?.[0]?.count >= 4 && answer;
    }, 20000, "the refused beacons in the drop ledger");
    assert.deepEqual(drops.totals, [{ action: "drop", reason: "origin", count: 4 }], "each tier's pageview and queued signup");
    assert.deepEqual(answers, [204, 204, 204, 204], "answered like any other beacon");
    const [, listed] = await api("GET", "/api/events?limit=10", keys.locked);
    assert.equal(listed.data.length, 0, "nothing from another origin is kept (or billed)");
  });

  it("the TypeScript SDK's links redirect and its batch client's events are stored", async () => {
    const key = signing.shopcore;
    const signed = sdk.clickUrl(core.url, key, "https://offer.example/a%20b", { params: { campaign: "sdk" }, ext: ["gclid"] });
    // a destination the platform would not take makes no link at all
    assert.throws(() => sdk.clickUrl(core.url, key, "javascript:alert(1)"), (e) => e.code === "destination_scheme_not_allowed");
    const encrypted = sdk.encryptedClickUrl(core.url, key, "https://offer.example/hidden", { params: { campaign: "sdk" } });
    for (const url of [signed, `${signed}&gclid=G-1`, encrypted]) {
      const res = await fetch(url, { redirect: "manual" });
      assert.equal(res.status, 307, url);
      assert.match(res.headers.get("location"), /^https:\/\/offer\.example\/.*ad_click_id=/);
    }
    const tampered = signed.replace("campaign=sdk", "campaign=other");
    assert.equal((await fetch(tampered, { redirect: "manual" })).status, 403);
    const [, created] = await api("POST", "/api/tokens", keys.shopcore, { name: "server" });
    const client = new sdk.TrackerClient({ baseUrl: core.url, token: created.secret, flushIntervalMs: 0 });
    client.track({ event_type: "purchase", params: { order: "o-1", amount: 9.9 } });
    client.track({ event_type: "purchase", params: { order: "o-2" } });
    assert.equal(await client.flush(), 2);
    await client.close();
    const stored = await eventually(async () => {
      const purchases = (await events("shopcore", 1, "events")).filter((e) => e.event_type === "purchase");
      return purchases.length >= 2 && purchases;
    }, 20000, "the SDK's events");
    assert.deepEqual(stored.map((e) => e.params.order).sort(), ["o-1", "o-2"]);
    // the replaced SDK's client, configured as its README says, with the token in the base URL
    const legacy = new sdk.TrackerClient({ apiUrl: `${core.url}/v1/${created.secret}`, mode: "signed", hmacSecret: "unused", batchSize: 100, flushInterval: 1000 });
    legacy.track({
      event_type: "postback", ip: "203.0.113.1", user_agent: "Mozilla/5.0", referer: null, accept_language: null,
      request_path: "/p", request_host: "track.example.com", params: { click_id: "c-legacy", payout: "2.50" },
    });
    await legacy.destroy();
    const postback = await eventually(async () => {
      const found = (await events("shopcore", 1, "events")).find((e) => e.params.click_id === "c-legacy");
      return found;
    }, 20000, "the replaced SDK client's event");
    assert.equal(postback.params.payout, "2.50");
    assert.equal(stored.find((e) => e.params.order === "o-1").params.amount, "9.9");
  });

  it("the TypeScript SDK's generated API client works against the node and reports refusals by code", async () => {
    const platform = new sdk.ApiClient({ baseUrl: core.url, apiKey: keys.shopcore });
    const link = await platform.createLink({ destination: "https://offer.example/generated", name: "from the SDK" });
    assert.match(link.tu_id, /^tu_/);
    assert.equal((await platform.getLink(link.tu_id)).destination, "https://offer.example/generated");
    const page = await platform.listLinks({ limit: 10 });
    assert.ok(page.data.some((l) => l.tu_id === link.tu_id));
    const beacon = await platform.getBeacon();
    assert.match(beacon.script.snippet, /data-key="shopcore"/);
    await assert.rejects(platform.createLink({ destination: "javascript:alert(1)" }), (e) => e.status === 400 && e.code.length > 0);
    const stranger = new sdk.ApiClient({ baseUrl: core.url, apiKey: keys.locked });
    await assert.rejects(stranger.getLink(link.tu_id), (e) => e.status === 404, "another tenant's link does not exist for it");
  });

  it("the Python SDK's generated API client and batch client work against the node", async () => {
    const [, created] = await api("POST", "/api/tokens", keys.shopcore, { name: "python" });
    const script = `
import json, sys
from tracker_sdk import ApiClient, TrackerClient, TrackerError
base, key, token = sys.argv[1:4]
platform = ApiClient(base, key)
link = platform.create_link({"destination": "https://offer.example/python", "name": "from Python"})
assert platform.get_link(link["tu_id"])["destination"] == "https://offer.example/python"
try:
    platform.create_link({"destination": "javascript:alert(1)"})
    raise SystemExit("accepted a script URL")
except TrackerError as e:
    refused = [e.status, e.code]
with TrackerClient(base, token, flush_interval=0) as tracker:
    tracker.track({"event_type": "python_purchase", "params": {"order": "p-1"}})
print(json.dumps({"tu_id": link["tu_id"], "refused": refused}))
`;
    const { execFileSync } = await import("node:child_process");
    const out = execFileSync("python3", ["-c", script, core.url, keys.shopcore, created.secret], {
      env: { ...process.env, PYTHONPATH: join(ROOT, "clients/sdk-python/src") },
      encoding: "utf8",
    });
    const answer = JSON.parse(out);
    assert.match(answer.tu_id, /^tu_/);
    assert.equal(answer.refused[0], 400);
    const stored = await eventually(async () => {
      const found = (await events("shopcore", 1, "events")).filter((e) => e.event_type === "python_purchase");
      return found.length > 0 && found;
    }, 20000, "the Python client's event");
    assert.equal(stored[0].params.order, "p-1");
  });
});
