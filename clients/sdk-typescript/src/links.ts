// Links in the formats of `core/tracker-protocol/src/lib.rs`, replayed from `tests/vectors/links.json` by the tests.
//
// v2 (what new links use): the signature covers the link kind, the tenant, the key id, the destination (or short
// link id), the expiry, the names that may be appended unsigned (`ext`), and every param. Encrypted v2 links hide
// all of that in one AES-256-GCM blob bound to the tenant and key id.

import { aesGcmSeal, base64url, fromHex, hex, hmacSha256, randomBytes, utf8 } from './crypto.js';
import { checkClickDestination, checkNewDestination } from './destinations.js';
import { TrackerError } from './errors.js';

export type LinkKind = 'click' | 'short' | 'postback' | 'impression';

/** Params in the order they appear in the link: an object, or pairs. */
export type Params = Record<string, string | number | boolean> | ReadonlyArray<readonly [string, string]>;

/** A tenant's link key: its key prefix, the key id, and the signing secret or encryption key (64 hex digits). */
export interface LinkKey {
  keyPrefix: string;
  kid: string;
  secret?: string;
  encryptionKey?: string;
}

export interface LinkOptions {
  params?: Params;
  /** When the link stops redirecting: a `Date` or unix seconds. */
  expiresAt?: Date | number;
  /** Param names an ad network may append later without a signature (`gclid`, `fbclid`). */
  ext?: readonly string[];
}

export const RESERVED_PARAMS: readonly string[] = ['v', 'k', 's', 'e', 'd', 'url', 'sig', 'exp', 'ext'];
const NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const KEY_PREFIX = /^[a-z0-9]{2,32}$/;
const KID = /^[a-z0-9]{1,16}$/;
const SHORT_ID = /^tu_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function pairs(params: Params | undefined): [string, string][] {
  if (!params) return [];
  const list: [string, string][] = Array.isArray(params)
    ? (params as ReadonlyArray<readonly [string, string]>).map(([k, v]) => [k, String(v)])
    : Object.entries(params).map(([k, v]) => [k, String(v)]);
  return list;
}

function checkParams(list: [string, string][]): void {
  const seen = new Set<string>();
  for (const [name] of list) {
    if (RESERVED_PARAMS.includes(name)) throw new TrackerError('reserved_param', `param "${name}" is reserved`);
    if (seen.has(name)) throw new TrackerError('duplicate_param', `param "${name}" is repeated`);
    seen.add(name);
  }
}

/** `<base><path>?<pairs>`, form-encoded as the platform encodes (spaces as `+`). */
export function urlWith(base: string, path: string, list: ReadonlyArray<readonly [string, string]>): string {
  return `${base.replace(/\/+$/, '')}${path}?${new URLSearchParams(list as [string, string][]).toString()}`;
}

function byteCompare(a: string, b: string): number {
  const [x, y] = [utf8(a), utf8(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

function netstring(field: string): string {
  return `${utf8(field).length}:${field},`;
}

/** The exact text a v2 signature covers: `TRK2`, then netstrings of kind, tenant, kid, target, exp, ext, the
 * number of params and each param's name and value, sorted by their UTF-8 bytes. */
export function v2Message(
  kind: LinkKind,
  keyPrefix: string,
  kid: string,
  target: string,
  exp: string | undefined,
  ext: string | undefined,
  params: ReadonlyArray<readonly [string, string]>,
): string {
  const sorted = [...params].sort((a, b) => byteCompare(a[0], b[0]) || byteCompare(a[1], b[1]));
  let out = 'TRK2' + [kind, keyPrefix, kid, target, exp ?? '', ext ?? '', String(sorted.length)].map(netstring).join('');
  for (const [k, v] of sorted) out += netstring(k) + netstring(v);
  return out;
}

interface Checked {
  list: [string, string][];
  exp?: string;
  ext?: string;
}

function check(kind: LinkKind, key: LinkKey, target: string, options: LinkOptions): Checked {
  const list = pairs(options.params);
  checkParams(list);
  if (!KEY_PREFIX.test(key.keyPrefix)) throw new TrackerError('invalid_key_prefix', 'a key prefix is [a-z0-9]{2,32}');
  if (!KID.test(key.kid)) throw new TrackerError('malformed_signature', 'a key id is [a-z0-9]{1,16}');
  if (kind === 'click') checkNewDestination(target);
  if (kind === 'short' && !SHORT_ID.test(target)) {
    throw new TrackerError('invalid_short_link_id', 'a short link id is tu_ followed by a UUID');
  }
  const out: Checked = { list };
  if (options.expiresAt !== undefined) {
    const secs =
      options.expiresAt instanceof Date ? Math.floor(options.expiresAt.getTime() / 1000) : options.expiresAt;
    if (!Number.isSafeInteger(secs) || secs <= 0 || secs >= 1e12) {
      throw new TrackerError('invalid_expiry', 'expiresAt is a positive number of unix seconds');
    }
    out.exp = String(secs);
  }
  if (options.ext && options.ext.length > 0) {
    for (const name of options.ext) {
      if (!NAME.test(name) || RESERVED_PARAMS.includes(name)) {
        throw new TrackerError('reserved_param', `"${name}" cannot be an ext param`);
      }
      if (list.some(([k]) => k === name)) {
        throw new TrackerError('reserved_param', `"${name}" is both signed and in ext`);
      }
    }
    out.ext = options.ext.join(',');
  }
  return out;
}

function pathFor(kind: LinkKind, target: string): string {
  return { click: '/t', short: `/t/${target}`, postback: '/p', impression: '/i' }[kind];
}

/**
 * A v2 signed link: `<base><path>?v=2&k=<prefix>.<kid>[&url=<destination>][&exp=][&ext=]&<params>&s=<signature>`.
 * `target` is the destination of a click, the `tu_` id of a short link, and empty for postbacks and pixels.
 */
export function signedLink(base: string, key: LinkKey, kind: LinkKind, target: string, options: LinkOptions = {}) {
  const { list, exp, ext } = check(kind, key, target, options);
  if (!key.secret) throw new TrackerError('malformed_signature', 'the key has no signing secret');
  const message = v2Message(kind, key.keyPrefix, key.kid, target, exp, ext, list);
  const signature = base64url(hmacSha256(key.secret, message));
  const all: [string, string][] = [['v', '2'], ['k', `${key.keyPrefix}.${key.kid}`]];
  if (kind === 'click') all.push(['url', target]);
  if (exp) all.push(['exp', exp]);
  if (ext) all.push(['ext', ext]);
  return urlWith(base, pathFor(kind, target), [...all, ...list, ['s', signature]]);
}

/** A v2 signed click to `destination`. */
export function clickUrl(base: string, key: LinkKey, destination: string, options: LinkOptions = {}): string {
  return signedLink(base, key, 'click', destination, options);
}

/** A v2 signed short link (`/t/<tu_id>`; the destination is stored by the platform). */
export function shortLinkUrl(base: string, key: LinkKey, tuId: string, options: LinkOptions = {}): string {
  return signedLink(base, key, 'short', tuId, options);
}

/** A v2 signed postback URL (`/p`): its params, `event_type` among them, cannot be changed on the way. */
export function postbackUrl(base: string, key: LinkKey, params: Params, options: Omit<LinkOptions, 'params'> = {}) {
  return signedLink(base, key, 'postback', '', { ...options, params });
}

/** A v2 signed impression pixel URL (`/i`), for `<img src>`. */
export function pixelUrl(base: string, key: LinkKey, params: Params, options: Omit<LinkOptions, 'params'> = {}) {
  return signedLink(base, key, 'impression', '', { ...options, params });
}

/**
 * A v2 encrypted click: `<base>/t?v=2&k=<prefix>.<kid>&e=<blob>`, the destination, expiry and params sealed with
 * the tenant's encryption key. `nonce` is for tests only: a fresh random one is the default and must stay so.
 */
export function encryptedClickUrl(
  base: string,
  key: LinkKey,
  destination: string,
  options: LinkOptions = {},
  nonce: Uint8Array = randomBytes(12),
): string {
  const { list, exp, ext } = check('click', key, destination, options);
  const aesKey = key.encryptionKey ? fromHex(key.encryptionKey) : null;
  if (!aesKey || aesKey.length !== 32) {
    throw new TrackerError('malformed_ciphertext', 'the key has no encryption key (64 hex digits)');
  }
  const plain: [string, string][] = [['url', destination]];
  if (exp) plain.push(['exp', exp]);
  if (ext) plain.push(['ext', ext]);
  const text = new URLSearchParams([...plain, ...list]).toString();
  const aad = utf8('TRK2E' + ['click', key.keyPrefix, key.kid].map(netstring).join(''));
  const sealed = aesGcmSeal(aesKey, nonce, utf8(text), aad);
  const blob = new Uint8Array(12 + sealed.length);
  blob.set(nonce);
  blob.set(sealed, 12);
  return urlWith(base, '/t', [['v', '2'], ['k', `${key.keyPrefix}.${key.kid}`], ['e', base64url(blob)]]);
}

/** An unsigned postback (`/p`) for a tenant that takes open postbacks, or with an ingest token (`token`). */
export function openPostbackUrl(base: string, params: Params): string {
  return urlWith(base, '/p', pairs(params));
}

// ---- v1: the formats of the replaced system, for links it already has in circulation --------------------------

/** `[<prefix>_]<hex HMAC-SHA256(secret, message)>`. */
export function v1Signature(secret: string, keyPrefix: string | undefined, message: string): string {
  if (!secret) throw new TrackerError('malformed_signature', 'the secret is empty');
  const signature = hex(hmacSha256(secret, message));
  return keyPrefix ? `${keyPrefix}_${signature}` : signature;
}

/** A v1 signed click: `<base>/t?url=<destination>&sig=[<prefix>_]<hex>&<params>` (only the destination is signed). */
export function v1SignedUrl(base: string, secret: string, keyPrefix: string | undefined, destination: string, params?: Params) {
  const list = pairs(params);
  checkParams(list);
  checkClickDestination(destination);
  return urlWith(base, '/t', [['url', destination], ['sig', v1Signature(secret, keyPrefix, destination)], ...list]);
}

/** A v1 short link: `<base>/t/<tu_id>?sig=[<prefix>_]<hex HMAC(secret, tu_id)>&<params>`. */
export function v1ShortUrl(base: string, secret: string, keyPrefix: string | undefined, tuId: string, params?: Params) {
  const list = pairs(params);
  checkParams(list);
  if (!SHORT_ID.test(tuId)) throw new TrackerError('invalid_short_link_id', 'a short link id is tu_ followed by a UUID');
  return urlWith(base, `/t/${tuId}`, [['sig', v1Signature(secret, keyPrefix, tuId)], ...list]);
}

/** A v1 encrypted click: `<base>/t?d=<base64url(nonce ‖ AES-256-GCM(destination) ‖ tag)>&<params>`. */
export function v1EncryptedUrl(
  base: string,
  encryptionKey: string,
  destination: string,
  params?: Params,
  nonce: Uint8Array = randomBytes(12),
): string {
  const list = pairs(params);
  checkParams(list);
  checkClickDestination(destination);
  return urlWith(base, '/t', [['d', v1Seal(encryptionKey, destination, nonce)], ...list]);
}

export function v1Seal(encryptionKey: string, text: string, nonce: Uint8Array = randomBytes(12)): string {
  const key = fromHex(encryptionKey);
  if (!key || key.length !== 32) throw new TrackerError('malformed_ciphertext', 'the key is 64 hex digits');
  const sealed = aesGcmSeal(key, nonce, utf8(text));
  const blob = new Uint8Array(12 + sealed.length);
  blob.set(nonce);
  blob.set(sealed, 12);
  return base64url(blob);
}
