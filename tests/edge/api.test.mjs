// The platform API through the edge Worker under Miniflare, against a real core node: a tenant, keys and links
// created at the edge; clicks at the edge following destination changes and key rotations within the documented
// bound; revocations; per-plan rate limits; and every cross-tenant attempt refused.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Core, eventually, get, post, sleep, worker } from "./harness.mjs";

const ADMIN = "admin-token-for-edge-tests-0123456789abcdef";
/** The edge's isolate cache TTL: the bound within which every isolate follows a change made through the API. */
const CACHE_TTL_MS = 2000;

describe("platform API at the edge", () => {
  const core = new Core({ ADMIN_TOKEN: ADMIN, CACHE_TTL_SECS: "60" });
  let mf, acme, evil;

  /** A platform API call at the edge: `[status, body, headers]`. */
  const api = async (method, path, credential, body) => {
    const headers = { "cf-connecting-ip": "198.51.100.4" };
    if (credential) headers.authorization = `Bearer ${credential}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await mf.dispatchFetch(`http://edge.test${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return [res.status, text ? JSON.parse(text) : null, res.headers];
  };
  const created = (answer, what) => {
    assert.equal(answer[0], 201, `${what}: ${JSON.stringify(answer[1])}`);
    return answer[1];
  };
  /** Clicks a link at the edge: `[status, location or error code]`. */
  const click = async (url) => {
    const u = new URL(url);
    const res = await get(mf, u.pathname + u.search);
    const location = res.headers.get("location");
    return [res.status, location ?? (await res.json()).error.code];
  };

  before(async () => {
    await core.start();
    mf = worker({ CORE_URLS: core.url, CACHE_TTL_MS: String(CACHE_TTL_MS) });
    const a = created(await api("POST", "/api/tenants", ADMIN, { name: "Acme", key_prefix: "acme", plan: "pro" }), "acme");
    const e = created(await api("POST", "/api/tenants", ADMIN, { name: "Evil", key_prefix: "evil", plan: "pro" }), "evil");
    acme = a.api_key.secret;
    evil = e.api_key.secret;
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  it("serves the OpenAPI document and refuses requests without credentials at the edge", async () => {
    const [status, doc] = await api("GET", "/api/openapi.json");
    assert.equal(status, 200);
    assert.equal(doc.openapi, "3.1.0");
    assert.ok(doc.paths["/api/links/{tu_id}"].patch);
    const [s401, body, headers] = await api("GET", "/api/links");
    assert.equal(s401, 401);
    assert.equal(body.error.code, "missing_credentials");
    assert.match(headers.get("www-authenticate"), /^Bearer/);
    const preflight = await mf.dispatchFetch("http://edge.test/api/links", { method: "OPTIONS" });
    assert.equal(preflight.status, 204);
    assert.match(preflight.headers.get("access-control-allow-headers"), /authorization/);
    const [sEvents, events] = await api("GET", "/api/events?limit=5", acme);
    assert.equal(sEvents, 200);
    assert.equal(events.tier, "hot");
  });

  it("an edge click is live on the stream and listed in /api/events within 2 s", async () => {
    // the production queue batching (wrangler.toml: max_batch_timeout = 1 s)
    const edge = worker({ CORE_URLS: core.url, CACHE_TTL_MS: String(CACHE_TTL_MS) }, { batchTimeout: 1 });
    try {
      const link = created(await api("POST", "/api/links", acme, { destination: "https://shop.example/live" }), "link");
      const token = created(await api("POST", "/api/sse/tokens", acme, { ttl_secs: 300 }), "stream token").token;
      const preflight = await edge.dispatchFetch("http://edge.test/sse/events", { method: "OPTIONS" });
      assert.equal(preflight.status, 204);
      assert.match(preflight.headers.get("access-control-allow-headers"), /last-event-id/);
      const refused = await edge.dispatchFetch("http://edge.test/sse/events?access_token=trk_key_forged");
      assert.equal(refused.status, 401);
      await refused.text();
      // a browser's EventSource: the token in the query, any origin
      const stream = await edge.dispatchFetch(`http://edge.test/sse/events?event_type=click&access_token=${token}`, {
        headers: { "cf-connecting-ip": "198.51.100.4", origin: "https://dashboard.example" },
      });
      assert.equal(stream.status, 200);
      assert.equal(stream.headers.get("content-type"), "text/event-stream");
      assert.equal(stream.headers.get("access-control-allow-origin"), "*");
      const reader = stream.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      /** The next event of the stream (skipping comments), or null after `ms`. */
      const nextEvent = async (ms) => {
        const deadline = Date.now() + ms;
        for (;;) {
          const end = buffered.indexOf("\n\n");
          if (end >= 0) {
            const block = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const data = block.split("\n").find((l) => l.startsWith("data: "));
            if (data) return JSON.parse(data.slice(6));
            continue;
          }
          const left = deadline - Date.now();
          if (left <= 0) return null;
          const chunk = await Promise.race([reader.read(), sleep(left).then(() => null)]);
          if (!chunk || chunk.done) return null;
          buffered += decoder.decode(chunk.value, { stream: true });
        }
      };
      const u = new URL(link.url);
      const clickedAt = Date.now();
      const res = await get(edge, u.pathname + u.search, { "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36" });
      assert.equal(res.status, 307);
      let live;
      while ((live = await nextEvent(5000)) && live.params.tu_id !== link.tu_id) {}
      const liveMs = Date.now() - clickedAt;
      assert.ok(live, "the click arrived on the stream");
      assert.equal(live.key_prefix, "acme");
      await reader.cancel();
      let listedMs;
      await eventually(async () => {
        const [s, body] = await api("GET", `/api/events?tu_id=${link.tu_id}`, acme);
        if (s === 200 && body.data.length === 1) listedMs = Date.now() - clickedAt;
        return listedMs !== undefined;
      }, 5000, "the click in /api/events");
      console.log(`edge click to live stream: ${liveMs} ms; to /api/events: ${listedMs} ms (queue batches of up to 1 s)`);
      assert.ok(liveMs < 2000, `live after ${liveMs} ms`);
      assert.ok(listedMs < 2000, `listed after ${listedMs} ms`);
      // another tenant's key sees none of it
      const [, other] = await api("GET", `/api/events?tu_id=${link.tu_id}`, evil);
      assert.equal(other.data.length, 0);
    } finally {
      await edge.dispose();
    }
  });

  it("creates a link at the edge and follows a destination change within the bound", async () => {
    const link = created(await api("POST", "/api/links", acme, { destination: "https://shop.example/a" }), "link");
    assert.match(link.url, /^http:\/\/edge\.test\/t\/tu_/, "links point at the edge that served the API");
    const [s1, l1] = await click(link.url);
    assert.equal(s1, 307);
    assert.match(l1, /^https:\/\/shop\.example\/a\?ad_click_id=/);
    const kv = await mf.getKVNamespace("TRACKER_KV");
    assert.ok(await kv.get(`short:${link.tu_id}`), "the click filled KV");

    const changedAt = Date.now();
    const [s2, changed] = await api("PATCH", `/api/links/${link.tu_id}`, acme, { destination: "https://shop.example/b" });
    assert.equal(s2, 200);
    assert.equal(changed.destination, "https://shop.example/b");
    assert.equal(await kv.get(`short:${link.tu_id}`), null, "the change purged KV before it was acknowledged");
    let followed;
    while (Date.now() - changedAt <= CACHE_TTL_MS + 1000) {
      const [status, location] = await click(link.url);
      assert.equal(status, 307);
      if (location.startsWith("https://shop.example/b?")) {
        followed = Date.now() - changedAt;
        break;
      }
      await sleep(50);
    }
    assert.ok(followed !== undefined && followed <= CACHE_TTL_MS, `the edge followed the change after ${followed} ms`);

    // an expired link goes to its fallback; a deleted one is gone at the edge too
    const [s3] = await api("PATCH", `/api/links/${link.tu_id}`, acme, { fallback_url: "https://shop.example/over", expires_at: Date.now() + 300 });
    assert.equal(s3, 200);
    await sleep(400);
    const [s4, l4] = await click(link.url);
    assert.equal(s4, 307);
    assert.match(l4, /^https:\/\/shop\.example\/over\?/);
    const [s5] = await api("DELETE", `/api/links/${link.tu_id}`, acme);
    assert.equal(s5, 204);
    assert.deepEqual(await click(link.url), [404, "unknown_short_link"]);
  });

  it("rotates keys: old links work through the grace period and fail after it", async () => {
    const [, old] = await api("POST", "/api/links/sign", acme, { destination: "https://shop.example/rot", params: { campaign: "c1" } });
    assert.equal(old.kid, "k1");
    assert.equal((await click(old.url))[0], 307);
    const [s, rotated] = await api("POST", "/api/tenants/acme/rotate-keys", ADMIN, { grace_seconds: 3 });
    assert.equal(s, 200);
    assert.equal(rotated.kid, "k2");
    const [, fresh] = await api("POST", "/api/links/sign", acme, { destination: "https://shop.example/rot" });
    assert.equal(fresh.kid, "k2");
    // the rotation purged the tenant from KV and the isolate: the new key works at the edge at once
    assert.equal((await click(fresh.url))[0], 307);
    assert.equal((await click(old.url))[0], 307, "old links keep working during the grace period");
    await sleep(3200);
    const [status, code] = await click(old.url);
    assert.ok(status >= 400 && status < 500, `old links fail after the grace period (${status} ${code})`);
    assert.equal((await click(fresh.url))[0], 307);
  });

  it("refuses every cross-tenant attempt, whatever ids are sent", async () => {
    const link = created(await api("POST", "/api/links", acme, { destination: "https://shop.example/mine" }), "link");
    const hook = created(await api("POST", "/api/webhooks", acme, { url: "https://hooks.acme.example/in" }), "webhook");
    const rule = created(await api("POST", "/api/rules", acme, { field: "user_agent", operator: "contains", value: "bot", action: "drop" }), "rule");
    const token = created(await api("POST", "/api/tokens", acme, { name: "server" }), "token");
    const [, keys] = await api("GET", "/api/keys", acme);
    const targets = [
      `/api/links/${link.tu_id}`,
      `/api/webhooks/${hook.webhook.webhook_id}`,
      `/api/rules/${rule.rule_id}`,
      `/api/tokens/${token.token.token_id}`,
      `/api/keys/${keys.data[0].key_id}`,
    ];
    for (const path of targets) {
      assert.equal((await api("GET", path, evil))[0], 404, `GET ${path}`);
      assert.equal((await api("DELETE", path, evil))[0], 404, `DELETE ${path}`);
      assert.equal((await api("GET", path, acme))[0], 200, `${path} is still acme's`);
    }
    assert.equal((await api("PATCH", `/api/links/${link.tu_id}`, evil, { destination: "https://evil.example/" }))[0], 404);
    assert.equal((await api("POST", `/api/webhooks/${hook.webhook.webhook_id}/test`, evil))[0], 404);
    assert.equal((await api("POST", "/api/links/sign", evil, { tu_id: link.tu_id }))[0], 404);
    for (const [method, path] of [["GET", "/api/tenants"], ["PATCH", "/api/tenants/acme"], ["POST", "/api/tenants/acme/rotate-keys"], ["POST", "/api/tenants/acme/api-keys"]]) {
      const [status, body] = await api(method, path, evil, method === "GET" ? undefined : { name: "x" });
      assert.ok(status === 403 || status === 400, `${method} ${path} with a tenant key: ${status} ${JSON.stringify(body)}`);
    }
    const [, evilLinks] = await api("GET", "/api/links", evil);
    assert.ok(!JSON.stringify(evilLinks).includes(link.tu_id));
    assert.match((await click(link.url))[1], /^https:\/\/shop\.example\/mine\?/, "acme's link is untouched");
  });

  it("revokes API keys at once and ingest tokens at the edge through the purge", async () => {
    const k = created(await api("POST", "/api/keys", acme, { name: "ci", scopes: ["read"] }), "key");
    assert.equal((await api("GET", "/api/me", k.secret))[0], 200);
    assert.equal((await api("DELETE", `/api/keys/${k.key.key_id}`, acme))[0], 200);
    assert.equal((await api("GET", "/api/me", k.secret))[0], 401, "revoked API keys stop at once");
    assert.equal((await api("GET", "/api/me", k.secret))[0], 401);

    const t = created(await api("POST", "/api/tokens", acme, { name: "server" }), "token");
    const ingest = () => post(mf, "/ingest", JSON.stringify({ event_type: "signup" }), { authorization: `Bearer ${t.secret}`, "content-type": "application/json" });
    assert.equal((await ingest()).status, 200);
    const kv = await mf.getKVNamespace("TRACKER_KV");
    const hash = createHash("sha256").update(t.secret).digest("hex");
    assert.ok(await kv.get(`token:${hash}`), "the token is cached in KV");
    assert.equal((await api("DELETE", `/api/tokens/${t.token.token_id}`, acme))[0], 200);
    assert.equal(await kv.get(`token:${hash}`), null);
    assert.equal((await ingest()).status, 401, "the revoked token is refused at the edge");
  });

  it("is driven by the operator CLI against the edge like any remote API", async () => {
    const edge = String(await mf.ready).replace(/\/$/, "");
    const cli = (key, ...args) => JSON.parse(core.cli("api", "--url", edge, "--key", key, ...args));
    const link = cli(acme, "links", "create", "--destination", "https://cli.example/a");
    assert.match(link.url, /\/t\/tu_/);
    assert.match((await click(link.url))[1], /^https:\/\/cli\.example\/a\?/);
    const changed = cli(acme, "links", "update", link.tu_id, "--destination", "https://cli.example/b");
    assert.equal(changed.destination, "https://cli.example/b");
    assert.match((await click(link.url))[1], /^https:\/\/cli\.example\/b\?/);
    // both clicks went through the edge's queue to the core, whose log consumer counts them per link
    await eventually(async () => cli(acme, "links", "get", link.tu_id).counts.clicks === 2, 15000, "link counts");
    const tenants = cli(ADMIN, "tenants", "list", "--limit", "200");
    assert.ok(tenants.data.some((t) => t.key_prefix === "acme"));
    // refusals exit non-zero with the API's code and message
    assert.throws(() => core.cli("api", "--url", edge, "--key", evil, "links", "get", link.tu_id), /404 not_found/);
    assert.throws(() => core.cli("api", "--url", edge, "--key", evil, "tenants", "list"), /403 admin_only/);
  });

  it("applies the plan's API rate limit with RateLimit and Retry-After headers", async () => {
    const t = created(await api("POST", "/api/tenants", ADMIN, { name: "Tiny", key_prefix: "tiny", limits: { api_requests_per_minute: 2 } }), "tiny");
    const key = t.api_key.secret;
    for (const r of [1, 0]) {
      const [status, , headers] = await api("GET", "/api/me", key);
      assert.equal(status, 200);
      assert.equal(headers.get("ratelimit-policy"), '"api";q=2;w=60');
      assert.match(headers.get("ratelimit"), new RegExp(`^"api";r=${r};t=\\d+$`));
    }
    const [status, body, headers] = await api("GET", "/api/me", key);
    assert.equal(status, 429);
    assert.equal(body.error.code, "rate_limited");
    assert.equal(headers.get("retry-after"), "30");
    // the edge remembers the refusal and answers the next attempts itself
    const [again, , againHeaders] = await api("GET", "/api/links", key);
    assert.equal(again, 429);
    assert.ok(Number(againHeaders.get("retry-after")) > 0);
    assert.equal((await api("GET", "/api/me", acme))[0], 200, "other tenants are not affected");
  });
});
