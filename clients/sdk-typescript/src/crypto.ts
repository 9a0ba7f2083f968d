// SHA-256, HMAC-SHA256 and AES-256-GCM in plain TypeScript, with no dependency, for two reasons:
// - Every link builder stays synchronous. The replaced SDK's builders (`buildSignedClickUrl`, `encryptUrl`, ...) are
//   plain synchronous functions its users call inline, and so are ours; WebCrypto's `crypto.subtle` is async only
//   and would make each of them return a Promise. The same code runs on Node.js, Workers, Deno, Bun and browsers.
// - Constant time: the AES-GCM below has no table indexed by a secret (the S-box is computed), no branch on a secret
//   bit (masks instead) and no BigInt (its operations take time that depends on the values), so the time a link
//   takes to build tells nothing about the key. SHA-256 and HMAC index their tables by round only.
// Randomness (nonces, ids) comes from WebCrypto. test/crypto.test.mjs checks every function against WebCrypto.
// Cost, measured (CPU time, Node.js 20, best of 5 runs, 10,000 v2 encrypted links of 286 characters): 3.6 s with
// the former table S-box and BigInt GHASH, 2.1 s now (the BigInt GHASH was the slow part): 0.2 ms a link.

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------------------------------------------

function primes(n: number): number[] {
  const out: number[] = [];
  for (let candidate = 2; out.length < n; candidate++) {
    if (out.every((p) => candidate % p !== 0)) out.push(candidate);
  }
  return out;
}

// the first 32 bits of the fractional parts of the square and cube roots of the first primes
const fraction = (x: number) => ((x - Math.floor(x)) * 2 ** 32) >>> 0;
const H0 = primes(8).map((p) => fraction(Math.sqrt(p)));
const K = primes(64).map((p) => fraction(Math.cbrt(p)));

export function sha256(data: Uint8Array): Uint8Array {
  const bitLength = data.length * 8;
  const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bitLength / 2 ** 32));
  view.setUint32(padded.length - 4, bitLength >>> 0);
  const h = H0.slice();
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15]!;
      const b = w[i - 2]!;
      const s0 = ror(a, 7) ^ ror(a, 18) ^ (a >>> 3);
      const s1 = ror(b, 17) ^ ror(b, 19) ^ (b >>> 10);
      w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h as [number, number, number, number, number, number, number, number];
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) >>> 0;
      const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, hh].forEach((v, i) => (h[i] = (h[i]! + v) >>> 0));
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((v, i) => outView.setUint32(i * 4, v));
  return out;
}

function ror(x: number, n: number): number {
  return (x >>> n) | (x << (32 - n));
}

export function hmacSha256(key: Uint8Array | string, message: Uint8Array | string): Uint8Array {
  let k = typeof key === 'string' ? utf8(key) : key;
  const m = typeof message === 'string' ? utf8(message) : message;
  if (k.length > 64) k = sha256(k);
  const inner = new Uint8Array(64 + m.length);
  const outer = new Uint8Array(64 + 32);
  for (let i = 0; i < 64; i++) {
    const byte = k[i] ?? 0;
    inner[i] = byte ^ 0x36;
    outer[i] = byte ^ 0x5c;
  }
  inner.set(m, 64);
  outer.set(sha256(inner), 64);
  return sha256(outer);
}

/** Equal contents, in time that depends on the lengths only. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

// ---- AES-256 (FIPS 197), encryption direction only: GCM needs no other -------------------------------------------
//
// Constant-time: no table is indexed by a secret and no branch depends on one. The S-box is computed, not looked
// up (a table lookup leaks its index through the cache): the inverse in GF(2^8) as x^254, then the affine map.
// Bytes are processed four at a time, one per 8-bit lane of a 32-bit word, with masks made from bits (never `if`).

const LANES = 0x01010101;

/** Doubles each of the four bytes of `x` in GF(2^8) (mod x^8 + x^4 + x^3 + x + 1): the mask comes from each top bit. */
function xtime4(x: number): number {
  return ((x & 0x7f7f7f7f) << 1) ^ Math.imul((x >>> 7) & LANES, 0x1b);
}

/** One byte doubled, branch-free. */
const xtime = (x: number) => ((x << 1) ^ (0x1b & (0 - (x >>> 7)))) & 0xff;

/** Lane-wise product in GF(2^8): each bit of `b` selects, through an all-ones or all-zeros mask, a doubling of `a`. */
function mul4(a: number, b: number): number {
  let product = 0;
  for (let i = 0; i < 8; i++) {
    product ^= a & Math.imul((b >>> i) & LANES, 0xff);
    a = xtime4(a);
  }
  return product;
}

// x^(2i) reduced, for i = 4..7: squaring is linear in GF(2^8), so it is a fixed sum of masked constants
const SQUARE_HIGH = [0x1b, 0x6c, 0xab, 0x9a];

/** Lane-wise square in GF(2^8). */
function square4(a: number): number {
  let out = 0;
  for (let i = 0; i < 4; i++) out ^= ((a >>> i) & LANES) << (2 * i);
  for (let i = 0; i < 4; i++) out ^= Math.imul((a >>> (i + 4)) & LANES, SQUARE_HIGH[i]!);
  return out;
}

/** Lane-wise rotation of each byte left by `n`. */
function rotl4(x: number, n: number): number {
  return ((x << n) & Math.imul((0xff << n) & 0xff, LANES)) | ((x >>> (8 - n)) & Math.imul(0xff >>> (8 - n), LANES));
}

/** The AES S-box of each byte of `x`: x^254 (the inverse, and 0 for 0) by square-and-multiply over the public
 * exponent 254 = 0b11111110, then the affine map. */
function subWord(x: number): number {
  let inverse = x;
  for (let bit = 6; bit >= 0; bit--) {
    inverse = square4(inverse);
    if ((254 >>> bit) & 1) inverse = mul4(inverse, x); // the exponent's bits, not the data's
  }
  return (inverse ^ rotl4(inverse, 1) ^ rotl4(inverse, 2) ^ rotl4(inverse, 3) ^ rotl4(inverse, 4) ^ 0x63636363) >>> 0;
}

/** The 15 round keys of AES-256, as 60 big-endian words. */
function expandKey(key: Uint8Array): Uint32Array {
  if (key.length !== 32) throw new RangeError('an AES-256 key is 32 bytes');
  const w = new Uint32Array(60);
  const view = new DataView(key.buffer, key.byteOffset, 32);
  for (let i = 0; i < 8; i++) w[i] = view.getUint32(i * 4);
  let rcon = 1;
  for (let i = 8; i < 60; i++) {
    let t = w[i - 1]!;
    if (i % 8 === 0) {
      t = subWord(((t << 8) | (t >>> 24)) >>> 0) ^ (rcon << 24);
      rcon = xtime(rcon);
    } else if (i % 8 === 4) {
      t = subWord(t);
    }
    w[i] = w[i - 8]! ^ t;
  }
  return w;
}

const rotl32 = (x: number, n: number) => (x << n) | (x >>> (32 - n));

/** One block. The state is four big-endian column words: row r of column c is byte r of word c. */
function encryptBlock(w: Uint32Array, input: Uint8Array): Uint8Array {
  const view = new DataView(input.buffer, input.byteOffset, 16);
  let s0 = view.getUint32(0) ^ w[0]!;
  let s1 = view.getUint32(4) ^ w[1]!;
  let s2 = view.getUint32(8) ^ w[2]!;
  let s3 = view.getUint32(12) ^ w[3]!;
  for (let round = 1; round <= 14; round++) {
    const [a, b, c, d] = [subWord(s0), subWord(s1), subWord(s2), subWord(s3)];
    // ShiftRows: row r of column c comes from column c + r
    let t0 = (a & 0xff000000) | (b & 0xff0000) | (c & 0xff00) | (d & 0xff);
    let t1 = (b & 0xff000000) | (c & 0xff0000) | (d & 0xff00) | (a & 0xff);
    let t2 = (c & 0xff000000) | (d & 0xff0000) | (a & 0xff00) | (b & 0xff);
    let t3 = (d & 0xff000000) | (a & 0xff0000) | (b & 0xff00) | (c & 0xff);
    if (round < 14) [t0, t1, t2, t3] = [mixColumn(t0), mixColumn(t1), mixColumn(t2), mixColumn(t3)];
    s0 = t0 ^ w[round * 4]!;
    s1 = t1 ^ w[round * 4 + 1]!;
    s2 = t2 ^ w[round * 4 + 2]!;
    s3 = t3 ^ w[round * 4 + 3]!;
  }
  const out = new Uint8Array(16);
  const outView = new DataView(out.buffer);
  [s0, s1, s2, s3].forEach((word, i) => outView.setUint32(i * 4, word >>> 0));
  return out;
}

/** MixColumns of one column word [a0 a1 a2 a3]: row r is 2·a_r ⊕ 3·a_(r+1) ⊕ a_(r+2) ⊕ a_(r+3). */
function mixColumn(a: number): number {
  const next = rotl32(a, 8); // [a1 a2 a3 a0]
  return xtime4(a ^ next) ^ next ^ rotl32(a, 16) ^ rotl32(a, 24);
}

// ---- GCM (SP 800-38D) with 96-bit nonces -------------------------------------------------------------------------
//
// Masks are `0 - bit`, not `-bit`: unary minus makes -0 of 0, a double, and the engine would take another path.
// Blocks are four big-endian 32-bit words. The GF(2^128) multiply walks the 128 bits of X with a mask made from
// each bit, and shifts V with a mask from its low bit: the same operations whatever the values (BigInt arithmetic,
// used here before, takes time that depends on them).

type Block = [number, number, number, number];

function words(bytes: Uint8Array): Block {
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  return [view.getUint32(0), view.getUint32(4), view.getUint32(8), view.getUint32(12)];
}

/** X·Y in GCM's GF(2^128) (bit-reflected, R = 0xe1 ‖ 0^120). */
function gmul(x: Block, y: Block): Block {
  let [z0, z1, z2, z3] = [0, 0, 0, 0];
  let [v0, v1, v2, v3] = y;
  for (let i = 0; i < 128; i++) {
    const take = 0 - ((x[i >>> 5]! >>> (31 - (i & 31))) & 1);
    z0 ^= v0 & take;
    z1 ^= v1 & take;
    z2 ^= v2 & take;
    z3 ^= v3 & take;
    const reduce = 0 - (v3 & 1);
    v3 = (v3 >>> 1) | (v2 << 31);
    v2 = (v2 >>> 1) | (v1 << 31);
    v1 = (v1 >>> 1) | (v0 << 31);
    v0 = (v0 >>> 1) ^ (0xe1000000 & reduce);
  }
  return [z0, z1, z2, z3];
}

function ghash(h: Block, aad: Uint8Array, ciphertext: Uint8Array): Block {
  let y: Block = [0, 0, 0, 0];
  const block = new Uint8Array(16);
  for (const data of [aad, ciphertext]) {
    for (let i = 0; i < data.length; i += 16) {
      block.fill(0);
      block.set(data.subarray(i, i + 16));
      const x = words(block);
      y = gmul([y[0] ^ x[0], y[1] ^ x[1], y[2] ^ x[2], y[3] ^ x[3]], h);
    }
  }
  // the bit lengths as two 64-bit big-endian numbers (public, like the lengths themselves)
  const [aadBits, ctBits] = [aad.length * 8, ciphertext.length * 8];
  const lengths: Block = [Math.floor(aadBits / 2 ** 32), aadBits >>> 0, Math.floor(ctBits / 2 ** 32), ctBits >>> 0];
  return gmul([y[0] ^ lengths[0], y[1] ^ lengths[1], y[2] ^ lengths[2], y[3] ^ lengths[3]], h);
}

function ctr(w: Uint32Array, nonce: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  const counter = new Uint8Array(16);
  counter.set(nonce);
  for (let i = 0, n = 2; i < data.length; i += 16, n++) {
    new DataView(counter.buffer).setUint32(12, n);
    const stream = encryptBlock(w, counter);
    for (let j = i; j < Math.min(i + 16, data.length); j++) out[j] = data[j]! ^ stream[j - i]!;
  }
  return out;
}

function tag(w: Uint32Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  const h = words(encryptBlock(w, new Uint8Array(16)));
  const j0 = new Uint8Array(16);
  j0.set(nonce);
  j0[15] = 1;
  const s = ghash(h, aad, ciphertext);
  const e = words(encryptBlock(w, j0));
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) view.setUint32(i * 4, (s[i]! ^ e[i]!) >>> 0);
  return out;
}

/** AES-256-GCM: ciphertext followed by the 16-byte tag. */
export function aesGcmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array = new Uint8Array(),
): Uint8Array {
  if (nonce.length !== 12) throw new RangeError('a GCM nonce is 12 bytes');
  const w = expandKey(key);
  const ciphertext = ctr(w, nonce, plaintext);
  const out = new Uint8Array(ciphertext.length + 16);
  out.set(ciphertext);
  out.set(tag(w, nonce, aad, ciphertext), ciphertext.length);
  return out;
}

/** The plaintext, or `null` when the tag does not authenticate the ciphertext. */
export function aesGcmOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array = new Uint8Array()) {
  if (nonce.length !== 12 || sealed.length < 16) return null;
  const w = expandKey(key);
  const ciphertext = sealed.subarray(0, sealed.length - 16);
  if (!constantTimeEqual(tag(w, nonce, aad, ciphertext), sealed.subarray(sealed.length - 16))) return null;
  return ctr(w, nonce, ciphertext);
}

// ---- encodings and randomness ------------------------------------------------------------------------------------

export function hex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += (b + 256).toString(16).slice(1);
  return out;
}

export function fromHex(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** Randomness from the runtime's WebCrypto (on Node.js 18, which has it only as a module, the package's Node.js
 * entry puts it in place). */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const webcrypto = (globalThis as { crypto?: Crypto }).crypto;
  if (!webcrypto?.getRandomValues) {
    throw new Error(
      'no WebCrypto in this runtime (on Node.js, import the package by its name: its Node.js entry provides it)',
    );
  }
  return webcrypto.getRandomValues(new Uint8Array(n));
}

/** A UUIDv7: the millisecond clock, then randomness (what the platform mints; sortable by time). */
export function uuidv7(nowMs = Date.now()): string {
  const b = randomBytes(16);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(nowMs / 2 ** (8 * (5 - i))) & 0xff;
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = hex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
