// Which destinations a link may have, as the platform judges them (`core/tracker-protocol/src/redirect.rs`, replayed
// from `tests/vectors/links.json` by the tests): a link that could never be followed is refused when it is built.

import { utf8 } from './crypto.js';
import { TrackerError } from './errors.js';

/** Longest destination of a new link, and of one a click is redirected to (in UTF-8 bytes). */
export const MAX_DESTINATION_BYTES = 4096;
export const MAX_REDIRECT_BYTES = 16 * 1024;

/** Schemes a click never goes to: they would run code or read local data. */
const BLOCKED_SCHEMES = ['javascript', 'vbscript', 'data', 'file', 'blob', 'about', 'filesystem', 'view-source'];

const schemeRefused = () =>
  new TrackerError('destination_scheme_not_allowed', 'destination must be an absolute http or https URL');
const invalid = (reason: string) => new TrackerError('invalid_destination', `destination is not a valid URL: ${reason}`);

/** An authority's host (`v6` for an IPv6 literal) and port, as a browser splits them. */
function splitAuthority(authority: string): [string, string | undefined] {
  let host: string;
  let port: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) throw invalid('unclosed IPv6 literal');
    const addr = authority.slice(1, close);
    if (!addr || !/^[0-9A-Fa-f:.]+$/.test(addr)) throw invalid('bad IPv6 literal');
    const after = authority.slice(close + 1);
    host = 'v6';
    if (after) {
      if (!after.startsWith(':')) throw invalid('junk after IPv6 literal');
      port = after.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(':');
    [host, port] = colon < 0 ? [authority, undefined] : [authority.slice(0, colon), authority.slice(colon + 1)];
  }
  if (!host) throw invalid('missing host');
  return [host, port];
}

const portOk = (p: string) => /^[0-9]{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535;

/**
 * Throws unless `destination` is what the platform takes for a new link: an absolute http(s) URL a browser follows
 * to the host it shows (no credentials, whitespace, control characters or backslashes; an ASCII host; a valid port).
 */
export function checkNewDestination(destination: string): void {
  if (utf8(destination).length > MAX_DESTINATION_BYTES) {
    throw new TrackerError('destination_too_long', `destination is longer than ${MAX_DESTINATION_BYTES} bytes`);
  }
  const sep = destination.indexOf('://');
  if (sep < 0) throw schemeRefused();
  const scheme = destination.slice(0, sep).toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') throw schemeRefused();
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f\\]/.test(destination)) throw invalid('contains whitespace, control characters or a backslash');
  const rest = destination.slice(sep + 3);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  if (authority.includes('@')) throw invalid('credentials (user@) are not allowed in destinations');
  const [host, port] = splitAuthority(authority);
  if (!/^[A-Za-z0-9._-]+$/.test(host) || host.startsWith('.')) {
    throw invalid('host must be ASCII (use punycode for international names)');
  }
  if (port !== undefined && !portOk(port)) throw invalid('port must be 1 to 65535');
}

/**
 * Throws if a click on a link to `destination` would be refused: the rule for links in the replaced system's (v1)
 * formats, which are redirected wherever a browser would go (an app's own scheme too), except script, data and local
 * schemes, relative references, and hosts or ports no browser can reach.
 */
export function checkClickDestination(destination: string): void {
  const cleaned = destination.replace(/[\t\n\r]/g, '');
  // eslint-disable-next-line no-control-regex
  const dest = cleaned.replace(/^[\x00-\x20]+|[\x00-\x20]+$/g, '');
  if (utf8(dest).length > MAX_REDIRECT_BYTES) {
    throw new TrackerError('destination_too_long', `destination is longer than ${MAX_REDIRECT_BYTES} bytes`);
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(dest);
  let scheme: string;
  let rest: string;
  if (m) {
    scheme = m[1]!.toLowerCase();
    rest = dest.slice(m[0].length);
  } else if (dest.startsWith('//')) {
    [scheme, rest] = ['https', dest];
  } else {
    throw schemeRefused();
  }
  if (BLOCKED_SCHEMES.includes(scheme)) throw schemeRefused();
  if (scheme !== 'http' && scheme !== 'https') return;
  const after = rest.replace(/^[/\\]+/, '');
  const end = after.search(/[/\\?#]/);
  const authority = end < 0 ? after : after.slice(0, end);
  const at = authority.lastIndexOf('@');
  const [host, port] = splitAuthority(at < 0 ? authority : authority.slice(at + 1));
  // letters, digits, `-`, `.`, `_`, or international characters (a browser turns them into punycode)
  if (![...host].every((c) => /[A-Za-z0-9._-]/.test(c) || c.charCodeAt(0) > 0x7f) || host.startsWith('.')) {
    throw invalid('the host has characters no host name can hold');
  }
  // an empty port is the default one, as browsers read it
  if (port !== undefined && port !== '' && !portOk(port)) throw invalid('port must be 1 to 65535');
}
