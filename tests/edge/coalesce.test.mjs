// Clicks, pixels and beacons an isolate takes within COALESCE_MS share queue messages (each message is billed three
// queue operations): a burst arrives at the core whole in a few messages, a message that fills up goes at once, and
// the answer never waits for the window.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Core, clickId, eventually, get, post, worker } from "./harness.mjs";

const workerMetric = async (mf, name) => {
  const text = await (await get(mf, "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ").pop()) : 0;
};

describe("coalescing clicks, pixels and beacons into queue messages", () => {
  const core = new Core();
  let acme, beta;
  const stored = []; // event ids the core's log must hold once each
  const workers = [];

  before(async () => {
    acme = core.tenant("acme");
    beta = core.tenant("beta");
    await core.start();
  });

  after(async () => {
    for (const mf of workers) await mf.dispose();
    const log = await core.stopAndDump();
    const counts = new Map();
    for (const e of log) counts.set(e.event_id, (counts.get(e.event_id) ?? 0) + 1);
    core.cleanup();
    for (const id of stored) assert.equal(counts.get(id), 1, `event ${id} stored once`);
  });

  it("delivers a burst of two tenants' clicks, pixels and beacons whole, in a few messages", async () => {
    const mf = worker({ CORE_URLS: core.url, COALESCE_MS: "400", RATE_LIMIT_IP_PER_SEC: "100000" });
    workers.push(mf);
    // the tenants' records in the isolate first: 180 lookups at once would be a flood of misses, refused as such
    for (const prefix of ["acme", "beta"]) {
      assert.equal((await get(mf, `/i?key_prefix=${prefix}&warm=1`)).status, 200);
    }
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) >= 2,
      15000, "the warm-up pixels at the core");
    const batchesBefore = await core.metric("tracker_edge_batches_total");
    const acceptedBefore = await core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    const [eventsBefore, messagesBefore] = [await workerMetric(mf, "tracker_edge_coalesced_events_total"),
      await workerMetric(mf, "tracker_edge_coalesced_messages_total")];
    // about 1.3 KB an event: 150 of them pass one message's 120 KB, so the burst needs at least two
    const note = `note=${"n".repeat(900)}`;
    const acmeLink = core.link("acme", "https://shop.example/a", "--param", note);
    const betaLink = core.link("beta", "https://shop.example/b", "--param", note);
    const clicks = Array.from({ length: 150 }, (_, i) => get(mf, i % 2 ? acmeLink : betaLink));
    const pixels = Array.from({ length: 20 }, (_, i) => get(mf, `/i?key_prefix=acme&n=${i}`));
    const beacons = Array.from({ length: 10 }, (_, i) =>
      post(mf, "/t/auto", JSON.stringify({ key: "beta", url: `https://shop.example/${i}` }), {
        "content-type": "text/plain;charset=UTF-8",
      }));
    const answers = await Promise.all([...clicks, ...pixels, ...beacons]);
    for (const res of answers.slice(0, 150)) {
      assert.equal(res.status, 307, await res.text());
      stored.push(clickId(res));
    }
    for (const res of answers.slice(150, 170)) {
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-tracker-refused"), null, "pixel taken");
    }
    for (const res of answers.slice(170)) assert.equal(res.status, 204, await res.text());
    const delivered = await eventually(async () => {
      const n = (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) - acceptedBefore;
      return n >= 180 && n;
    }, 20000, "180 events at the core");
    assert.equal(delivered, 180, "every event once");
    const messages = (await core.metric("tracker_edge_batches_total")) - batchesBefore;
    assert.ok(messages >= 2, `a full message goes on its own (${messages} messages)`);
    assert.ok(messages <= 12, `180 events in ${messages} messages`);
    assert.equal((await workerMetric(mf, "tracker_edge_coalesced_events_total")) - eventsBefore, 180);
    assert.equal((await workerMetric(mf, "tracker_edge_coalesced_messages_total")) - messagesBefore, messages);
  });

  it("answers at once and sends the window's events when it closes", async () => {
    const mf = worker({ CORE_URLS: core.url, COALESCE_MS: "3000" });
    workers.push(mf);
    const before = await core.metric("tracker_events_accepted_total", '{endpoint="edge"}');
    const started = Date.now();
    const res = await get(mf, core.link("acme", "https://shop.example/late"));
    const answeredIn = Date.now() - started;
    assert.equal(res.status, 307);
    stored.push(clickId(res));
    assert.ok(answeredIn < 2000, `the redirect did not wait for the 3 s window (${answeredIn} ms)`);
    assert.equal(await core.metric("tracker_events_accepted_total", '{endpoint="edge"}'), before, "still in the window");
    await eventually(async () => (await core.metric("tracker_events_accepted_total", '{endpoint="edge"}')) > before,
      15000, "the click after the window");
    assert.ok(Date.now() - started >= 2900, "sent when the window closed");
  });

  it("sends each event on its own with COALESCE_MS=0", async () => {
    const mf = worker({ CORE_URLS: core.url, COALESCE_MS: "0" });
    workers.push(mf);
    const batchesBefore = await core.metric("tracker_edge_batches_total");
    const link = core.link("beta", "https://shop.example/each");
    const answers = await Promise.all(Array.from({ length: 5 }, () => get(mf, link)));
    for (const res of answers) stored.push(clickId(res));
    await eventually(async () => (await core.metric("tracker_edge_batches_total")) - batchesBefore >= 5, 15000, "5 messages");
    assert.equal(await workerMetric(mf, "tracker_edge_coalesced_events_total"), 0);
  });
});
