// The chaos run (`make chaos`): the local stack under load while its parts are killed and restarted on a schedule,
// then a ledger: every event the edge acknowledged must be stored exactly once in the core nodes' logs, once in
// their hot tiers and once in their archives.
//
// The stack: the edge Worker under `wrangler dev` (local KV and Queues), two core nodes (each with its embedded
// log, its consumers and its archiver in the process, both on one metadata database as nodes share Turso in
// production). A load generator clicks a signed link and sends token postbacks through the Worker, and records
// what the Worker acknowledged (the click id of each redirect, the event id of each postback). Every KILL_EVERY_SECS
// one core node is killed (SIGKILL: its consumers and archiver die with it) and restarted DOWN_SECS later, the two in
// turn; the Worker's queue retries, parks and replays meanwhile. Then the load stops, parked messages are replayed,
// the nodes finish their consumers' work and stop, and the ledger is read from their data directories.
//
// Halfway through, the whole fleet goes down (both nodes killed) for OUTAGE_SECS while the Worker goes on taking
// clicks and postbacks: its queue retries and then parks them in KV. Then the Worker itself is killed (SIGKILL, with
// its workerd) and started again on the same local state, the nodes come back, and the parked events must still
// arrive. Before that kill the load pauses until the queue has parked all it held: under wrangler the queue is
// Miniflare's in-memory simulator, where Cloudflare Queues are durable, so a kill with messages in the simulator
// would only show the simulator losing them. KV is persisted by Miniflare (`--persist-to`), as Workers KV is.
//
//   DURATION_SECS=120 KILL_EVERY_SECS=10 DOWN_SECS=4 OUTAGE_SECS=10 node tests/chaos/run.mjs
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, sleep } from "../edge/harness.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const CORE_BIN = join(ROOT, "target/debug/tracker-core");
const DURATION = Number(process.env.DURATION_SECS ?? 120) * 1000;
const KILL_EVERY = Number(process.env.KILL_EVERY_SECS ?? 10) * 1000;
const DOWN = Number(process.env.DOWN_SECS ?? 4) * 1000;
const OUTAGE = Number(process.env.OUTAGE_SECS ?? 10) * 1000;
const PYTHON = process.env.TRACKER_DUCKDB_PYTHON ?? "python3";
const UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

const run = mkdtempSync(join(tmpdir(), "tracker-chaos-"));
const secret = randomBytes(24).toString("hex");
const admin = randomBytes(24).toString("hex");
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s]`, ...a);
const t0 = Date.now();

async function waitFor(url, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if ((await fetch(url).catch(() => null))?.ok) return;
    await sleep(100);
  }
  throw new Error(`${url} did not come up`);
}

class Node {
  constructor(name, port, workerUrl) {
    this.name = name;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.dir = join(run, name);
    this.env = {
      ...process.env,
      DATA_DIR: this.dir,
      PORT: String(port),
      DATABASE_URL: join(run, "metadata.db"),
      EDGE_SHARED_SECRETS: secret,
      EDGE_URLS: workerUrl,
      ADMIN_TOKEN: admin,
      ARCHIVE_FLUSH_SECS: "2",
      // the load comes from one address: the filter's per-address rate is not what this run measures
      FILTER_IP_EVENTS_PER_MINUTE: "0",
      RUST_LOG: "error",
    };
    this.kills = 0;
  }

  cli(...args) {
    return execFileSync(CORE_BIN, args, { env: this.env, encoding: "utf8", maxBuffer: 1 << 30 });
  }

  async start() {
    this.proc = spawn(CORE_BIN, ["serve"], { env: this.env, stdio: ["ignore", "ignore", "inherit"] });
    await waitFor(`${this.url}/health`);
  }

  async stop(signal) {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    await new Promise((ok) => {
      this.proc.once("exit", ok);
      this.proc.kill(signal);
    });
  }
}

const [pw, pa, pb] = [await freePort(), await freePort(), await freePort()];
const workerUrl = `http://127.0.0.1:${pw}`;
const nodes = [new Node("a", pa, workerUrl), new Node("b", pb, workerUrl)];
mkdirSync(nodes[0].dir, { recursive: true });
nodes[0].cli("tenant", "create", "--name", "Chaos", "--prefix", "chaos");
const token = nodes[0].cli("token", "create", "chaos").match(/^token\s+(\S+)/m)[1];
const link = nodes[0].cli("link", "sign", "chaos", "https://shop.example/sale", "--base", "").trim();
for (const n of nodes) await n.start();

// the Worker as it is deployed (the built wasm, wrangler.toml's bindings), its secret in a .dev.vars of its own
const edgeDir = join(run, "edge");
mkdirSync(edgeDir);
const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8")
  .replace(/^main = .*$/m, `main = "${join(ROOT, "edge-worker/build/index.js")}"`)
  .replace(/^\[build\][\s\S]*?\n\n/m, "")
  .replace(/^directory = "dashboard\/dist"$/m, `directory = "${join(ROOT, "dashboard/dist")}"`);
writeFileSync(join(edgeDir, "wrangler.toml"), toml);
writeFileSync(join(edgeDir, ".dev.vars"), `EDGE_SHARED_SECRET=${secret}\n`);
const vars = {
  CORE_URLS: nodes.map((n) => n.url).join(","),
  RETRY_MIN_DELAY_SECS: "1",
  RETRY_MAX_DELAY_SECS: "4",
  PARK_AFTER_SECS: "15",
  RATE_LIMIT_IP_PER_SEC: "100000",
  RATE_LIMIT_TENANT_PER_SEC: "100000",
};
let wrangler;
let wranglerErr = "";
// wrangler and its workerd in a process group of their own, so a kill takes both
async function startWorker() {
  wrangler = spawn(
    join(ROOT, "node_modules/.bin/wrangler"),
    ["dev", "--ip", "127.0.0.1", "--port", String(pw), "--test-scheduled", "--persist-to", join(edgeDir, "state"),
      ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`])],
    {
      cwd: edgeDir,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    },
  );
  wrangler.stderr.on("data", (d) => (wranglerErr = (wranglerErr + d).slice(-4000)));
  try {
    await waitFor(`${workerUrl}/health`, 60000);
  } catch (e) {
    console.error(wranglerErr);
    throw e;
  }
}
async function stopWorker(signal) {
  const exited = new Promise((ok) => wrangler.once("exit", ok));
  process.kill(-wrangler.pid, signal);
  await exited;
  // workerd may outlive wrangler by a moment: wait until the port is free
  while (await fetch(`${workerUrl}/health`).then(() => true, () => false)) await sleep(100);
}
await startWorker();
log(`stack up: Worker ${workerUrl}, nodes ${nodes.map((n) => n.url).join(", ")}, data in ${run}`);

// the load: clicks and token postbacks through the Worker, what it acknowledged recorded
const acknowledged = new Set();
let refused = 0;
let stopLoad = false;
async function loadLoop(i) {
  for (let n = 0; !stopLoad; n++) {
    try {
      if (n % 5 === 4) {
        const res = await fetch(`${workerUrl}/p?token=${token}&event_type=sale&order=${i}-${n}`, { headers: { "user-agent": UA } });
        if (res.status === 200) acknowledged.add((await res.json()).event_id);
        else refused++;
      } else {
        const res = await fetch(`${workerUrl}${link}`, { redirect: "manual", headers: { "user-agent": UA } });
        if (res.status === 307) acknowledged.add(new URL(res.headers.get("location")).searchParams.get("ad_click_id"));
        else refused++;
      }
    } catch {
      refused++;
    }
    await sleep(20);
  }
}
let loops = Array.from({ length: 4 }, (_, i) => loadLoop(i));
const health = async () => (await (await fetch(`${workerUrl}/health`)).json()).dead_letters;

// the fleet down while the edge takes events, then the Worker killed with what it parked
const kills = [];
async function fleetOutageAndWorkerKill() {
  log(`fleet outage: both nodes killed (${acknowledged.size} events acknowledged so far)`);
  for (const n of nodes) {
    await n.stop("SIGKILL");
    n.kills++;
    kills.push(n.name);
  }
  await sleep(OUTAGE);
  stopLoad = true;
  await Promise.all(loops);
  const pausedAt = Date.now();
  // everything in the queue is parked once its age passes PARK_AFTER_SECS and its next retry comes
  const settle = (Number(vars.PARK_AFTER_SECS) + Number(vars.RETRY_MAX_DELAY_SECS) + 2) * 1000;
  log(`load paused; waiting ${settle / 1000} s for the queue to park what it holds`);
  await sleep(settle);
  const counted = async () => {
    const letters = await health();
    // a listing shows at most 1000: past that the count says nothing of whether the queue is done
    if (!letters.complete) throw new Error("over 1000 messages parked: a shorter OUTAGE_SECS keeps them countable");
    return letters.parked;
  };
  let parked = await counted();
  for (let again = -1; again !== parked; ) {
    again = parked;
    await sleep(Number(vars.RETRY_MAX_DELAY_SECS) * 1000 + 1000);
    parked = await counted();
  }
  log(`kill -9 the Worker and its workerd (${parked} messages parked in KV)`);
  await stopWorker("SIGKILL");
  kills.push("worker");
  await startWorker();
  const after = await counted();
  log(`Worker restarted: ${after} messages parked`);
  if (after !== parked) throw new Error(`the Worker's restart lost parked messages: ${parked} before, ${after} after`);
  for (const n of nodes) await n.start();
  log("nodes restarted; load resumed");
  stopLoad = false;
  loops = Array.from({ length: 4 }, (_, i) => loadLoop(i));
  paused += Date.now() - pausedAt;
}

// the schedule: one node down at a time, in turn; the fleet outage halfway
let turn = 0;
let outage = false;
let paused = 0; // the load's pause around the Worker's kill does not count towards DURATION_SECS
while (Date.now() - t0 - paused < DURATION) {
  if (!outage && Date.now() - t0 > DURATION / 2) {
    outage = true;
    await fleetOutageAndWorkerKill();
    continue;
  }
  await sleep(KILL_EVERY - DOWN);
  const victim = nodes[turn++ % nodes.length];
  log(`kill -9 node ${victim.name} (${acknowledged.size} events acknowledged so far)`);
  await victim.stop("SIGKILL");
  victim.kills++;
  kills.push(victim.name);
  await sleep(DOWN);
  await victim.start();
  log(`node ${victim.name} restarted`);
}
stopLoad = true;
await Promise.all(loops);
log(`load stopped: ${acknowledged.size} events acknowledged, ${refused} requests refused or failed`);

// drain: parked messages replayed (the operator's command), the queue's retries delivered, the consumers caught up
const logged = () => nodes.reduce((sum, n) => sum + Number(execFileSync("python3", ["-c",
  "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COALESCE(SUM(rows), 0) FROM hot_segments').fetchone()[0])",
  join(n.dir, "hot.db")], { encoding: "utf8" })), 0);
let replays = "";
let last = -1;
for (let stable = 0; stable < 3; ) {
  replays = nodes[0].cli("edge", "replay").trim();
  await fetch(`${workerUrl}/__scheduled?cron=*+*+*+*+*`).catch(() => {});
  await sleep(5000);
  const now = logged();
  const parked = (await health()).parked;
  stable = now === last && parked === 0 ? stable + 1 : 0;
  last = now;
  log(`draining: ${now} events in the hot tiers, ${parked} messages parked`);
}
log(`last replay report: ${replays}`);
await sleep(5000); // the archivers' last flush (ARCHIVE_FLUSH_SECS=2)
for (const n of nodes) await n.stop("SIGTERM");
await stopWorker("SIGTERM");

// the ledger
const count = (ids, into) => {
  for (const id of ids) into.set(id, (into.get(id) ?? 0) + 1);
  return into;
};
const logIds = new Map();
const hotIds = new Map();
const archiveIds = new Map();
for (const n of nodes) {
  const dump = n.cli("log", "dump", "--limit", "100000000").trim().split("\n").filter(Boolean);
  count(dump.map((l) => JSON.parse(l).event.event_id), logIds);
  count(n.cli("hot", "ids").split("\n").filter(Boolean), hotIds);
  const archived = execFileSync(PYTHON, [join(ROOT, "tests/chaos/archive_ids.py"), join(n.dir, "archive")], {
    encoding: "utf8",
    maxBuffer: 1 << 30,
  });
  count(archived.split("\n").filter(Boolean), archiveIds);
}
const row = (name, ids) => {
  const missing = [...acknowledged].filter((id) => !ids.has(id)).length;
  const twice = [...ids.values()].filter((n) => n > 1).length;
  const extra = [...ids.keys()].filter((id) => !acknowledged.has(id)).length;
  return { name, held: [...ids.values()].reduce((a, b) => a + b, 0), missing, twice, extra };
};
const rows = [row("logs (both nodes)", logIds), row("hot tiers", hotIds), row("archives", archiveIds)];
console.log(`\nchaos run: ${DURATION / 1000} s of load, ${kills.length} kills (${kills.join(" ")}), ${DOWN / 1000} s down each;`
  + ` a ${OUTAGE / 1000} s fleet outage, then the Worker killed`);
console.log(`\n| where | events | acknowledged but missing | stored twice | not acknowledged |`);
console.log(`|---|---:|---:|---:|---:|`);
console.log(`| acknowledged by the edge | ${acknowledged.size} | | | |`);
for (const r of rows) console.log(`| ${r.name} | ${r.held} | ${r.missing} | ${r.twice} | ${r.extra} |`);
const ok = rows.every((r) => r.missing === 0 && r.twice === 0);
console.log(ok ? "\nledger balanced: every acknowledged event stored exactly once in each" : "\nLEDGER DOES NOT BALANCE");
if (ok && !process.env.KEEP) rmSync(run, { recursive: true, force: true });
process.exit(ok ? 0 : 1);
