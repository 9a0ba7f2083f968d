// The SDK against the platform's own test vectors (tests/vectors/links.json, written by the Rust protocol crate)
// and the replaced SDK's recorded outputs (tests/v1/clients.json).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import * as sdk from '../dist/index.js';

const root = new URL('../../../', import.meta.url);
const vectors = JSON.parse(readFileSync(new URL('tests/vectors/links.json', root), 'utf8'));
const v1 = JSON.parse(readFileSync(new URL('tests/v1/clients.json', root), 'utf8'));
const BASE = 'https://track.example';

function keyFor(build) {
  if (build.kid === 'global') {
    const g = vectors.keys.global;
    return { keyPrefix: build.key_prefix, kid: 'global', secret: g.hmac_secret, encryptionKey: g.encryption_key };
  }
  const k = vectors.keys[build.key_prefix].find((k) => k.kid === build.kid);
  return { keyPrefix: build.key_prefix, kid: k.kid, secret: k.signing_secret, encryptionKey: k.encryption_key };
}

const nonce = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));

test('every link in the vectors is built byte for byte', () => {
  assert.ok(vectors.builds.length >= 8);
  assert.ok(vectors.builds.some((b) => b.kind === 'impression'), 'the vectors have pixel builds');
  for (const b of vectors.builds) {
    const key = keyFor(b);
    const { params, ...rest } = { params: b.params, ext: b.ext, ...(b.expires_at && { expiresAt: b.expires_at }) };
    const options = { params, ...rest };
    let url;
    switch (b.format) {
      case 'v2_signed':
        // each kind by its own builder, and the same link by the generic one
        url = {
          click: () => sdk.clickUrl(BASE, key, b.target, options),
          short: () => sdk.shortLinkUrl(BASE, key, b.target, options),
          postback: () => sdk.postbackUrl(BASE, key, params, rest),
          impression: () => sdk.pixelUrl(BASE, key, params, rest),
        }[b.kind]();
        assert.equal(sdk.signedLink(BASE, key, b.kind, b.target, options), url, b.name);
        break;
      case 'v2_encrypted':
        url = sdk.encryptedClickUrl(BASE, key, b.target, options, nonce(b.nonce));
        break;
      case 'v1_signed':
        url = sdk.v1SignedUrl(BASE, key.secret, b.key_prefix ?? undefined, b.target, b.params);
        break;
      case 'v1_short':
        url = sdk.v1ShortUrl(BASE, key.secret, b.key_prefix ?? undefined, b.target, b.params);
        break;
      case 'v1_encrypted':
        url = sdk.v1EncryptedUrl(BASE, key.encryptionKey, b.target, b.params, nonce(b.nonce));
        break;
      default:
        assert.fail(`unknown format ${b.format}`);
    }
    assert.equal(url, b.url, b.name);
  }
});

test('a v2 signed link built with an expiry Date equals one built with unix seconds', () => {
  const b = vectors.builds.find((b) => b.format === 'v2_signed' && b.expires_at);
  const key = keyFor(b);
  const at = new Date(b.expires_at * 1000);
  assert.equal(sdk.clickUrl(BASE, key, b.target, { params: b.params, ext: b.ext, expiresAt: at }), b.url);
});

test('the v2 message is the one the protocol signs', () => {
  const { input, message_utf8 } = vectors.v2_message;
  const got = sdk.v2Message(input.kind, input.key_prefix, input.kid, input.target, input.exp, input.ext, input.params);
  assert.equal(got, message_utf8);
});

test('links the platform would refuse are refused when built, with its error codes', () => {
  const key = keyFor(vectors.builds[0]);
  const refused = (fn, code) => assert.throws(fn, (e) => e instanceof sdk.TrackerError && e.code === code);
  refused(() => sdk.clickUrl(BASE, key, 'https://a.example/', { params: { sig: 'x' } }), 'reserved_param');
  refused(() => sdk.clickUrl(BASE, key, 'https://a.example/', { params: [['a', '1'], ['a', '2']] }), 'duplicate_param');
  refused(() => sdk.clickUrl(BASE, key, 'https://a.example/', { params: { gclid: 'x' }, ext: ['gclid'] }), 'reserved_param');
  refused(() => sdk.clickUrl(BASE, key, 'https://a.example/', { expiresAt: -5 }), 'invalid_expiry');
  refused(() => sdk.shortLinkUrl(BASE, key, 'tu_nope'), 'invalid_short_link_id');
  refused(() => sdk.clickUrl(BASE, { ...key, keyPrefix: 'A' }, 'https://a.example/'), 'invalid_key_prefix');
  refused(() => sdk.encryptedClickUrl(BASE, { ...key, encryptionKey: undefined }, 'https://a.example/'), 'malformed_ciphertext');
});

test('destinations a click would refuse make no link, with the codes the platform gives', () => {
  const key = { keyPrefix: 'acme', kid: 'k1', secret: 's', encryptionKey: '11'.repeat(32) };
  assert.ok(vectors.destinations.length >= 20);
  const codeOf = (fn) => {
    try {
      fn();
      return null;
    } catch (e) {
      assert.ok(e instanceof sdk.TrackerError, String(e));
      return e.code;
    }
  };
  for (const { destination: d, new_link, click } of vectors.destinations) {
    assert.equal(codeOf(() => sdk.clickUrl(BASE, key, d)), new_link, `v2 click to ${JSON.stringify(d)}`);
    assert.equal(codeOf(() => sdk.encryptedClickUrl(BASE, key, d)), new_link, `encrypted click to ${JSON.stringify(d)}`);
    assert.equal(codeOf(() => sdk.v1SignedUrl(BASE, 's', 'acme', d)), click, `v1 click to ${JSON.stringify(d)}`);
    assert.equal(codeOf(() => sdk.v1EncryptedUrl(BASE, '22'.repeat(32), d)), click, `v1 encrypted to ${JSON.stringify(d)}`);
  }
});

test('encrypted links use a fresh nonce each time', () => {
  const key = keyFor(vectors.builds.find((b) => b.format === 'v2_encrypted'));
  assert.notEqual(sdk.encryptedClickUrl(BASE, key, 'https://a.example/'), sdk.encryptedClickUrl(BASE, key, 'https://a.example/'));
});

test('webhook signatures are verified as the platform signs them', () => {
  const { secret, tolerance_secs, cases } = vectors.webhook_signatures;
  const codes = { malformed: 'malformed_signature', stale: 'stale_signature', mismatch: 'invalid_signature' };
  for (const c of cases) {
    const verify = () => sdk.verifyWebhook(secret, c.header, c.body, { now: c.now, toleranceSeconds: tolerance_secs });
    if (c.expect === 'ok') assert.equal(typeof verify(), 'number', c.name);
    else assert.throws(verify, (e) => e.code === codes[c.expect], c.name);
  }
  const ok = cases.find((c) => c.expect === 'ok');
  assert.equal(sdk.verifyWebhook(secret, ok.header, new TextEncoder().encode(ok.body), { now: ok.now }), Number(ok.header.slice(2, 12)));
  const t = Number(ok.header.match(/t=(\d+)/)[1]);
  assert.equal(sdk.signWebhook(secret, t, ok.body), ok.header);
});

test("the replaced SDK's builders give its recorded URLs", () => {
  const { baseUrl, secret } = v1.sdk_urls.built_with;
  const u = v1.sdk_urls;
  assert.equal(sdk.buildSignedClickUrl(baseUrl, secret, u.buildSignedClickUrl.destination, u.buildSignedClickUrl.params), u.buildSignedClickUrl.url);
  assert.equal(sdk.buildTrackedClickUrl(baseUrl, secret, u.buildTrackedClickUrl.tu_id, u.buildTrackedClickUrl.params), u.buildTrackedClickUrl.url);
  assert.equal(sdk.buildPostbackUrl(baseUrl, u.buildPostbackUrl.params), u.buildPostbackUrl.url);
  assert.equal(sdk.buildImpressionUrl(baseUrl, u.buildImpressionUrl.params), u.buildImpressionUrl.url);
  assert.equal(sdk.buildSignedClickUrl(baseUrl + '///', secret, 'https://a.example/').split('?')[0], `${baseUrl}/t`);
});

test("the replaced SDK's crypto helpers round-trip and refuse tampering", () => {
  const key = vectors.keys.global.encryption_key;
  const blob = sdk.encryptUrl(key, 'https://hidden.example/ü?x=1');
  assert.equal(sdk.decryptUrl(key, blob), 'https://hidden.example/ü?x=1');
  const tampered = blob.slice(0, -2) + (blob.at(-2) === 'A' ? 'B' : 'A') + blob.at(-1);
  assert.throws(() => sdk.decryptUrl(key, tampered), (e) => e.code === 'decryption_failed');
  const url = sdk.buildEncryptedClickUrl('https://t.example', key, 'https://hidden.example/', { sub1: 's' });
  assert.equal(sdk.decryptUrl(key, new URL(url).searchParams.get('d')), 'https://hidden.example/');
  const sig = sdk.signHmac('s3cret', 'https://a.example/');
  assert.ok(sdk.verifyHmac('s3cret', 'https://a.example/', sig));
  assert.ok(!sdk.verifyHmac('s3cret', 'https://a.example/x', sig));
  assert.ok(!sdk.verifyHmac('s3cret', 'https://a.example/', 'zz'));
});
