// Test harness: a real core node (the debug binary built by `cargo test`) and the built Worker under Miniflare.
import { spawn, execFileSync } from "node:child_process";
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Miniflare } from "miniflare";

export const ROOT = resolve(import.meta.dirname, "../..");
export const CORE_BIN = join(ROOT, "target/debug/tracker-core");
export const EDGE_SECRET = "edge-secret-for-tests-0123456789abcdef";

// what the Worker keeps in KV is sealed (tracker_protocol::intake::seal_kv): AES-256-GCM under a key derived from
// its EDGE_SHARED_SECRET, bound to the KV key as associated data; `s1.` + base64url(nonce || ciphertext || tag)
const KV_KEY = createHmac("sha256", EDGE_SECRET).update("tracker/kv-records/v1").digest();

/** The record a Worker sealed under KV key `name` (throws if it is not one); it keeps `{at, record}`. */
export function kvOpen(name, sealed) {
  const blob = Buffer.from(sealed.replace(/^s1\./, ""), "base64url");
  const decipher = createDecipheriv("aes-256-gcm", KV_KEY, blob.subarray(0, 12));
  decipher.setAAD(Buffer.from(name));
  decipher.setAuthTag(blob.subarray(blob.length - 16));
  return JSON.parse(Buffer.concat([decipher.update(blob.subarray(12, blob.length - 16)), decipher.final()]).toString()).record;
}

/** `record` sealed for KV key `name` as the Worker keeps it: read from the core at `at`. */
export function kvSeal(name, record, at = Date.now()) {
  const value = { at, record };
  const nonce = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", KV_KEY, nonce);
  cipher.setAAD(Buffer.from(name));
  const body = Buffer.concat([cipher.update(JSON.stringify(value)), cipher.final(), cipher.getAuthTag()]);
  return "s1." + Buffer.concat([nonce, body]).toString("base64url");
}

/** A service signature (tracker_protocol::intake): HMAC-SHA256 under the purpose's own key, derived from the
 * shared secret, over `v2\n<purpose>\n<ts>\n<subject>\n<body>`. */
export function serviceSignature(secret, purpose, ts, subject, body) {
  const key = createHmac("sha256", secret).update(`tracker/v2/${purpose}`).digest();
  return "v2=" + createHmac("sha256", key).update(`v2\n${purpose}\n${ts}\n${subject}\n`).update(body).digest("hex");
}

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 15000, what = "condition") {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await check();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** A core node with its own data directory. `cli(...)` runs the operator CLI against it. */
export class Core {
  /** `settings`: extra environment variables of the node. */
  constructor(settings = {}) {
    this.dir = mkdtempSync(join(tmpdir(), "tracker-edge-test-"));
    this.settings = settings;
  }

  env(extra = {}) {
    return { ...process.env, DATA_DIR: this.dir, PORT: String(this.port ?? 0), EDGE_SHARED_SECRETS: EDGE_SECRET, RUST_LOG: "warn", CACHE_TTL_SECS: "0", ...this.settings, ...extra };
  }

  cli(...args) {
    return execFileSync(CORE_BIN, args, { env: this.env(), encoding: "utf8" });
  }

  tenant(prefix) {
    const out = this.cli("tenant", "create", "--name", prefix, "--prefix", prefix);
    const field = (name) => out.match(new RegExp(`^${name}\\s+(\\S+)`, "m"))[1];
    return { prefix, kid: field("kid"), secret: field("signing_secret"), aes: field("encryption_key") };
  }

  token(prefix) {
    return this.cli("token", "create", prefix).match(/^token\s+(\S+)/m)[1];
  }

  /** A signed link's path and query (the host is irrelevant to the Worker). */
  link(prefix, destination, ...opts) {
    return this.cli("link", "sign", prefix, destination, "--base", "", ...opts).trim();
  }

  shortLink(prefix, destination, ...opts) {
    return this.cli("link", "short", prefix, destination, "--base", "", ...opts).trim();
  }

  /** Picks the node's port before it starts (so a Worker can be pointed at it first). */
  async reserve() {
    this.port ??= await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    return this.url;
  }

  async start() {
    this.port ??= await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.proc = spawn(CORE_BIN, ["serve"], { env: this.env(), stdio: ["ignore", "ignore", "inherit"] });
    await eventually(async () => (await fetch(`${this.url}/health`).catch(() => null))?.ok, 10000, "core health");
  }

  /** A signed service lookup, as the edge makes them (the record as JSON text). */
  async lookup(path) {
    const ts = Date.now();
    const sig = serviceSignature(EDGE_SECRET, "lookup", ts, path, "");
    const res = await fetch(`${this.url}${path}`, { headers: { "x-tracker-signature": sig, "x-tracker-timestamp": String(ts) } });
    if (!res.ok) throw new Error(`lookup ${path}: ${res.status}`);
    return res.text();
  }

  async metric(name, labels = "") {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
    return line ? Number(line.split(" ").pop()) : 0;
  }

  /** Stops the node (`SIGKILL`: a crash, or `SIGTERM`), keeping its data for the next `start()`. */
  async stop(signal = "SIGTERM") {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    await new Promise((ok) => {
      this.proc.once("exit", ok);
      this.proc.kill(signal);
    });
  }

  /** Stops the node gracefully and returns every event in its durable log. */
  async stopAndDump() {
    await this.stop();
    const out = this.cli("log", "dump", "--limit", "1000000");
    return out.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l).event);
  }

  cleanup() {
    this.proc?.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The built Worker under Miniflare with local KV and queues. */
export function worker(vars = {}, { maxRetries = 2, eventsQueue = true, batchTimeout = 0.2 } = {}) {
  return new Miniflare({
    modules: true,
    scriptPath: join(ROOT, "edge-worker/build/index.js"),
    modulesRoot: join(ROOT, "edge-worker/build"),
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-01",
    bindings: { EDGE_SHARED_SECRET: EDGE_SECRET, ...vars },
    kvNamespaces: ["TRACKER_KV"],
    // as wrangler.toml's [assets]: the dashboard, behind the Worker
    assets: {
      directory: join(ROOT, "dashboard/dist"),
      binding: "ASSETS",
      routerConfig: { invoke_user_worker_ahead_of_assets: true, has_user_worker: true },
      assetConfig: { html_handling: "none", not_found_handling: "none" },
    },
    queueProducers: eventsQueue ? { EVENTS: "tracker-events", DLQ: "tracker-events-dlq" } : { DLQ: "tracker-events-dlq" },
    queueConsumers: {
      "tracker-events": { maxBatchSize: 50, maxBatchTimeout: batchTimeout, maxRetries, deadLetterQueue: "tracker-events-dlq" },
      "tracker-events-dlq": { maxBatchSize: 50, maxBatchTimeout: 0.2, maxRetries: 5 },
    },
  });
}

export const get = (mf, path, headers = {}) =>
  mf.dispatchFetch(`http://edge.test${path}`, { redirect: "manual", headers: { "cf-connecting-ip": "203.0.113.7", ...headers } });

export const post = (mf, path, body, headers = {}) =>
  mf.dispatchFetch(`http://edge.test${path}`, { method: "POST", body, headers: { "cf-connecting-ip": "203.0.113.7", ...headers } });

export const clickId = (res) => new URL(res.headers.get("location")).searchParams.get("ad_click_id");

/** Headless Chromium (Debian's, driven by puppeteer-core), quiet and offline. */
export async function browser() {
  const { default: puppeteer } = await import("puppeteer-core");
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

/** A site of its own (another origin than the tracker): serves `pages` (path → HTML) on a free port. */
export async function site(pages) {
  const { createServer: http } = await import("node:http");
  const port = await freePort();
  const server = http((req, res) => {
    const page = pages[new URL(req.url, "http://x").pathname];
    res.writeHead(page ? 200 : 404, { "content-type": "text/html; charset=utf-8" });
    res.end(page ?? "");
  });
  await new Promise((ok) => server.listen(port, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(ok)) };
}
