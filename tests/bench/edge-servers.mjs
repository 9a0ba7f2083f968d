// Serves the built Rust Worker (twice: coalescing clicks into queue messages as deployed, and with COALESCE_MS=0, one
// message per click) and a plain-JavaScript reference Worker (same v1-link HMAC check, same event, one queue send per
// click in waitUntil, same redirect) from workerd through Miniflare, each on its own port, for tests/bench/edge.sh to
// load with wrk. Prints one JSON line with the URLs and the link, then stays up.
import { createHmac } from "node:crypto";
import { join, resolve } from "node:path";
import { Miniflare } from "miniflare";
import { EDGE_SECRET, kvSeal } from "../edge/harness.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const SECRET = "bench-secret-0123456789abcdef0123456789abcdef";
const RECORD = JSON.stringify({ key_prefix: "bench", active: true, keys: [{ kid: "k1", signing_secret: SECRET, encryption_key: null, retires_at_ms: null }] });
const dest = "https://example.com/landing";
const link = `/t?url=${encodeURIComponent(dest)}&sig=bench_${createHmac("sha256", SECRET).update(dest).digest("hex")}&campaign=bench&sub1=wrk`;

const JS_WORKER = `
const enc = new TextEncoder();
const keys = new Map();
const hex = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));
const err = (status, code) => new Response(JSON.stringify({ error: { code } }), { status, headers: { "content-type": "application/json" } });
export default {
  async fetch(req, env, ctx) {
    const url = new URL(req.url);
    if (url.pathname !== "/t") return err(404, "not_found");
    const dest = url.searchParams.get("url"), sig = url.searchParams.get("sig");
    if (!dest || !sig) return err(400, "missing_link_params");
    const cut = sig.indexOf("_");
    const kp = sig.slice(0, cut), mac = sig.slice(cut + 1);
    if (!/^[0-9a-f]{64}$/.test(mac)) return err(400, "malformed_signature");
    let key = keys.get(kp);
    if (!key) {
      const rec = await env.TRACKER_KV.get("tenant:" + kp, "json");
      if (!rec) return err(404, "unknown_tenant");
      key = await crypto.subtle.importKey("raw", enc.encode(rec.keys[0].signing_secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
      keys.set(kp, key);
    }
    if (!(await crypto.subtle.verify("HMAC", key, hex(mac), enc.encode(dest)))) return err(403, "invalid_signature");
    let loc;
    try { loc = new URL(dest); } catch { return err(400, "invalid_destination"); }
    if (loc.protocol !== "https:" && loc.protocol !== "http:") return err(400, "destination_scheme_not_allowed");
    const id = crypto.randomUUID();
    const now = Date.now();
    const params = {};
    for (const [k, v] of url.searchParams) if (k !== "url" && k !== "sig") params[k] = v;
    // the same event fields the Rust Worker records
    const h = req.headers;
    const event = { event_id: id, event_type: "click", timestamp: now, received_at: now, key_prefix: kp,
      ip: h.get("cf-connecting-ip"), user_agent: h.get("user-agent"), referer: h.get("referer"),
      accept_language: h.get("accept-language"), request_path: url.pathname, request_host: h.get("host"), params, auth: "link" };
    ctx.waitUntil(env.EVENTS.send(JSON.stringify({ events: [event] }), { contentType: "text" }));
    loc.searchParams.set("ad_click_id", id);
    return new Response(null, { status: 307, headers: { location: loc.toString(), "cache-control": "no-store, max-age=0", "referrer-policy": "no-referrer" } });
  },
};`;

const common = { compatibilityDate: "2026-04-01", host: "127.0.0.1", kvNamespaces: ["TRACKER_KV"], queueProducers: { EVENTS: "tracker-events", DLQ: "tracker-events-dlq" } };
const rustWorker = (port, vars = {}) => new Miniflare({
  ...common,
  port,
  modules: true,
  scriptPath: join(ROOT, "edge-worker/build/index.js"),
  modulesRoot: join(ROOT, "edge-worker/build"),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    // no core: the tenant comes from KV, sealed as the Worker keeps it, and stays fresh for the whole run
  bindings: { CORE_URLS: "http://127.0.0.1:9", EDGE_SHARED_SECRET: EDGE_SECRET, KV_FILL_TTL_SECS: "86400", RATE_LIMIT_TENANT_PER_SEC: "100000000", RATE_LIMIT_IP_PER_SEC: "100000000", ...vars },
});
const rust = rustWorker(Number(process.env.RUST_PORT ?? 18787));
const each = rustWorker(Number(process.env.RUST_EACH_PORT ?? 18789), { COALESCE_MS: "0" });
const js = new Miniflare({ ...common, port: Number(process.env.JS_PORT ?? 18788), modules: true, script: JS_WORKER });
const all = [rust, each, js];
for (const mf of [rust, each]) await (await mf.getKVNamespace("TRACKER_KV")).put("tenant:bench", kvSeal("tenant:bench", JSON.parse(RECORD)));
await (await js.getKVNamespace("TRACKER_KV")).put("tenant:bench", RECORD);
const [rustUrl, eachUrl, jsUrl] = await Promise.all(all.map((mf) => mf.ready));
for (const u of [rustUrl, eachUrl, jsUrl]) {
  const res = await fetch(new URL(link, u), { redirect: "manual" });
  if (res.status !== 307) throw new Error(`${u} answered ${res.status}: ${await res.text()}`);
}
console.log(JSON.stringify({ rust: rustUrl.origin, each: eachUrl.origin, js: jsUrl.origin, link }));
process.on("SIGTERM", async () => {
  for (const mf of all) await mf.dispose();
  process.exit(0);
});
