// The core fleet away for a long while, under Miniflare, while clicks go on: the edge keeps redirecting (with the
// tenant's record as it was once it is no longer fresh), the queue
// retries with growing delays, messages older than PARK_AFTER_SECS are parked in KV (counted in /health), and once
// the core is back the scheduled run and `tracker-core edge replay` put them in the core's log: every click the edge
// answered is there exactly once.
//
// CI runs a short outage (OUTAGE_SECS, 12 s by default, with the waits scaled down: retries after 1 to 2 s, parked
// after 3 s). `OUTAGE_SECS=600 node --test tests/edge/outage.test.mjs` runs ten minutes of it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Core, clickId, eventually, get, sleep, worker } from "./harness.mjs";

const OUTAGE_SECS = Number(process.env.OUTAGE_SECS ?? 12);

describe("a long core outage at the edge", () => {
  const core = new Core({ RUST_LOG: "error" });
  let mf, origin;

  before(async () => {
    core.tenant("acme");
    const url = await core.reserve();
    mf = worker(
      // records are fresh for 2 s here: the outage outlives them, and redirects go on with them as they were
      { CORE_URLS: url, RETRY_MIN_DELAY_SECS: "1", RETRY_MAX_DELAY_SECS: "2", PARK_AFTER_SECS: "3", KV_FILL_TTL_SECS: "2", CACHE_TTL_MS: "500" },
      { maxRetries: 100 },
    );
    origin = (await mf.ready).origin;
    // the core asks the Worker to replay (tracker-core edge replay)
    core.settings.EDGE_URLS = origin;
    await core.start();
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  const health = async () => (await (await fetch(`${origin}/health`)).json()).dead_letters;
  const parkedMetric = async () => {
    const text = await (await fetch(`${origin}/metrics`)).text();
    const m = text.match(/^tracker_edge_dead_letters\{state="parked"\} (\d+)$/m);
    assert.ok(m, `the parked gauge in ${text}`);
    return Number(m[1]);
  };

  it("redirects through it, parks what the core could not take, and replays every click exactly once", async () => {
    const link = core.link("acme", "https://shop.example/sale");
    const answered = [];
    const click = async (i) => {
      const res = await get(mf, link, { "cf-connecting-ip": `198.51.100.${i % 250}` });
      assert.equal(res.status, 307, "the edge redirects whether the core answers or not");
      answered.push(clickId(res));
    };
    await click(0); // the tenant's record reaches KV while the core is up
    const atCore = () => core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    await eventually(async () => (await atCore()) >= 1, 15000, "the first click at the core");

    await core.stop("SIGKILL");
    const downAt = Date.now();
    for (let i = 1; Date.now() - downAt < OUTAGE_SECS * 1000; i++) {
      await click(i);
      await sleep(100);
    }
    const parked = await eventually(async () => {
      const d = await health();
      return d.parked > 0 ? d : null;
    }, 15000, "messages parked in KV");
    console.log(`${answered.length} clicks answered; ${OUTAGE_SECS} s without the core; ${parked.parked} messages parked`);

    // the scheduled run while the core is still away: nothing is lost, the messages stay parked
    const w = await mf.getWorker();
    await w.scheduled({ cron: "* * * * *" });
    assert.ok((await health()).parked > 0);
    assert.equal(await parkedMetric(), (await health()).parked, "the metric counts what /health counts");

    await core.start();
    // the operator's command replays at once; the minute's scheduled run would have done the same
    const report = core.cli("edge", "replay");
    assert.match(report, /"replayed":\d+/);
    await w.scheduled({ cron: "* * * * *" });
    await eventually(async () => {
      await w.scheduled({ cron: "* * * * *" });
      return (await health()).parked === 0;
    }, 30000 + OUTAGE_SECS * 200, "every parked message replayed");
    assert.equal(await parkedMetric(), 0);
    // and what was still on the queue's retries arrives too (the restarted node counts from zero: the first click
    // came before)
    const expected = new Set(answered);
    await eventually(async () => (await atCore()) >= expected.size - 1, 30000 + OUTAGE_SECS * 100, "all clicks at the core");

    const events = await core.stopAndDump();
    const counts = new Map();
    for (const e of events) counts.set(e.event_id, (counts.get(e.event_id) ?? 0) + 1);
    const missing = [...expected].filter((id) => !counts.has(id));
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(missing, [], "every click the edge answered is in the core's log");
    assert.deepEqual(twice, [], "and none twice");
    assert.equal(events.length, expected.size);
  });
});
