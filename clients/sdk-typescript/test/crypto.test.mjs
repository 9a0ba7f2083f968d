// The built-in SHA-256, HMAC-SHA256 and AES-256-GCM (src/crypto.ts: synchronous and constant-time, so not
// WebCrypto's) against the runtime's WebCrypto, on fixed edge cases and on random keys, nonces and lengths. A failure
// names its inputs in hex, so it can be replayed.
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { test } from 'node:test';

import { aesGcmOpen, aesGcmSeal, hex, hmacSha256, sha256 } from '../dist/crypto.js';

const { subtle } = globalThis.crypto ?? webcrypto; // a global from Node.js 19 on
const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));
const below = (n) => random(4).reduce((acc, b) => acc * 256 + b, 0) % n;
const bytes = async (promise) => new Uint8Array(await promise);

async function webSeal(key, nonce, plaintext, aad) {
  const k = await subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  return bytes(subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 }, k, plaintext));
}

test('SHA-256 equals WebCrypto at every padding boundary and on random data', async () => {
  const lengths = [...Array(130).keys(), 183, 184, 1000, 4096 + 55];
  for (const n of lengths) {
    const data = random(n);
    assert.equal(hex(sha256(data)), hex(await bytes(subtle.digest('SHA-256', data))), `length ${n}: ${hex(data)}`);
  }
});

test('HMAC-SHA256 equals WebCrypto, with keys shorter and longer than a block', async () => {
  for (let i = 0; i < 100; i++) {
    const [key, message] = [random(1 + below(150)), random(below(300))];
    const k = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    const want = hex(await bytes(subtle.sign('HMAC', k, message)));
    assert.equal(hex(hmacSha256(key, message)), want, `key ${hex(key)}, message ${hex(message)}`);
  }
  const hmac = { name: 'HMAC', hash: 'SHA-256' };
  const k = await subtle.importKey('raw', new TextEncoder().encode('sécret'), hmac, false, ['sign']);
  const want = hex(await bytes(subtle.sign('HMAC', k, new TextEncoder().encode('mëssage'))));
  assert.equal(hex(hmacSha256('sécret', 'mëssage')), want, 'strings are signed as their UTF-8 bytes');
});

test('AES-256-GCM seals as WebCrypto does and opens what WebCrypto sealed (500 random cases)', async () => {
  // lengths around the block size first (0, 1, 15, 16, 17, 31, 32, 33 ...), then any up to 300 bytes
  const edges = [0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64];
  for (let i = 0; i < 500; i++) {
    const key = random(32);
    const nonce = random(12);
    const plaintext = random(i < edges.length ** 2 ? edges[i % edges.length] : below(301));
    const aad = random(i < edges.length ** 2 ? edges[Math.floor(i / edges.length)] : below(3) === 0 ? 0 : below(80));
    const name = `key ${hex(key)}, nonce ${hex(nonce)}, plaintext ${hex(plaintext)}, aad ${hex(aad)}`;
    const sealed = await webSeal(key, nonce, plaintext, aad);
    assert.equal(hex(aesGcmSeal(key, nonce, plaintext, aad)), hex(sealed), `seal: ${name}`);
    assert.equal(hex(aesGcmOpen(key, nonce, sealed, aad) ?? new Uint8Array([1])), hex(plaintext), `open: ${name}`);
    // any flipped bit of ciphertext or tag, or other associated data, and the tag no longer authenticates
    const tampered = sealed.slice();
    tampered[below(tampered.length)] ^= 1 << below(8);
    assert.equal(aesGcmOpen(key, nonce, tampered, aad), null, `tampered: ${name}`);
    const otherAad = new Uint8Array([...aad, 0]);
    assert.equal(aesGcmOpen(key, nonce, sealed, otherAad), null, `other aad: ${name}`);
  }
});

test('AES-256-GCM refuses wrong sizes', () => {
  assert.throws(() => aesGcmSeal(random(31), random(12), random(4)), RangeError);
  assert.throws(() => aesGcmSeal(random(32), random(16), random(4)), RangeError);
  assert.equal(aesGcmOpen(random(32), random(12), random(15)), null);
});
