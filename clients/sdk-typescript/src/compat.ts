// The replaced system's SDK (`@inventhq/tracker-sdk`), by its names and options, so its users swap the package
// without rewriting code. Everything here is deprecated in favour of v2 links (`clickUrl`, `encryptedClickUrl`,
// `shortLinkUrl`, `postbackUrl`), whose signatures also cover the params and can expire, and of `TrackerClient`.
//
// Differences, all on the safe side: a param named `url`, `sig` or `d` is refused instead of silently replacing the
// signed field; `TrackerClient` retries with backoff, keeps a bounded queue and sends an `Idempotency-Key`.
// Configure it with the base URL `https://<host>/v1/<ingest token>`: that system's batches carried no credential.

import { aesGcmOpen, constantTimeEqual, fromBase64url, fromHex, hex, hmacSha256 } from './crypto.js';
import { TrackerError } from './errors.js';
import { openPostbackUrl, urlWith, v1Seal, v1Signature } from './links.js';

type Params = Record<string, string>;

function v1Pairs(fixed: [string, string][], params: Params = {}): [string, string][] {
  for (const name of Object.keys(params)) {
    if (fixed.some(([k]) => k === name)) throw new TrackerError('reserved_param', `param "${name}" is reserved`);
  }
  return [...fixed, ...Object.entries(params)];
}

/** @deprecated use `clickUrl` (v2). `sig` is prefixed with `params.key_prefix` when there is one. */
export function buildSignedClickUrl(baseUrl: string, secret: string, destinationUrl: string, params?: Params): string {
  const sig = v1Signature(secret, params?.key_prefix || undefined, destinationUrl);
  return urlWith(baseUrl, '/t', v1Pairs([['url', destinationUrl], ['sig', sig]], params));
}

/** @deprecated use `encryptedClickUrl` (v2). `keyHex` is 64 hex digits. */
export function buildEncryptedClickUrl(baseUrl: string, keyHex: string, destinationUrl: string, params?: Params) {
  return urlWith(baseUrl, '/t', v1Pairs([['d', v1Seal(keyHex, destinationUrl)]], params));
}

/** @deprecated use `shortLinkUrl` (v2). Signs the short link id. */
export function buildTrackedClickUrl(baseUrl: string, secret: string, tuId: string, params?: Params): string {
  const sig = v1Signature(secret, params?.key_prefix || undefined, tuId);
  return urlWith(baseUrl, `/t/${tuId}`, v1Pairs([['sig', sig]], params));
}

/** @deprecated use `postbackUrl` (v2, signed). */
export function buildPostbackUrl(baseUrl: string, params: Params): string {
  return openPostbackUrl(baseUrl, params);
}

/** @deprecated use `pixelUrl` (v2, signed). */
export function buildImpressionUrl(baseUrl: string, params: Params): string {
  return urlWith(baseUrl, '/i', Object.entries(params));
}

/** @deprecated Lowercase hex HMAC-SHA256 of `url`. */
export function signHmac(secret: string, url: string): string {
  return hex(hmacSha256(secret, url));
}

/** @deprecated Constant-time check of a `signHmac` value. */
export function verifyHmac(secret: string, url: string, signature: string): boolean {
  const given = fromHex(signature);
  return given !== null && constantTimeEqual(hmacSha256(secret, url), given);
}

/** @deprecated AES-256-GCM, `base64url(nonce ‖ ciphertext ‖ tag)`. */
export function encryptUrl(keyHex: string, url: string): string {
  return v1Seal(keyHex, url);
}

/** @deprecated The inverse of `encryptUrl`; throws when the blob is not authentic. */
export function decryptUrl(keyHex: string, encoded: string): string {
  const key = fromHex(keyHex);
  if (!key || key.length !== 32) throw new TrackerError('malformed_ciphertext', 'the key is 64 hex digits');
  const blob = fromBase64url(encoded);
  const plain = blob && blob.length >= 28 ? aesGcmOpen(key, blob.subarray(0, 12), blob.subarray(12)) : null;
  if (!plain) throw new TrackerError('decryption_failed', 'not a valid encrypted URL for this key');
  return new TextDecoder().decode(plain);
}

/** The replaced SDK's event shape. */
export interface TrackingEvent {
  event_id: string;
  event_type: string;
  timestamp: number;
  ip: string;
  user_agent: string;
  referer: string | null;
  accept_language: string | null;
  request_path: string;
  request_host: string;
  params: Record<string, string>;
}

export type TrackInput = Omit<TrackingEvent, 'event_id' | 'timestamp'> & Partial<Pick<TrackingEvent, 'event_id' | 'timestamp'>>;

/** @deprecated The replaced SDK's `TrackerClient` options, still taken by `TrackerClient`. */
export interface TrackerConfig {
  /** `https://<host>/v1/<ingest token>`. */
  apiUrl: string;
  /** Accepted for compatibility; the client never used it. */
  mode?: 'signed' | 'encrypted';
  hmacSecret?: string;
  encryptionKey?: string;
  batchSize?: number;
  flushInterval?: number;
  onError?: (error: Error, events: TrackingEvent[]) => void;
}
