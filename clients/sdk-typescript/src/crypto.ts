// SHA-256, HMAC-SHA256 and AES-256-GCM in plain TypeScript, so every link builder is synchronous and runs the same
// on Node.js, Workers, Deno, Bun and browsers with no dependency. Randomness (nonces, ids) comes from WebCrypto.
// Links are short: speed is not the point here; the tests check every function against WebCrypto.

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

const SBOX = (() => {
  const box = new Uint8Array(256);
  const rotl = (x: number, n: number) => ((x << n) | (x >> (8 - n))) & 0xff;
  let p = 1;
  let q = 1;
  do {
    p = (p ^ (p << 1) ^ (p & 0x80 ? 0x1b : 0)) & 0xff; // p * 3
    q ^= q << 1; // q / 3
    q ^= q << 2;
    q ^= q << 4;
    q &= 0xff;
    if (q & 0x80) q ^= 0x09;
    box[p] = q ^ rotl(q, 1) ^ rotl(q, 2) ^ rotl(q, 3) ^ rotl(q, 4) ^ 0x63;
  } while (p !== 1);
  box[0] = 0x63;
  return box;
})();

const xtime = (x: number) => ((x << 1) ^ (x & 0x80 ? 0x1b : 0)) & 0xff;

/** The 15 round keys of AES-256, as 60 big-endian words. */
function expandKey(key: Uint8Array): Uint32Array {
  if (key.length !== 32) throw new RangeError('an AES-256 key is 32 bytes');
  const w = new Uint32Array(60);
  const view = new DataView(key.buffer, key.byteOffset, 32);
  for (let i = 0; i < 8; i++) w[i] = view.getUint32(i * 4);
  const sub = (x: number) =>
    ((SBOX[x >>> 24]! << 24) | (SBOX[(x >>> 16) & 0xff]! << 16) | (SBOX[(x >>> 8) & 0xff]! << 8) | SBOX[x & 0xff]!) >>>
    0;
  let rcon = 1;
  for (let i = 8; i < 60; i++) {
    let t = w[i - 1]!;
    if (i % 8 === 0) {
      t = (sub(((t << 8) | (t >>> 24)) >>> 0) ^ (rcon << 24)) >>> 0;
      rcon = xtime(rcon);
    } else if (i % 8 === 4) {
      t = sub(t);
    }
    w[i] = (w[i - 8]! ^ t) >>> 0;
  }
  return w;
}

function encryptBlock(w: Uint32Array, input: Uint8Array): Uint8Array {
  const s = input.slice(0, 16);
  const addRoundKey = (round: number) => {
    for (let c = 0; c < 4; c++) {
      const word = w[round * 4 + c]!;
      for (let r = 0; r < 4; r++) s[c * 4 + r]! ^= (word >>> (24 - 8 * r)) & 0xff;
    }
  };
  addRoundKey(0);
  for (let round = 1; round <= 14; round++) {
    const t = new Uint8Array(16);
    // SubBytes and ShiftRows: row r of column c comes from column c + r
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) t[c * 4 + r] = SBOX[s[((c + r) % 4) * 4 + r]!]!;
    if (round < 14) {
      for (let c = 0; c < 4; c++) {
        const [a0, a1, a2, a3] = [t[c * 4]!, t[c * 4 + 1]!, t[c * 4 + 2]!, t[c * 4 + 3]!];
        s[c * 4] = xtime(a0) ^ xtime(a1) ^ a1 ^ a2 ^ a3;
        s[c * 4 + 1] = a0 ^ xtime(a1) ^ xtime(a2) ^ a2 ^ a3;
        s[c * 4 + 2] = a0 ^ a1 ^ xtime(a2) ^ xtime(a3) ^ a3;
        s[c * 4 + 3] = xtime(a0) ^ a0 ^ a1 ^ a2 ^ xtime(a3);
      }
    } else {
      s.set(t);
    }
    addRoundKey(round);
  }
  return s;
}

// ---- GCM (SP 800-38D) with 96-bit nonces -------------------------------------------------------------------------

const R = 0xe1n << 120n;

function toBig(block: Uint8Array): bigint {
  let x = 0n;
  for (const byte of block) x = (x << 8n) | BigInt(byte);
  return x;
}

function fromBig(x: bigint): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

function gmul(x: bigint, y: bigint): bigint {
  let z = 0n;
  let v = y;
  for (let i = 127n; i >= 0n; i--) {
    if ((x >> i) & 1n) z ^= v;
    v = v & 1n ? (v >> 1n) ^ R : v >> 1n;
  }
  return z;
}

function ghash(h: bigint, aad: Uint8Array, ciphertext: Uint8Array): bigint {
  let y = 0n;
  for (const data of [aad, ciphertext]) {
    for (let i = 0; i < data.length; i += 16) {
      const block = new Uint8Array(16);
      block.set(data.subarray(i, i + 16));
      y = gmul(y ^ toBig(block), h);
    }
  }
  const lengths = (BigInt(aad.length * 8) << 64n) | BigInt(ciphertext.length * 8);
  return gmul(y ^ lengths, h);
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
  const h = toBig(encryptBlock(w, new Uint8Array(16)));
  const j0 = new Uint8Array(16);
  j0.set(nonce);
  j0[15] = 1;
  return fromBig(ghash(h, aad, ciphertext) ^ toBig(encryptBlock(w, j0)));
}

/** AES-256-GCM: ciphertext followed by the 16-byte tag. */
export function aesGcmSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array = new Uint8Array()) {
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
    throw new Error('no WebCrypto in this runtime (on Node.js, import the package by its name: its Node.js entry provides it)');
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
