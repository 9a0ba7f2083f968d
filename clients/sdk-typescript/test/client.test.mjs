// The batch client against a scripted HTTP server: what it sends, how it retries, what it gives up on.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { TrackerClient, retryAfterMs } from '../dist/index.js';

/** A server answering each request with the next of `answers` ([status, headers, body]); records requests. */
async function server(answers) {
  const requests = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body, at: Date.now() });
      const [status, headers, answer] = answers.shift() ?? [200, {}, null];
      const events = JSON.parse(body);
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(answer ?? { accepted: events.length, rejected: [], duplicate: false }));
    });
  });
  await new Promise((ok) => srv.listen(0, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${srv.address().port}`, requests, close: () => new Promise((ok) => srv.close(ok)) };
}

test('events go in batches by size, with a token, ids, timestamps and one idempotency key per batch', async () => {
  const s = await server([]);
  const client = new TrackerClient({ baseUrl: s.url + '/', token: 'trk_ing_x', batchSize: 2, flushIntervalMs: 0 });
  for (const n of [1, 2, 3]) client.track({ event_type: 'signup', params: { n } });
  await client.close();
  await s.close();
  assert.equal(s.requests.length, 2);
  const [first, second] = s.requests;
  assert.equal(first.url, '/batch');
  assert.equal(first.headers.authorization, 'Bearer trk_ing_x');
  assert.equal(first.headers['content-type'], 'application/json');
  assert.notEqual(first.headers['idempotency-key'], second.headers['idempotency-key']);
  const events = [...JSON.parse(first.body), ...JSON.parse(second.body)];
  assert.deepEqual(events.map((e) => e.params.n), [1, 2, 3]);
  for (const e of events) {
    assert.match(e.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(Math.abs(e.timestamp - Date.now()) < 10_000);
  }
});

test('a failed send is retried with the same key and body, waiting what Retry-After asks', async () => {
  const s = await server([
    [503, {}, { error: { code: 'unavailable', message: 'log down' } }],
    [429, { 'retry-after': '1' }, { error: { code: 'rate_limited', message: 'slow down' } }],
  ]);
  const client = new TrackerClient({ baseUrl: s.url, token: 't', flushIntervalMs: 0, initialBackoffMs: 10 });
  client.track({ event_type: 'a' });
  assert.equal(await client.flush(), 1);
  await s.close();
  assert.equal(s.requests.length, 3);
  assert.equal(new Set(s.requests.map((r) => r.headers['idempotency-key'])).size, 1);
  assert.equal(new Set(s.requests.map((r) => r.body)).size, 1);
  assert.ok(s.requests[2].at - s.requests[1].at >= 950, 'waited for Retry-After');
});

test('a refusal that cannot succeed is not retried and goes to onError with its events', async () => {
  const s = await server([[400, {}, { error: { code: 'invalid_json', message: 'bad' } }]]);
  const failed = [];
  const client = new TrackerClient({
    baseUrl: s.url, token: 't', flushIntervalMs: 0, onError: (e, events) => failed.push([e, events]),
  });
  client.track({ event_type: 'a' });
  await assert.rejects(client.flush(), (e) => e.code === 'invalid_json' && e.status === 400);
  await s.close();
  assert.equal(s.requests.length, 1);
  assert.equal(failed.length, 1);
  assert.equal(failed[0][1][0].event_type, 'a');
  assert.equal(client.pending, 0);
});

test('a Retry-After beyond the limit (a monthly quota) ends the attempts at once', async () => {
  const s = await server([[429, { 'retry-after': '86400' }, { error: { code: 'quota_exceeded', message: 'cap' } }]]);
  const client = new TrackerClient({ baseUrl: s.url, token: 't', flushIntervalMs: 0 });
  client.track({ event_type: 'a' });
  await assert.rejects(client.flush(), (e) => e.code === 'quota_exceeded');
  await s.close();
  assert.equal(s.requests.length, 1);
});

test('network errors are retried up to maxAttempts', async () => {
  let calls = 0;
  const client = new TrackerClient({
    baseUrl: 'http://unused.invalid', token: 't', flushIntervalMs: 0, maxAttempts: 3, initialBackoffMs: 1,
    fetch: async () => {
      calls++;
      throw new TypeError('fetch failed');
    },
  });
  client.track({ event_type: 'a' });
  await assert.rejects(client.flush(), /fetch failed/);
  assert.equal(calls, 3);
});

test('a full queue refuses new events and says so; what was queued is kept in order', async () => {
  const dropped = [];
  const client = new TrackerClient({
    baseUrl: 'http://unused.invalid', token: 't', flushIntervalMs: 0, batchSize: 100, maxQueue: 2,
    onDrop: (e) => dropped.push(e.event_type),
  });
  assert.equal(client.track({ event_type: 'a' }), true);
  assert.equal(client.track({ event_type: 'b' }), true);
  assert.equal(client.track({ event_type: 'c' }), false);
  assert.deepEqual(dropped, ['c']);
  assert.equal(client.pending, 2);
});

test('per-event refusals reach onRejected with their events', async () => {
  const s = await server([[200, {}, { accepted: 1, rejected: [{ index: 1, code: 'invalid_event_type', message: 'x' }] }]]);
  const rejected = [];
  const client = new TrackerClient({ baseUrl: s.url, token: 't', flushIntervalMs: 0, onRejected: (r) => rejected.push(...r) });
  client.track({ event_type: 'ok' });
  client.track({ event_type: 'bad type' });
  assert.equal(await client.flush(), 1);
  await s.close();
  assert.equal(rejected[0].event.event_type, 'bad type');
  assert.equal(rejected[0].code, 'invalid_event_type');
});

test('the interval sends on its own; close() sends the rest and refuses later events', async () => {
  const s = await server([]);
  const client = new TrackerClient({ baseUrl: s.url, token: 't', flushIntervalMs: 50 });
  client.track({ event_type: 'a' });
  await new Promise((ok) => setTimeout(ok, 300));
  assert.equal(s.requests.length, 1);
  client.track({ event_type: 'b' });
  await client.close();
  assert.equal(client.track({ event_type: 'c' }), false);
  await s.close();
  assert.equal(s.requests.length, 2);
});

test("the replaced SDK's configuration works: apiUrl carries the token, destroy() flushes", async () => {
  const s = await server([]);
  const client = new TrackerClient({ apiUrl: `${s.url}/v1/trk_ing_abc`, mode: 'signed', hmacSecret: 'x', batchSize: 100, flushInterval: 0 });
  client.track({
    event_type: 'postback', ip: '203.0.113.1', user_agent: 'Mozilla/5.0', referer: null, accept_language: null,
    request_path: '/p', request_host: 'track.example.com', params: { click_id: 'c1' },
  });
  assert.equal(client.pending, 1);
  await client.destroy();
  await s.close();
  assert.equal(s.requests[0].url, '/v1/trk_ing_abc/batch');
  assert.equal(s.requests[0].headers.authorization, undefined);
  assert.equal(JSON.parse(s.requests[0].body)[0].params.click_id, 'c1');
});

test("the replaced SDK's apiUrl without /v1/<token> is refused with why and where to read more", () => {
  for (const apiUrl of ['https://track.example.com', 'https://track.example.com/', 'https://track.example.com/v1/']) {
    assert.throws(
      () => new TrackerClient({ apiUrl, batchSize: 10 }),
      (e) =>
        e.code === 'invalid_config' &&
        e.message.includes('https://<host>/v1/<ingest token>') &&
        e.message.includes('carried no credential') &&
        e.message.includes('docs/migrating.md'),
      apiUrl,
    );
  }
  const ok = new TrackerClient({ apiUrl: 'https://track.example.com/v1/pt_6vct_x/', flushInterval: 0 });
  return ok.close();
});

test('Retry-After is read as seconds or as a date', () => {
  assert.equal(retryAfterMs('3'), 3000);
  assert.equal(retryAfterMs(new Date(Date.now() + 5000).toUTCString()) > 3000, true);
  assert.equal(retryAfterMs('soon'), undefined);
  assert.equal(retryAfterMs(null), undefined);
});

test('a Node.js program that ends without close() still sends what it queued', async () => {
  const s = await server([]);
  const { execFile } = await import('node:child_process');
  const program = `import { TrackerClient } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
    const client = new TrackerClient({ baseUrl: ${JSON.stringify(s.url)}, token: 't' });
    client.track({ event_type: 'last_words' });`;
  await new Promise((ok, fail) =>
    execFile('node', ['--input-type=module', '-e', program], (e) => (e ? fail(e) : ok())),
  );
  await s.close();
  assert.equal(s.requests.length, 1);
  assert.equal(JSON.parse(s.requests[0].body)[0].event_type, 'last_words');
});

test("the Node.js entry works where WebCrypto is not a global (Node.js 18)", async () => {
  const { execFile } = await import('node:child_process');
  const entry = new URL('../dist/node.js', import.meta.url).href;
  const program = `delete globalThis.crypto;
    const sdk = await import(${JSON.stringify(entry)});
    console.log(sdk.uuidv7(), sdk.encryptedClickUrl('https://t.example', { keyPrefix: 'ab', kid: 'k1', encryptionKey: '00'.repeat(32) }, 'https://a.example/'));`;
  const out = await new Promise((ok, fail) =>
    execFile('node', ['--input-type=module', '-e', program], (e, stdout) => (e ? fail(e) : ok(stdout))),
  );
  assert.match(out, /^[0-9a-f]{8}-[0-9a-f]{4}-7\S+ https:\/\/t\.example\/t\?v=2&k=ab\.k1&e=/);
});
