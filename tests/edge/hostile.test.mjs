// Hostile bodies at the edge Worker (under Miniflare) and at a core node: endless chunked bodies, bodies far past
// their limit, arrays of a million elements, deep nesting and invalid UTF-8 on /batch and /ingest. Every answer is a
// clear 4xx, given without reading more than the limit (an unauthenticated request reads nothing).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { Core, worker } from "./harness.mjs";

const MiB = 1 << 20;

/** A chunked body of `total` bytes (`[0,0,0,...`), written only as fast as the server takes it; `pulled()` says how
 * much it took. */
function endless(total = 100 * MiB) {
  let sent = 0;
  const data = "0,".repeat(32 * 1024);
  const chunk = Buffer.from(`${data.length.toString(16)}\r\n${data}\r\n`);
  return {
    pulled: () => sent,
    /** Writes into `socket` until `total`, or until `stop()`. */
    async pump(socket, stop) {
      socket.write("1\r\n[\r\n");
      while (sent < total && !stop() && !socket.destroyed) {
        sent += data.length;
        if (!socket.write(chunk)) await new Promise((ok) => socket.once("drain", ok).once("close", ok));
      }
      if (!stop() && !socket.destroyed) socket.write("2\r\n0]\r\n0\r\n\r\n");
    },
  };
}

/**
 * POSTs a streamed body over a raw socket and reads the answer as soon as it comes, while the upload may still be
 * going (HTTP clients give up on a request whose server answered and closed before the upload ended, which is the
 * point here): `[status, error code]`.
 */
function postStreaming(base, path, headers, body) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    let received = "";
    let done = false;
    const socket = connect(Number(port), hostname, () => {
      const head = Object.entries({ host: `${hostname}:${port}`, ...headers, "transfer-encoding": "chunked" })
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join("");
      socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
      body.pump(socket, () => done).catch(() => {});
    });
    const finish = () => {
      const [head, rest = ""] = received.split("\r\n\r\n");
      const status = Number(head.split(" ")[1]);
      const json = rest.slice(rest.indexOf("{"), rest.lastIndexOf("}") + 1);
      if (!status || !json) return false;
      done = true;
      socket.destroy();
      resolve([status, JSON.parse(json).error.code]);
      return true;
    };
    socket.on("data", (d) => {
      received += d;
      finish();
    });
    // a reset after the answer is the server closing on an upload it refused; before one, it is a failure
    socket.on("error", () => {});
    socket.on("close", () => done || finish() || reject(new Error(`no answer: ${JSON.stringify(received)}`)));
  });
}

describe("hostile bodies", () => {
  const core = new Core();
  let mf, token;
  const bases = {};

  before(async () => {
    core.tenant("acme");
    token = core.token("acme");
    await core.start();
    mf = worker({ CORE_URLS: core.url });
    bases.edge = (await mf.ready).origin;
    bases.core = core.url;
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  const tiers = {
    edge: (path, init) => mf.dispatchFetch(`http://edge.test${path}`, init),
    core: (path, init) => fetch(`${core.url}${path}`, init),
  };

  for (const [tier, send] of Object.entries(tiers)) {
    const post = (path, body, credential, extra = {}) =>
      send(path, {
        method: "POST",
        body,
        duplex: "half",
        headers: { "content-type": "application/json", ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...extra },
      });
    const refusal = async (res) => [res.status, (await res.json()).error.code];
    // A server that closes on an upload it refused, with the client still sending, resets the connection, and a
    // reset can reach the client's kernel before the client has read the answer, which the kernel then discards
    // (workerd closes without draining the rest). So a reset with no answer is tried again, at most twice, each
    // time with a fresh body; any answer, or a third reset, is the result. Returns the answer and the last body.
    const stream = async (path, makeBody, credential) => {
      for (let attempt = 1; ; attempt++) {
        const body = makeBody();
        try {
          const answer = await postStreaming(bases[tier], path, {
            "content-type": "application/json",
            "cf-connecting-ip": "203.0.113.9",
            ...(credential ? { authorization: `Bearer ${credential}` } : {}),
          }, body);
          return [answer, body];
        } catch (e) {
          if (attempt >= 3 || !e.message.startsWith("no answer")) throw e;
          console.log(`${tier} ${path}: reset before the answer, after ${body.pulled()} bytes; sending again`);
        }
      }
    };

    it(`${tier}: without a credential nothing of a 100 MB body is read`, async () => {
      const [answer, body] = await stream("/batch", () => endless());
      assert.deepEqual(answer, [401, "unauthorized"]);
      assert.ok(body.pulled() < 16 * MiB, `read ${body.pulled()} bytes of 100 MiB`);
      const [forgedAnswer, forged] = await stream("/ingest", () => endless(), "trk_ing_forged");
      assert.deepEqual(forgedAnswer, [401, "unauthorized"]);
      assert.ok(forged.pulled() < 16 * MiB, `read ${forged.pulled()} bytes of 100 MiB`);
    });

    it(`${tier}: a real token's 100 MB chunked body is refused at the limit`, async () => {
      const [answer, body] = await stream("/batch", () => endless(), token);
      assert.deepEqual(answer, [413, "body_too_large"]);
      // the limit (8 MiB), what the node reads on while its answer goes out (16 MiB), and socket buffers
      assert.ok(body.pulled() < 40 * MiB, `read ${body.pulled()} bytes of 100 MiB`);
      const [one] = await stream("/ingest", () => endless(1 * MiB), token);
      assert.deepEqual(one, [413, "body_too_large"]);
    });

    it(`${tier}: a million elements, deep nesting and invalid UTF-8 are 4xx`, async () => {
      const million = `[${"0,".repeat(999_999)}0]`;
      assert.deepEqual(await refusal(await post("/batch", million, token)), [413, "batch_too_large"]);
      const deep = `[${"[".repeat(100_000)}${"]".repeat(100_000)}]`;
      const nested = await post("/batch", deep, token);
      assert.ok([400, 422].includes(nested.status), `deep nesting: ${nested.status}`);
      const bytes = new Uint8Array([0x5b, 0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d, 0x5d]);
      const utf8 = await post("/batch", bytes, token);
      assert.ok([400, 422].includes(utf8.status), `invalid UTF-8: ${utf8.status}`);
      const single = await post("/ingest", bytes.slice(1, -1), token);
      assert.ok(single.status >= 400 && single.status < 500, `invalid UTF-8 at /ingest: ${single.status}`);
    });

    it(`${tier}: a flood of random key prefixes is refused, each a 4xx`, async () => {
      const codes = {};
      for (let i = 0; i < 1000; i++) {
        const prefix = randomBytes(8).toString("hex");
        const res = await send(`/p?key_prefix=${prefix}&order=${i}`, { headers: { "cf-connecting-ip": "203.0.113.50" } });
        codes[res.status] = (codes[res.status] ?? 0) + 1;
        await res.body?.cancel();
      }
      // unknown tenants (404), or past the edge's budget of lookups per address that miss KV (429)
      assert.ok(Object.keys(codes).every((s) => s === "404" || s === "429"), JSON.stringify(codes));
      console.log(`${tier}: 1,000 random key prefixes answered ${JSON.stringify(codes)}`);
    });
  }

  it("the core node's peak memory stays bounded through all of it", () => {
    // runs last: every hostile body above has been sent by now
    const status = readFileSync(`/proc/${core.proc.pid}/status`, "utf8");
    const peak = Number(status.match(/^VmHWM:\s+(\d+) kB/m)[1]) * 1024;
    console.log(`core node peak RSS: ${(peak / MiB).toFixed(1)} MiB`);
    assert.ok(peak < 256 * MiB, `peak RSS ${peak} bytes`);
  });
});

/**
 * Writes `parts` (strings or buffers, `{ wait: ms }` for a pause) on a raw socket to `base` and collects what comes
 * back until the server closes: `{ status, code, closedAfterMs }` (`status` 0 when it closed without an answer).
 */
function raw(base, parts) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const started = Date.now();
    const chunks = [];
    const socket = connect(Number(port), hostname, async () => {
      for (const part of parts) {
        if (socket.destroyed) return;
        if (part.wait) await new Promise((ok) => setTimeout(ok, part.wait));
        else socket.write(part);
      }
    });
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", () => {});
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const [head, body = ""] = text.split("\r\n\r\n");
      const status = Number(head.split(" ")[1]) || 0;
      let code;
      try {
        code = JSON.parse(body).error.code;
      } catch {
        code = body ? `not JSON: ${JSON.stringify(text.slice(0, 300))}` : undefined;
      }
      resolve({ status, code, head, closedAfterMs: Date.now() - started });
    });
  });
}

describe("a core node's HTTP layer", () => {
  // short timeouts, so that waiting them out stays quick; a low per-address API limit
  const ADMIN = "hostile-admin-token-0123456789abcdef";
  const METRICS = "hostile-metrics-token-0123456789abcdef";
  const core = new Core({
    HEADER_TIMEOUT_SECS: "1",
    BODY_IDLE_TIMEOUT_SECS: "1",
    BODY_TIMEOUT_SECS: "3",
    API_IP_REQUESTS_PER_MINUTE: "40",
    ADMIN_TOKEN: ADMIN,
    METRICS_TOKEN: METRICS,
    // as behind a proxy: the test's loopback address is then no proof of being on the node's machine
    TRUST_PROXY: "x-forwarded-for",
  });
  let token;
  before(async () => {
    core.tenant("acme");
    token = core.token("acme");
    await core.start();
  });
  after(() => core.cleanup());

  it("requests hyper refuses before any handler are answered in the JSON error shape", async () => {
    const long = await raw(core.url, [`GET /t?d=${"a".repeat(70_000)} HTTP/1.1\r\nhost: x\r\n\r\n`]);
    assert.deepEqual([long.status, long.code], [414, "uri_too_long"]);
    assert.match(long.head, /content-type: application\/json/);
    const big = await raw(core.url, [`GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${"b".repeat(200_000)}\r\n\r\n`]);
    assert.deepEqual([big.status, big.code], [431, "headers_too_large"]);
    const latin = Buffer.concat([Buffer.from("GET /t?d="), Buffer.from([0xff, 0xfe]), Buffer.from(" HTTP/1.1\r\nhost: x\r\n\r\n")]);
    const bytes = await raw(core.url, [latin]);
    assert.deepEqual([bytes.status, bytes.code], [400, "bad_request"]);
    const garbage = await raw(core.url, ["\x01\x02 nonsense\r\n\r\n"]);
    assert.deepEqual([garbage.status, garbage.code], [400, "bad_request"]);
  });

  it("metrics and broker details answer only the operator", async () => {
    for (const path of ["/metrics", "/health/broker"]) {
      const anyone = await fetch(`${core.url}${path}`);
      assert.deepEqual([anyone.status, (await anyone.json()).error.code], [401, "unauthorized"], path);
      for (const token of [METRICS, ADMIN]) {
        const res = await fetch(`${core.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(res.status, 200, path);
      }
      const wrong = await fetch(`${core.url}${path}`, { headers: { authorization: `Bearer ${METRICS}x` } });
      assert.equal(wrong.status, 401);
    }
    // the plain health check stays public: load balancers call it
    assert.equal((await fetch(`${core.url}/health`)).status, 200);
  });

  it("a head that does not arrive whole in time closes the connection", async () => {
    const slow = await raw(core.url, ["GET /health HTTP/1.1\r\n", { wait: 3000 }, "host: x\r\n\r\n"]);
    assert.equal(slow.status, 0, "no answer to a head that never completed");
    assert.ok(slow.closedAfterMs < 2900, `closed after ${slow.closedAfterMs} ms`);
  });

  it("a body that stops arriving is answered 408, whichever handler reads it", async () => {
    const slow = (path, credential) =>
      raw(core.url, [
        `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${credential}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n`,
        '{"a":',
        { wait: 4000 },
      ]);
    for (const [path, credential] of [["/ingest", token], ["/batch", token], ["/api/tenants", ADMIN]]) {
      const res = await slow(path, credential);
      assert.deepEqual([res.status, res.code], [408, "request_timeout"], path);
      assert.ok(res.closedAfterMs < 3000, `${path}: answered after ${res.closedAfterMs} ms`);
    }
  });

  it("an address's API requests are limited before any credential is looked at", async () => {
    // the node's limit is 40 a minute; the test above made one
    const codes = [];
    for (let i = 0; i < 45; i++) {
      const res = await fetch(`${core.url}/api/links`, { headers: { authorization: `Bearer trk_key_guess${i}` } });
      codes.push((await res.json()).error.code);
    }
    assert.equal(codes.at(-1), "rate_limited");
    assert.ok(codes.filter((c) => c === "unauthorized").length <= 39, codes.join(" "));
    // tracking is not the API: a click from the same address still works
    assert.notEqual((await fetch(`${core.url}/health`)).status, 429);
  });
});

