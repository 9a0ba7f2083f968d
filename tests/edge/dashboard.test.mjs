// The dashboard in headless Chromium (Debian's, driven by puppeteer-core), against a real core node with seeded data
// and through the edge Worker under Miniflare: a refused key, signing in (the key never kept by the page), a click
// made during the test appearing live, a link created and clicked, a report equal to the API's answer, a webhook
// redelivered, signing out; events filtered, tailed live and opened, a report's CSV, a test webhook, a link edited,
// expired and deleted, an API key made and revoked, the sidebar by keyboard, a read-only key without write controls;
// every page (tenant and operator) screenshotted wide and narrow, light and dark, checked by axe and free of console
// errors; and the budgets: size, first render on a cold cache, a 100,000-point chart.
//
// DASHBOARD_TIERS=edge runs the per-tier tests through the Worker only (the pages and budgets too): the core node
// embeds dashboard/dist when it is compiled, so until it is rebuilt it serves the dashboard as it was then.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Core, ROOT, browser, eventually, freePort, worker } from "./harness.mjs";

const ADMIN = "admin-token-for-dashboard-tests-0123456789";
const CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
/** Where the screenshots go (kept after the run, for people to look at). */
const SHOTS = process.env.DASHBOARD_SCREENSHOTS || join(ROOT, "target/dashboard-screenshots");
const DIST = join(ROOT, "dashboard/dist");
const AXE = readFileSync(join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
const TENANT_PAGES = ["overview", "events", "links", "reports", "match", "webhooks", "rules", "usage", "keys", "install"];
const OPERATOR_PAGES = ["tenants", "admin-usage"];
const TIERS = (process.env.DASHBOARD_TIERS || "core,edge").split(",").filter(Boolean);
assert.ok(TIERS.length && TIERS.every((t) => t === "core" || t === "edge"), `DASHBOARD_TIERS: core, edge or both, not ${TIERS}`);

describe("dashboard", () => {
  const core = new Core({ ADMIN_TOKEN: ADMIN, WEBHOOK_ALLOW_PRIVATE: "true", CACHE_TTL_SECS: "0" });
  let mf, edge, chromium, key, seededLink, receiver;
  const delivered = [];

  /** A platform API call at the core with a bearer credential: `[status, body]`. */
  const api = async (method, path, body, credential = key) => {
    const headers = { authorization: `Bearer ${credential}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${core.url}${path}`, { method, headers, body: body && JSON.stringify(body) });
    const text = await res.text();
    return [res.status, text ? JSON.parse(text) : null];
  };

  /** Events sent so far (clicks, and the events the match check ingests). */
  let sent = 0;
  /** Follows a tracking link like a visitor's browser would (without leaving for the destination). */
  const click = (url) => {
    sent += 1;
    return fetch(url, { redirect: "manual", headers: { "user-agent": CHROME } });
  };

  /** Waits until the hot tier has counted every click made so far (counting is asynchronous). */
  const counted = () =>
    eventually(async () => {
      const to = Math.ceil(Date.now() / 60000) * 60000 + 60000;
      const query = { kind: "breakdown", filters: { from: to - 86400000, to }, by: "event_type" };
      const [, answer] = await api("POST", "/api/query", { query, tier: "hot" });
      return answer.total === sent;
    }, 20000, `the hot tier counting all ${sent} events`);

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    await core.start();
    mf = worker({ CORE_URLS: core.url, CACHE_TTL_MS: "0" });
    edge = (await mf.ready).origin;
    // a webhook receiver of our own, on this machine
    const port = await freePort();
    receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        delivered.push(JSON.parse(body));
        res.writeHead(200).end("ok");
      });
    });
    await new Promise((ok) => receiver.listen(port, "127.0.0.1", ok));
    const [status, tenant] = await api("POST", "/api/tenants", { name: "Acme", key_prefix: "acme", plan: "pro" }, ADMIN);
    assert.equal(status, 201, JSON.stringify(tenant));
    key = tenant.api_key.secret;
    assert.equal((await api("POST", "/api/webhooks", { url: `http://127.0.0.1:${port}/hook`, description: "orders" }))[0], 201);
    const [, link] = await api("POST", "/api/links", { destination: "https://shop.example/spring", name: "spring sale" });
    seededLink = link;
    for (let i = 0; i < 6; i++) assert.equal((await click(link.url)).status, 307);
    await eventually(async () => delivered.length >= 6, 20000, "the seeded clicks' webhook deliveries");
    chromium = await browser();
  });

  after(async () => {
    await chromium?.close();
    await mf?.dispose();
    // the node's webhook client keeps its connections open: close them, or close() waits for them
    receiver?.closeAllConnections();
    await new Promise((ok) => (receiver ? receiver.close(ok) : ok()));
    core.cleanup();
  });

  /**
   * A fresh browser profile (its own cookies) and a page in it. `errors` collects console errors and uncaught
   * exceptions; Chrome's own line for an expected 401 (an unsigned page asking for its session, a refused key) is
   * a network status, not an error of the page, and is left out.
   */
  async function open({ width = 1280, dark = false } = {}) {
    const context = await chromium.createBrowserContext();
    const page = await context.newPage();
    await page.setUserAgent(CHROME);
    await page.setViewport({ width, height: 900 });
    await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: dark ? "dark" : "light" }]);
    const errors = [];
    page.on("console", (m) => {
      if (m.type() === "error" && !/status of 401/.test(m.text())) errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    return { context, page, errors };
  }

  const byTestId = (id) => `[data-testid="${id}"]`;

  /** Waits until nothing on the page is loading (a busy table, a loading message). */
  const settled = (page) =>
    page.waitForFunction(() => !document.querySelector('[aria-busy="true"], [data-testid="loading"]') && document.querySelector("main h1"), {
      timeout: 15000,
    });

  async function signIn(page, base, credential) {
    await page.goto(`${base}/dashboard/`);
    await page.waitForSelector(byTestId("signin-credential"));
    await page.type(byTestId("signin-credential"), credential);
    await page.click(byTestId("signin-submit"));
  }

  async function go(page, id) {
    await page.click(byTestId(`nav-${id}`));
    await page.waitForFunction((id) => location.hash === `#/${id}`, {}, id);
    await settled(page);
  }

  const text = (page, id) => page.$eval(byTestId(id), (e) => e.textContent.trim());
  const number = async (page, id) => Number((await text(page, id)).replace(/[^\d]/g, ""));
  /** The pages and budgets are seen through the core node, unless only the edge is asked for. */
  const home = () => (TIERS.includes("core") ? core.url : edge);

  for (const tier of TIERS) {
    it(`${tier}: a refused key, sign in, a live click, a link made and clicked, a report, a redelivery, sign out`, async () => {
      const base = tier === "core" ? core.url : edge;
      const { context, page, errors } = await open();
      try {
        // a refused key is told why, and nothing is stored
        await signIn(page, base, "trk_key_not-a-real-key");
        await page.waitForSelector(byTestId("signin-error"));
        assert.match(await text(page, "signin-error"), /unknown, revoked or expired/);
        await page.$eval(byTestId("signin-credential"), (e) => (e.value = ""));
        await page.type(byTestId("signin-credential"), key);
        await page.click(byTestId("signin-submit"));
        await page.waitForSelector(byTestId("nav-overview"));
        await settled(page);
        assert.match(await text(page, "who"), /acme/);

        // the key is nowhere in the page's reach: the session cookie is HttpOnly, Secure and SameSite=Strict
        const cookies = await context.cookies();
        const session = cookies.find((c) => c.name === "__Host-tracker_session");
        assert.ok(session, `cookies: ${JSON.stringify(cookies)}`);
        assert.deepEqual([session.httpOnly, session.secure, session.sameSite], [true, true, "Strict"]);
        const visible = await page.evaluate(() => document.cookie + JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
        assert.ok(!visible.includes(key) && !visible.includes(session.value), visible);

        // a click made now shows up live
        await page.waitForFunction((sel) => /live/i.test(document.querySelector(sel)?.textContent ?? ""), {}, byTestId("live-status"));
        const before = await number(page, "live-count");
        assert.equal((await click(`${base}${new URL(seededLink.url).pathname}${new URL(seededLink.url).search}`)).status, 307);
        await page.waitForFunction(
          (sel, n) => Number(document.querySelector(sel).textContent.replace(/[^\d]/g, "")) > n,
          { timeout: 20000 },
          byTestId("live-count"),
          before,
        );

        // a link made in the page works at once
        await go(page, "links");
        await page.waitForSelector(byTestId("link-destination"));
        const destination = `https://shop.example/made-in-the-${tier}-dashboard`;
        await page.type(byTestId("link-destination"), destination);
        await page.click(byTestId("link-submit"));
        const url = await page.waitForFunction(
          (destination) => {
            const row = [...document.querySelectorAll('[data-testid="link-row"]')].find((r) => r.textContent.includes(destination));
            return row?.querySelector('[data-testid="link-url"]')?.textContent.trim();
          },
          {},
          destination,
        );
        // a new link opens its share dialog (every format, a QR code); closed with Escape
        await page.waitForSelector(byTestId("qr-code"));
        await page.keyboard.press("Escape");
        await page.waitForSelector("dialog[open]", { hidden: true });
        const made = await click((await url.jsonValue()).replace(/^https?:\/\/[^/]+/, base));
        assert.equal(made.status, 307);
        assert.ok(made.headers.get("location").startsWith(`${destination}?ad_click_id=`));

        // a report shows what the API answers to the same questions (a series for the chart, a breakdown for the
        // table and the total)
        await counted();
        const questions = [];
        const listen = (r) => r.url().endsWith("/api/query") && questions.push(JSON.parse(r.postData()));
        page.on("request", listen);
        await go(page, "reports");
        await page.waitForSelector(byTestId("report-total"));
        page.off("request", listen);
        const asked = (kind) => questions.find((q) => q.query.kind === kind);
        assert.ok(asked("series") && asked("breakdown"), JSON.stringify(questions));
        const [status, breakdown] = await api("POST", "/api/query", asked("breakdown"));
        assert.equal(status, 200, JSON.stringify(breakdown));
        assert.equal(breakdown.total, sent, `every event so far is counted: ${JSON.stringify(breakdown)}`);
        assert.equal(await number(page, "report-total"), breakdown.total);
        const shownRows = await page.$$eval(byTestId("report-row"), (rows) => rows.map((r) => r.textContent));
        for (const group of breakdown.groups) {
          assert.ok(shownRows.some((r) => r.includes(group.group) && r.includes(String(group.count))), `${JSON.stringify(group)} in ${shownRows}`);
        }
        const [, series] = await api("POST", "/api/query", asked("series"));
        assert.equal(series.points.reduce((n, p) => n + p.count, 0), breakdown.total);
        assert.equal(await text(page, "report-tier"), series.tier);

        // a delivery redelivered reaches the receiver again
        await go(page, "webhooks");
        // the endpoints load after the page has rendered
        await page.waitForSelector(byTestId("webhook-deliveries"));
        await page.click(byTestId("webhook-deliveries"));
        await page.waitForSelector(byTestId("delivery-row"));
        const count = delivered.length;
        await page.click(byTestId("redeliver"));
        await eventually(async () => delivered.length > count, 20000, "the redelivery");

        // a match: two visits from ad clicks, one of them ending in a purchase (sent with an ingest token); the page
        // shows the pairs and the rate the API answers
        if (tier === "core") {
          const [, ingest] = await api("POST", "/api/tokens", { name: "match" });
          const events = [
            { event_type: "pageview", params: { ad_click_id: "click-a" } },
            { event_type: "pageview", params: { ad_click_id: "click-b" } },
            { event_type: "purchase", params: { ad_click_id: "click-a", amount: "12" } },
          ];
          for (const e of events) {
            const res = await fetch(`${core.url}/ingest`, {
              method: "POST",
              headers: { authorization: `Bearer ${ingest.secret}`, "content-type": "application/json" },
              body: JSON.stringify(e),
            });
            assert.equal(res.status, 200, await res.text());
            sent += 1;
          }
          const asked = { trigger: "pageview", result: "purchase", on: "ad_click_id", window_secs: 7 * 86400, hours: 24 * 7 };
          const truth = await eventually(async () => {
            const [, m] = await api("GET", `/api/events/match?${new URLSearchParams(asked)}`);
            return m.pairs?.length === 1 && m;
          }, 20000, "the hot tier matching the purchase");
          await go(page, "match");
          await page.waitForSelector(byTestId("match-run"));
          await page.click(byTestId("match-run"));
          await page.waitForSelector(byTestId("match-row"));
          assert.equal((await page.$$(byTestId("match-row"))).length, truth.pairs.length);
          const rate = await text(page, "match-rate");
          const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
          assert.equal(rate, percent.format(truth.summary.match_rate), JSON.stringify(truth.summary));
          await page.screenshot({ path: join(SHOTS, "match-pairs.png"), fullPage: true });
        }

        // the budget for events anyone can send, set in the form, is what the API answers
        await go(page, "install");
        await page.waitForSelector(byTestId("intake-save"));
        await page.click(byTestId("intake-open"));
        await page.type(byTestId("intake-budget"), "5000");
        await page.click(byTestId("intake-save"));
        await page.waitForSelector('[role="status"]');
        const [, intake] = await api("GET", "/api/intake");
        assert.deepEqual([intake.open_postbacks, intake.unauthenticated_monthly_events], [false, 5000]);
        await page.click(byTestId("intake-budget"), { count: 3 });
        await page.keyboard.press("Backspace");
        await page.click(byTestId("intake-open"));
        await page.click(byTestId("intake-save"));
        await eventually(async () => {
          const [, back] = await api("GET", "/api/intake");
          return back.open_postbacks && back.unauthenticated_monthly_events === null;
        }, 5000, "the settings put back");

        // signing out ends the session: the cookie no longer opens anything
        await page.click(byTestId("signout"));
        await page.waitForSelector(byTestId("signin-credential"));
        const after = await page.evaluate(() => fetch("/api/me").then((r) => r.status));
        assert.equal(after, 401);
        assert.equal((await api("GET", "/api/me", undefined, session.value))[0], 401, "nor as a bearer credential");
        assert.deepEqual(errors, []);
      } finally {
        await page.screenshot({ path: join(SHOTS, `${tier}-last.png`) }).catch(() => {});
        await context.close();
      }
    });
  }

  /** Empties a field the way a person would (select all, delete), then types `value`. */
  async function fill(page, selector, value) {
    await page.click(selector, { count: 3 });
    await page.keyboard.press("Backspace");
    if (value) await page.type(selector, value);
  }

  /** The ids of the events the table shows, in order. */
  const shownEvents = (page) =>
    page.$$eval(byTestId("event-row"), (rows) => rows.map((r) => ({ id: r.dataset.eventId, type: r.cells[1].textContent.trim() })));

  /** The API's answer to an events listing (the hot tier, newest first). */
  const listed = async (query) => {
    const [status, body] = await api("GET", `/api/events?${new URLSearchParams({ limit: 50, ...query })}`);
    assert.equal(status, 200, JSON.stringify(body));
    return body.data;
  };

  /** Waits until the events table shows exactly the events the API lists for `query`. */
  async function showsListed(page, query) {
    const truth = (await listed(query)).map((e) => e.event_id);
    await page.waitForFunction(
      (ids) => [...document.querySelectorAll('[data-testid="event-row"]')].map((r) => r.dataset.eventId).join() === ids.join(),
      { timeout: 15000 },
      truth,
    );
    return truth;
  }

  /** Confirms the app's "are you sure?" dialog, returning what it said. */
  async function confirm(page) {
    const dialog = await page.waitForSelector(`${byTestId("confirm-dialog")}[open]`);
    const said = await dialog.evaluate((d) => d.textContent);
    await page.click(byTestId("confirm-ok"));
    await page.waitForSelector("dialog[open]", { hidden: true });
    return said;
  }

  for (const tier of TIERS) {
    const features =
      "the sidebar by keyboard, a report's CSV, events filtered, tailed and opened, a test webhook, " +
      "a link edited, expired and deleted, a key made and revoked";
    it(`${tier}: ${features}`, async () => {
      const base = tier === "core" ? core.url : edge;
      /** A tracking link of the API, followed at this tier. */
      const via = (url) => `${base}${new URL(url).pathname}${new URL(url).search}`;
      const { context, page, errors } = await open();
      try {
        await signIn(page, base, key);
        await page.waitForSelector(byTestId("nav-overview"));
        await settled(page);

        // the sidebar with the keyboard only: Tab reaches its links in order, each with a visible focus ring, and
        // Enter opens the page (focus moves to it)
        const questions = [];
        const listen = (r) => r.url().endsWith("/api/query") && questions.push(JSON.parse(r.postData()));
        page.on("request", listen);
        const path = [];
        for (let i = 0; i < 20 && path.at(-1)?.id !== "nav-reports"; i++) {
          await page.keyboard.press("Tab");
          path.push(
            await page.evaluate(() => {
              const e = document.activeElement;
              const style = getComputedStyle(e);
              return { id: e.dataset.testid, visible: e.matches(":focus-visible"), outline: `${style.outlineStyle} ${style.outlineWidth}` };
            }),
          );
        }
        const nav = path.filter((p) => p.id?.startsWith("nav-"));
        assert.deepEqual(nav.map((p) => p.id), ["nav-overview", "nav-events", "nav-links", "nav-reports"], JSON.stringify(path));
        for (const p of nav) assert.ok(p.visible && !/^none|\b0px$/.test(p.outline), `a visible focus ring: ${JSON.stringify(p)}`);
        await page.screenshot({ path: join(SHOTS, `${tier}-keyboard-focus.png`) });
        await page.keyboard.press("Enter");
        await page.waitForFunction(() => location.hash === "#/reports");
        // the route changes first, the page renders after it (seen in CI: the old page's heading, once)
        await page.waitForFunction(() => document.querySelector("main h1")?.textContent.trim() === "Reports");
        await settled(page);
        assert.equal(await page.$eval(byTestId("nav-reports"), (e) => e.getAttribute("aria-current")), "page");
        assert.equal(await page.evaluate(() => document.activeElement.id), "main", "focus moves to the page");

        // the report's CSV holds the table's rows and numbers, which are the API's; the file is read as the page
        // makes it (its object URL) instead of being saved
        await page.waitForSelector(byTestId("report-row"));
        page.off("request", listen);
        await page.evaluate(() => {
          const blobs = new Map();
          const make = URL.createObjectURL;
          URL.createObjectURL = (blob) => {
            const url = make.call(URL, blob);
            blobs.set(url, blob);
            return url;
          };
          document.addEventListener(
            "click",
            (e) => {
              const a = e.target;
              if (!(a instanceof HTMLAnchorElement && a.download && blobs.has(a.href))) return;
              e.preventDefault();
              const blob = blobs.get(a.href);
              window.__download = blob.text().then((text) => ({ name: a.download, type: blob.type, text }));
            },
            true,
          );
        });
        await page.click(byTestId("report-csv"));
        await page.waitForFunction(() => window.__download);
        const file = await page.evaluate(() => window.__download);
        assert.match(file.name, /^report-event_type-\d{4}-\d{2}-\d{2}\.csv$/);
        assert.match(file.type, /^text\/csv/);
        const [header, ...lines] = file.text.split("\r\n").filter(Boolean).map((l) => l.split(","));
        assert.deepEqual(header, ["event_type", "count", "share"]);
        const table = await page.$$eval(byTestId("report-row"), (rows) =>
          rows.map((r) => [r.cells[0].textContent.trim(), Number(r.cells[1].textContent.replace(/[^\d]/g, ""))]),
        );
        assert.deepEqual(lines.map(([group, count]) => [group, Number(count)]), table, file.text);
        const [, breakdown] = await api("POST", "/api/query", questions.find((q) => q.query.kind === "breakdown"));
        assert.deepEqual(table, breakdown.groups.map((g) => [g.group, g.count]), JSON.stringify(breakdown));
        assert.equal(lines.reduce((n, [, count]) => n + Number(count), 0), await number(page, "report-total"));

        // events: two sign-ups sent now, filtered by type, then by a param; the table lists what the API does
        const [, ingest] = await api("POST", "/api/tokens", { name: `events-${tier}` });
        const pros = (await listed({ event_type: "signup", param_key: "plan", param_value: "pro" })).length;
        for (const plan of ["pro", "free"]) {
          const res = await fetch(`${core.url}/ingest`, {
            method: "POST",
            headers: { authorization: `Bearer ${ingest.secret}`, "content-type": "application/json" },
            body: JSON.stringify({ event_type: "signup", params: { plan } }),
          });
          assert.equal(res.status, 200, await res.text());
          sent += 1;
        }
        await eventually(
          async () => (await listed({ event_type: "signup", param_key: "plan", param_value: "pro" })).length > pros,
          20000,
          "the sign-ups listed",
        );
        await go(page, "events");
        await page.waitForSelector(byTestId("event-row"));
        await fill(page, byTestId("filter-event-type"), "signup");
        await page.click(byTestId("filter-apply"));
        const signups = await showsListed(page, { event_type: "signup" });
        assert.ok(signups.length >= 2, `${signups}`);
        assert.ok((await shownEvents(page)).every((e) => e.type === "signup"));
        await fill(page, byTestId("filter-param-key"), "plan");
        await fill(page, byTestId("filter-param-value"), "pro");
        await page.click(byTestId("filter-apply"));
        const proSignups = await showsListed(page, { event_type: "signup", param_key: "plan", param_value: "pro" });
        assert.ok(proSignups.length > 0 && proSignups.length < signups.length, `${proSignups} of ${signups}`);
        assert.ok((await listed({ event_type: "signup" })).filter((e) => proSignups.includes(e.event_id)).every((e) => e.params.plan === "pro"));
        await page.screenshot({ path: join(SHOTS, `${tier}-events-filtered.png`), fullPage: true });

        // the live tail of clicks shows a click made now, on top, marked new; its detail is the API's event
        await fill(page, byTestId("filter-event-type"), "click");
        await fill(page, byTestId("filter-param-key"), "");
        await fill(page, byTestId("filter-param-value"), "");
        await page.click(byTestId("filter-apply"));
        await showsListed(page, { event_type: "click" });
        await page.click(byTestId("live-tail"));
        await page.waitForFunction(() => document.querySelector('label.check [role="status"]')?.textContent.trim() === "live", { timeout: 20000 });
        assert.equal((await click(via(seededLink.url))).status, 307);
        const fresh = await page.waitForSelector('tr.fresh[data-testid="event-row"]', { timeout: 20000 });
        const freshId = await fresh.evaluate((r) => r.dataset.eventId);
        assert.equal((await shownEvents(page))[0].id, freshId, "the new event is on top");
        const event = await eventually(
          async () => (await listed({ event_type: "click", tu_id: seededLink.tu_id })).find((e) => e.event_id === freshId),
          20000,
          "the live click listed",
        );
        assert.equal(event.params.tu_id, seededLink.tu_id);
        await page.screenshot({ path: join(SHOTS, `${tier}-events-live.png`), fullPage: true });
        await fresh.$eval(".row-button", (b) => b.click());
        const detail = await page.waitForSelector(`${byTestId("event-detail")}[open]`);
        const shown = await detail.evaluate((d) => d.textContent);
        for (const field of [event.event_id, event.event_type, event.request_path]) assert.ok(shown.includes(field), `${field} in ${shown}`);
        assert.deepEqual(JSON.parse(await text(page, "event-params")), event.params);
        await page.screenshot({ path: join(SHOTS, `${tier}-event-detail.png`) });
        await page.keyboard.press("Escape");
        await page.waitForSelector("dialog[open]", { hidden: true });
        await page.click(byTestId("live-tail"));

        // a test delivery: the receiver gets a signed `webhook.test` with the id the API answered, and the row
        // says what the endpoint answered (tests are not entries of the delivery log: the API does not keep them)
        await go(page, "webhooks");
        await page.waitForSelector(byTestId("webhook-test"));
        await page.click(byTestId("webhook-deliveries"));
        await page.waitForSelector(byTestId("delivery-row"));
        const tested = page.waitForResponse((r) => /\/api\/webhooks\/[^/]+\/test$/.test(new URL(r.url()).pathname));
        await page.click(byTestId("webhook-test"));
        const attempt = await (await tested).json();
        assert.deepEqual([attempt.delivered, attempt.status], [true, 200], JSON.stringify(attempt));
        await page.waitForSelector(byTestId("webhook-test-result"));
        assert.match(await text(page, "webhook-test-result"), /^test delivered\s+HTTP 200 in /);
        const received = await eventually(async () => delivered.find((d) => d.id === attempt.delivery_id), 10000, "the test delivery");
        assert.equal(received.type, "webhook.test");
        await page.screenshot({ path: join(SHOTS, `${tier}-webhooks-test.png`), fullPage: true });

        // a link edited (a new destination, and a fallback), expired (clicks go to the fallback), deleted (404)
        const [, made] = await api("POST", "/api/links", { destination: `https://shop.example/before-${tier}`, name: `to change ${tier}` });
        const before = await click(via(made.url));
        assert.ok(before.headers.get("location").startsWith(`https://shop.example/before-${tier}?`));
        await go(page, "links");
        const row = `[data-testid="link-row"][data-tu-id="${made.tu_id}"]`;
        await page.waitForSelector(row);
        // the row actions fit at 1280 px: the table does not scroll sideways
        const fit = await page.$eval(byTestId("links-table"), (wrap) => ({
          overflow: wrap.scrollWidth - wrap.clientWidth,
          right: wrap.getBoundingClientRect().right,
          buttons: [...wrap.querySelectorAll(".actions button")].map((b) => b.getBoundingClientRect().right),
        }));
        assert.ok(fit.overflow <= 0 && fit.buttons.every((r) => r <= fit.right), `the links table at 1280 px: ${JSON.stringify(fit)}`);
        await page.click(`${row} ${byTestId("link-edit")}`);
        await page.waitForSelector(`${byTestId("link-edit-dialog")}[open]`);
        const destination = `https://shop.example/after-${tier}`;
        const fallback = `https://shop.example/over-${tier}`;
        await fill(page, "#e-dest", destination);
        await fill(page, "#e-name", `changed ${tier}`);
        await fill(page, "#e-fallback", fallback);
        await page.screenshot({ path: join(SHOTS, `${tier}-link-edit.png`) });
        await page.click('button[form="edit-link"]');
        await page.waitForSelector("dialog[open]", { hidden: true });
        await page.waitForFunction((row, d) => document.querySelector(row)?.textContent.includes(d), {}, row, destination);
        const [, edited] = await api("GET", `/api/links/${made.tu_id}`);
        assert.deepEqual([edited.destination, edited.name, edited.fallback_url, edited.expires_at], [destination, `changed ${tier}`, fallback, null]);
        assert.ok((await click(via(made.url))).headers.get("location").startsWith(`${destination}?ad_click_id=`));

        await page.click(`${row} ${byTestId("link-expire")}`);
        assert.match(await confirm(page), new RegExp(`send visitors to ${fallback}`));
        await page.waitForFunction((row) => document.querySelector(row)?.querySelector(".badge.bad")?.textContent === "expired", {}, row);
        assert.equal(await page.$(`${row} ${byTestId("link-expire")}`), null, "an expired link has nothing to expire");
        const [, expired] = await api("GET", `/api/links/${made.tu_id}`);
        assert.ok(expired.expires_at !== null && expired.expires_at <= Date.now(), JSON.stringify(expired));
        const afterExpiry = await click(via(made.url));
        assert.equal(afterExpiry.status, 307);
        assert.ok(afterExpiry.headers.get("location").startsWith(`${fallback}?`), afterExpiry.headers.get("location"));
        await page.screenshot({ path: join(SHOTS, `${tier}-link-expired.png`), fullPage: true });

        await page.click(`${row} ${byTestId("link-delete")}`);
        assert.match(await confirm(page), /cannot be undone/);
        await page.waitForSelector(row, { hidden: true });
        assert.equal((await api("GET", `/api/links/${made.tu_id}`))[0], 404);
        const gone = await click(via(made.url));
        assert.equal(gone.status, 404);
        assert.match(await gone.text(), /unknown_short_link/);

        // an API key made in the page: its secret shows once and works; gone from the page once closed; revoked,
        // the API refuses it
        await go(page, "keys");
        await page.waitForSelector(byTestId("key-row"));
        const name = `reporting ${tier}`;
        await page.type(byTestId("key-name"), name);
        await page.click(byTestId("key-scope-write"));
        await page.click(byTestId("key-submit"));
        await page.waitForSelector(byTestId("key-secret-value"));
        const secret = await text(page, "key-secret-value");
        const [meStatus, me] = await api("GET", "/api/me", undefined, secret);
        assert.equal(meStatus, 200, JSON.stringify(me));
        assert.deepEqual([me.key_prefix, [...me.scopes].sort()], ["acme", ["read", "write"]]);
        await page.screenshot({ path: join(SHOTS, `${tier}-key-secret.png`), fullPage: true });
        await page.click(`${byTestId("key-secret")} ::-p-text(I have copied it)`);
        await page.waitForSelector(byTestId("key-secret"), { hidden: true });
        assert.ok(!(await page.content()).includes(secret), "the secret is gone from the page");
        const revoke = await page.evaluateHandle(
          (name) =>
            [...document.querySelectorAll('[data-testid="key-row"]')]
              .find((r) => r.cells[0].textContent.includes(name))
              ?.querySelector('[data-testid="key-revoke"]'),
          name,
        );
        await revoke.asElement().click();
        assert.match(await confirm(page), new RegExp(me.key_id));
        await page.waitForSelector(byTestId("keys-notice"));
        assert.equal(await text(page, "keys-notice"), `The API key “${name}” is revoked.`);
        assert.equal((await api("GET", "/api/me", undefined, secret))[0], 401, "the revoked key is refused");
        assert.ok(!(await page.$$eval(byTestId("key-row"), (rows) => rows.map((r) => r.textContent))).some((t) => t.includes(name)));
        await page.screenshot({ path: join(SHOTS, `${tier}-key-revoked.png`), fullPage: true });
        assert.deepEqual(errors, []);
      } finally {
        await page.screenshot({ path: join(SHOTS, `${tier}-features-last.png`) }).catch(() => {});
        await context.close();
      }
    });

    it(`${tier}: a read-only key sees links, webhooks and keys without their write controls`, async () => {
      const base = tier === "core" ? core.url : edge;
      const [status, made] = await api("POST", "/api/keys", { name: `read-only ${tier}`, scopes: ["read"] });
      assert.equal(status, 201, JSON.stringify(made));
      const [refused, why] = await api("POST", "/api/links", { destination: "https://shop.example/not-mine" }, made.secret);
      assert.equal(refused, 403, `the API refuses it a write: ${JSON.stringify(why)}`);
      const { context, page, errors } = await open();
      const absent = async (...ids) => {
        for (const id of ids) assert.equal(await page.$(byTestId(id)), null, `no ${id} on ${await page.evaluate(() => location.hash)}`);
      };
      try {
        await signIn(page, base, made.secret);
        await page.waitForSelector(byTestId("nav-overview"));
        await settled(page);
        assert.match(await text(page, "who"), /acme\s+read$/);

        await go(page, "links");
        await page.waitForSelector(byTestId("link-row"));
        await absent("link-destination", "link-submit", "link-edit", "link-expire", "link-delete");
        assert.equal((await page.$$(byTestId("link-share"))).length, (await page.$$(byTestId("link-row"))).length, "sharing stays");
        assert.match(await page.$eval("main .callout.info", (e) => e.textContent), /no write scope/);
        await page.screenshot({ path: join(SHOTS, `${tier}-read-only-links.png`), fullPage: true });

        await go(page, "webhooks");
        await page.waitForSelector(byTestId("webhook-deliveries"));
        await page.click(byTestId("webhook-deliveries"));
        await page.waitForSelector(byTestId("delivery-row"));
        await absent("webhook-new", "webhook-test", "webhook-edit", "webhook-delete", "redeliver");
        assert.match(await page.$eval("main .callout.info", (e) => e.textContent), /no write scope/);
        await page.screenshot({ path: join(SHOTS, `${tier}-read-only-webhooks.png`), fullPage: true });

        await go(page, "keys");
        await page.waitForSelector(byTestId("no-scope"));
        assert.match(await text(page, "no-scope"), /This key has no “admin” scope/);
        await absent("key-name", "key-submit", "key-revoke", "token-submit", "token-revoke");
        await page.screenshot({ path: join(SHOTS, `${tier}-read-only-keys.png`), fullPage: true });
        assert.deepEqual(errors, []);
      } finally {
        await context.close();
      }
    });
  }

  it("every page, wide and light, narrow and dark: screenshots, axe, no console errors", async () => {
    const pages = [
      { credential: key, ids: TENANT_PAGES },
      { credential: ADMIN, ids: OPERATOR_PAGES },
    ];
    for (const look of [{ width: 1280, dark: false, name: "wide" }, { width: 375, dark: true, name: "narrow-dark" }]) {
      for (const { credential, ids } of pages) {
        const { context, page, errors } = await open(look);
        try {
          await page.goto(`${home()}/dashboard/`);
          await page.waitForSelector(byTestId("signin-credential"));
          if (credential === key) await page.screenshot({ path: join(SHOTS, `signin-${look.name}.png`) });
          await page.type(byTestId("signin-credential"), credential);
          await page.click(byTestId("signin-submit"));
          await page.waitForSelector(byTestId("signout"));
          await settled(page);
          for (const id of ids) {
            if (look.width < 600) {
              // the narrow layout folds the navigation into a menu
              const menu = await page.$(byTestId("menu"));
              if (menu && (await menu.isVisible())) await menu.click();
            }
            await go(page, id);
            await page.screenshot({ path: join(SHOTS, `${id}-${look.name}.png`), fullPage: true });
            const violations = await axe(page);
            assert.deepEqual(violations, [], `${id} (${look.name}): ${JSON.stringify(violations, null, 1)}`);
            if (look.width < 600) {
              const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
              assert.ok(overflow <= 0, `${id} is ${overflow}px wider than a 375px screen`);
            }
          }
          assert.deepEqual(errors, []);
        } finally {
          await context.close();
        }
      }
    }
  });

  /** axe-core's serious and critical findings on the page as it is. */
  async function axe(page) {
    await page.evaluate(AXE);
    return page.evaluate(async () => {
      const { violations } = await window.axe.run(document, { resultTypes: ["violations"] });
      return violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => ({ id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
    });
  }

  it("budgets: at most 150 KB gzipped, first render under 1 s on a cold cache, 100,000 points without jank", async () => {
    const files = [];
    const walk = (dir) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else files.push(path);
      }
    };
    walk(DIST);
    const gzipped = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
    console.log(`dashboard: ${files.length} files, ${gzipped} bytes gzipped in total (budget 153600)`);
    assert.ok(gzipped <= 150 * 1024, `${gzipped} bytes gzipped`);

    const { context, page, errors } = await open();
    try {
      await page.setCacheEnabled(false);
      const start = Date.now();
      await page.goto(`${home()}/dashboard/`, { waitUntil: "domcontentloaded" });
      await page.waitForSelector(byTestId("signin-credential"), { visible: true });
      const signInPage = Date.now() - start;
      await page.type(byTestId("signin-credential"), key);
      const signedIn = Date.now();
      await page.click(byTestId("signin-submit"));
      await page.waitForSelector(byTestId("events-per-minute"));
      await settled(page);
      const overview = Date.now() - signedIn;
      console.log(`first render, cold cache: sign-in page ${signInPage} ms, overview after signing in ${overview} ms`);
      assert.ok(signInPage < 1000 && overview < 1000, `${signInPage} ms, ${overview} ms`);

      // 100,000 minutes by the minute (the most buckets a series may have): drawn and hovered while long tasks
      // are watched
      await go(page, "reports");
      await page.evaluate(() => {
        window.__longTasks = [];
        new PerformanceObserver((list) => window.__longTasks.push(...list.getEntries().map((e) => e.duration))).observe({
          type: "longtask",
        });
      });
      await page.select(byTestId("range"), "custom");
      const local = (ms) => {
        const d = new Date(ms);
        const two = (n) => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}`;
      };
      const to = Math.floor(Date.now() / 60000) * 60000 + 60000;
      const inputs = await page.$$('input[type="datetime-local"]');
      for (const [input, value] of [[inputs[0], local(to - 100000 * 60000)], [inputs[1], local(to)]]) {
        await input.evaluate((e, v) => {
          e.value = v;
          e.dispatchEvent(new Event("input", { bubbles: true }));
        }, value);
      }
      await page.select(byTestId("report-interval"), "minute");
      // drawn twice, the better run counting: the machine's other work must not pass for the chart's
      const runs = [];
      for (let run = 0; run < 2; run++) {
        await page.evaluate(() => (window.__longTasks.length = 0));
        const drawn = Date.now();
        const answered = page.waitForResponse((r) => r.url().endsWith("/api/query") && r.request().postData().includes('"series"'));
        await page.click(byTestId("report-run"));
        await answered;
        await page.waitForFunction(() => Number(document.querySelector('[data-testid="report-chart"]')?.dataset.points) >= 100000, {
          timeout: 30000,
        });
        // the answer drawn: two frames later the canvas holds it
        await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
        const drawMs = Date.now() - drawn;
        const box = await (await page.$(byTestId("report-chart"))).boundingBox();
        const frames = await page.evaluate(async () => {
          const times = [];
          let last = performance.now();
          await new Promise((done) => {
            const tick = (t) => {
              times.push(t - last);
              last = t;
              if (times.length < 60) requestAnimationFrame(tick);
              else done();
            };
            requestAnimationFrame(tick);
          });
          return times;
        });
        for (let i = 0; i < 30; i++) await page.mouse.move(box.x + (box.width * i) / 30, box.y + box.height / 2);
        const worst = Math.max(0, ...(await page.evaluate(() => window.__longTasks)));
        const p95 = frames.sort((a, b) => a - b)[Math.floor(frames.length * 0.95)];
        runs.push({ drawMs, worst, p95 });
      }
      const points = await page.$eval(byTestId("report-chart"), (e) => Number(e.dataset.points));
      const best = runs.reduce((a, b) => (b.worst < a.worst ? b : a));
      for (const { drawMs, worst, p95 } of runs) {
        console.log(`${points} points: queried and shown in ${drawMs} ms; longest main-thread task ${worst.toFixed(0)} ms; frame p95 ${p95.toFixed(1)} ms`);
      }
      await page.screenshot({ path: join(SHOTS, "reports-100k-points.png") });
      assert.ok(best.worst < 250, `a ${best.worst} ms long task`);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
});
