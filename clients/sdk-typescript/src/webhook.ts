// Webhook deliveries are signed `Tracker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t "." body)>`,
// with several `v1=` entries while a secret rotates. Verify the raw body bytes, before parsing them.

import { constantTimeEqual, fromHex, hmacSha256, utf8 } from './crypto.js';
import { TrackerError } from './errors.js';

export const SIGNATURE_HEADER = 'tracker-signature';
export const DELIVERY_ID_HEADER = 'tracker-delivery-id';
export const EVENT_HEADER = 'tracker-event';

export interface VerifyOptions {
  /** Oldest and newest accepted timestamp, in seconds from now (default 300): a captured delivery expires. */
  toleranceSeconds?: number;
  /** Now, in unix seconds (tests). */
  now?: number;
}

/**
 * Checks a delivery's `Tracker-Signature` header against its raw body. Throws a `TrackerError` whose code says why
 * (`malformed_signature`, `stale_signature`, `invalid_signature`); returns the signed timestamp otherwise.
 */
export function verifyWebhook(
  secret: string,
  header: string | null | undefined,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): number {
  let timestamp: number | undefined;
  const signatures: Uint8Array[] = [];
  for (const part of (header ?? '').split(',')) {
    const [name, value] = part.trim().split('=', 2) as [string, string | undefined];
    if (name === 't' && value !== undefined && /^-?\d{1,15}$/.test(value)) timestamp = Number(value);
    else if (name === 't') throw new TrackerError('malformed_signature', 'the timestamp is not a number');
    if (name === 'v1') {
      const bytes = fromHex(value ?? '');
      if (!bytes) throw new TrackerError('malformed_signature', 'a v1 signature is not hex');
      signatures.push(bytes);
    }
  }
  if (timestamp === undefined || signatures.length === 0) {
    throw new TrackerError('malformed_signature', 'the header needs t= and at least one v1=');
  }
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (options.toleranceSeconds ?? 300)) {
    throw new TrackerError('stale_signature', 'the timestamp is outside the tolerance');
  }
  const bytes = typeof body === 'string' ? utf8(body) : body;
  const message = new Uint8Array(String(timestamp).length + 1 + bytes.length);
  message.set(utf8(`${timestamp}.`));
  message.set(bytes, String(timestamp).length + 1);
  const expected = hmacSha256(secret, message);
  // every entry is compared, so the time taken does not say which one matched
  let matched = false;
  for (const signature of signatures) matched = constantTimeEqual(expected, signature) || matched;
  if (!matched) throw new TrackerError('invalid_signature', 'no signature matches');
  return timestamp;
}

/** The header value for `body` signed at `timestamp` (tests of your own receiver). */
export function signWebhook(secret: string, timestamp: number, body: string | Uint8Array): string {
  const bytes = typeof body === 'string' ? utf8(body) : body;
  const prefix = utf8(`${timestamp}.`);
  const message = new Uint8Array(prefix.length + bytes.length);
  message.set(prefix);
  message.set(bytes, prefix.length);
  let hexSig = '';
  for (const b of hmacSha256(secret, message)) hexSig += (b + 256).toString(16).slice(1);
  return `t=${timestamp},v1=${hexSig}`;
}
