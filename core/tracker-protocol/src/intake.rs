//! Authentication of the service traffic between the edge and the core fleet (and of the core's calls to the query
//! functions): batches, lookups, forwarded API calls, purges, replays and queries.
//!
//! `X-Tracker-Signature: v2=<hex HMAC-SHA256(key, "v2\n" || purpose || "\n" || timestamp_ms || "\n" || subject ||
//! "\n" || body)>` with `X-Tracker-Timestamp` (and `X-Tracker-Batch-Id` for batches, whose id is the subject). Each
//! purpose (`batch`, `lookup`, `api`, `purge`, `dlq-replay`, `query`) signs with a key of its own,
//! `HMAC-SHA256(shared secret, "tracker/v2/" || purpose)`, and names itself in what it signs: a signature made for one
//! purpose is worth nothing for another, in either direction. The core refuses timestamps outside a replay window and
//! answers a repeated batch id with the first answer (idempotency), so a signed request can neither be replayed
//! later nor double-count when the queue retries it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-tracker-signature";
pub const TIMESTAMP_HEADER: &str = "x-tracker-timestamp";
pub const BATCH_ID_HEADER: &str = "x-tracker-batch-id";

/// What a signature is for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Batch,
    Lookup,
    Api,
    Purge,
    Replay,
    Query,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Batch => "batch",
            Purpose::Lookup => "lookup",
            Purpose::Api => "api",
            Purpose::Purge => "purge",
            Purpose::Replay => "dlq-replay",
            Purpose::Query => "query",
        }
    }
}

fn mac(secret: &[u8], purpose: Purpose, timestamp_ms: i64, subject: &str, body: &[u8]) -> Option<HmacSha256> {
    if secret.is_empty() {
        return None;
    }
    let mut derive = HmacSha256::new_from_slice(secret).ok()?;
    derive.update(b"tracker/v2/");
    derive.update(purpose.tag().as_bytes());
    let mut m = HmacSha256::new_from_slice(&derive.finalize().into_bytes()).ok()?;
    m.update(format!("v2\n{}\n{timestamp_ms}\n{subject}\n", purpose.tag()).as_bytes());
    m.update(body);
    Some(m)
}

fn sign(secret: &[u8], purpose: Purpose, timestamp_ms: i64, subject: &str, body: &[u8]) -> Option<String> {
    Some(format!("v2={}", hex::encode(mac(secret, purpose, timestamp_ms, subject, body)?.finalize().into_bytes())))
}

/// Whether `header` is a valid signature for `purpose` under any of `secrets` (several during a rotation), in
/// constant time in the signature bytes.
fn verify(secrets: &[Vec<u8>], purpose: Purpose, header: &str, timestamp_ms: i64, subject: &str, body: &[u8]) -> bool {
    let Some(sig) = header.strip_prefix("v2=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    secrets.iter().filter_map(|s| mac(s, purpose, timestamp_ms, subject, body)).any(|m| m.verify_slice(&sig).is_ok())
}

/// The header value for a batch.
pub fn sign_batch(secret: &[u8], timestamp_ms: i64, batch_id: &str, body: &[u8]) -> Option<String> {
    sign(secret, Purpose::Batch, timestamp_ms, batch_id, body)
}

/// Whether `header` is a valid batch signature under any of `secrets` (several during a secret rotation).
pub fn verify_batch(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, batch_id: &str, body: &[u8]) -> bool {
    verify(secrets, Purpose::Batch, header, timestamp_ms, batch_id, body)
}

/// Signature of a service lookup by the edge (`GET /internal/v1/...`): purpose `lookup` over the request path and
/// an empty body, with `X-Tracker-Timestamp` and `X-Tracker-Signature`.
pub fn sign_lookup(secret: &[u8], timestamp_ms: i64, path: &str) -> Option<String> {
    sign(secret, Purpose::Lookup, timestamp_ms, path, b"")
}

pub fn verify_lookup(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, path: &str) -> bool {
    verify(secrets, Purpose::Lookup, header, timestamp_ms, path, b"")
}

/// Whether `url` is fit to carry service traffic (signed batches, lookups, purges, forwarded API calls): `https://`,
/// or `http://` to this machine only (`localhost`, `127.0.0.0/8`, `[::1]`), where no network can read or change it.
pub fn is_service_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return true;
    }
    let Some(rest) = lower.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Path of the Worker's purge endpoint: the core tells the edge which hot-path records (`tenant:<p>`, `short:<id>`,
/// `token:<sha256>`, comma-separated in the body) changed without a request through the edge (a tenant reaching its
/// hard cap). Signed for the purpose `purge` over the body.
pub const PURGE_PATH: &str = "/internal/v1/purge";

pub fn sign_purge(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> Option<String> {
    sign(secret, Purpose::Purge, timestamp_ms, "", body)
}

pub fn verify_purge(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, body: &[u8]) -> bool {
    verify(secrets, Purpose::Purge, header, timestamp_ms, "", body)
}

/// Path of the Worker's replay of parked dead letters: events the core fleet could not take for a long while are
/// parked in Workers KV and replayed by a scheduled run; this runs one now and answers what it did (an operator's
/// `tracker-core edge replay`). Signed for the purpose `dlq-replay` over the body.
pub const DLQ_REPLAY_PATH: &str = "/internal/v1/dlq/replay";

pub fn sign_dlq_replay(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> Option<String> {
    sign(secret, Purpose::Replay, timestamp_ms, "", body)
}

pub fn verify_dlq_replay(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, body: &[u8]) -> bool {
    verify(secrets, Purpose::Replay, header, timestamp_ms, "", body)
}

/// The key the Worker seals what it keeps in Workers KV with (tenant records hold link secrets): derived from its
/// `EDGE_SHARED_SECRET` for this purpose only, so it signs nothing and nothing signed can open a record.
pub fn kv_sealing_key(secret: &[u8]) -> Option<[u8; 32]> {
    if secret.is_empty() {
        return None;
    }
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    m.update(b"tracker/kv-records/v1");
    Some(m.finalize().into_bytes().into())
}

/// Prefix of a sealed KV value.
const SEALED_KV: &str = "s1.";

/// A KV value sealed under `key`: `s1.` and base64url of `nonce || AES-256-GCM(value)`, bound to the KV key `name`
/// (`tenant:<prefix>`, `short:<tu_id>`, `token:<sha256>`) as associated data, so a value cannot be moved to another
/// tenant's or record's key. `nonce` must be fresh randomness.
pub fn seal_kv(key: &[u8; 32], name: &str, value: &[u8], nonce: [u8; 12]) -> Option<String> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine as _;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).ok()?;
    let sealed =
        cipher.encrypt(aes_gcm::Nonce::from_slice(&nonce), Payload { msg: value, aad: name.as_bytes() }).ok()?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&sealed);
    Some(format!("{SEALED_KV}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob)))
}

/// The value of a KV entry sealed by [`seal_kv`] under `key` for `name`; `None` for anything else (a value from
/// before sealing, another key's, or one changed in KV), which the Worker treats as a miss.
pub fn open_kv(key: &[u8; 32], name: &str, sealed: &str) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed.strip_prefix(SEALED_KV)?).ok()?;
    let (nonce, body) = (blob.get(..12)?, blob.get(12..)?);
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).ok()?;
    cipher.decrypt(aes_gcm::Nonce::from_slice(nonce), Payload { msg: body, aad: name.as_bytes() }).ok()
}

/// Header that carries the SHA-256 (hex) of the caller's credential on platform API requests the edge forwards.
pub const CREDENTIAL_HEADER: &str = "x-tracker-credential-sha256";

/// The forwarded request's headers that change its answer, covered by its signature: the body's type, the
/// dashboard's CSRF token and the public URL answers print links with.
pub const API_SIGNED_HEADERS: [&str; 3] = ["content-type", "x-csrf-token", "x-tracker-public-url"];

/// The subject of an API signature: method, path and query, credential hash, then each of [`API_SIGNED_HEADERS`] as
/// `name:value` (empty when absent), one per line. `header` looks a header up by its lower-case name.
fn api_subject<'a>(
    method: &str,
    path_and_query: &str,
    credential_sha256: &str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> String {
    let mut subject = format!("{method}\n{path_and_query}\n{credential_sha256}");
    for name in API_SIGNED_HEADERS {
        subject.push('\n');
        subject.push_str(name);
        subject.push(':');
        subject.push_str(header(name).unwrap_or_default());
    }
    subject
}

/// Signature of a platform API request the edge forwards (`/internal/v1/api/...`): purpose `api` over the method,
/// the path and query, the credential's hash and the headers that change the answer ([`API_SIGNED_HEADERS`]) as the
/// subject, and the request body.
/// `path_and_query` is the public path below `/api` (for example `/links?limit=5`). The credential travels only
/// as its hash, so a raw API key never leaves the edge.
pub fn sign_api<'a>(
    secret: &[u8],
    timestamp_ms: i64,
    method: &str,
    path_and_query: &str,
    credential_sha256: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Option<String> {
    sign(secret, Purpose::Api, timestamp_ms, &api_subject(method, path_and_query, credential_sha256, header), body)
}

#[allow(clippy::too_many_arguments)] // the signed request's parts, each its own argument
pub fn verify_api<'a>(
    secrets: &[Vec<u8>],
    signature: &str,
    timestamp_ms: i64,
    method: &str,
    path_and_query: &str,
    credential_sha256: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> bool {
    let subject = api_subject(method, path_and_query, credential_sha256, header);
    verify(secrets, Purpose::Api, signature, timestamp_ms, &subject, body)
}

/// Signature of a request to the query functions (`POST /v1/query`, from the platform API): purpose `query` over
/// the body, so a signed batch can never pass for a query or the other way round.
pub fn sign_query(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> Option<String> {
    sign(secret, Purpose::Query, timestamp_ms, "", body)
}

pub fn verify_query(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, body: &[u8]) -> bool {
    verify(secrets, Purpose::Query, header, timestamp_ms, "", body)
}

/// Batch ids are opaque to the core but bounded: `[A-Za-z0-9_.:-]{1,128}`.
pub fn is_valid_batch_id(id: &str) -> bool {
    crate::is_valid_name(id, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_values_open_only_under_their_key_and_name() {
        let key = kv_sealing_key(b"edge-secret-0123456789abcdef0123456789").unwrap();
        let record = br#"{"key_prefix":"acme","keys":[{"signing_secret":"s3cret"}]}"#;
        let sealed = seal_kv(&key, "tenant:acme", record, [7; 12]).unwrap();
        assert!(!sealed.contains("s3cret") && sealed.starts_with("s1."));
        assert_eq!(open_kv(&key, "tenant:acme", &sealed).as_deref(), Some(&record[..]));
        assert_eq!(open_kv(&key, "tenant:evil", &sealed), None, "bound to its tenant's key");
        let other = kv_sealing_key(b"another-secret-0123456789abcdef01234567").unwrap();
        assert_eq!(open_kv(&other, "tenant:acme", &sealed), None);
        assert_eq!(open_kv(&key, "tenant:acme", std::str::from_utf8(record).unwrap()), None, "plain text is a miss");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(open_kv(&key, "tenant:acme", std::str::from_utf8(&tampered).unwrap()), None);
        assert_eq!(kv_sealing_key(b""), None);
    }

    #[test]
    fn service_traffic_is_https_or_stays_on_this_machine() {
        for ok in [
            "https://core.example",
            "HTTPS://core.example:8443/x",
            "http://127.0.0.1:3030",
            "http://localhost:3030/",
            "http://127.9.0.1",
            "http://[::1]:3030",
        ] {
            assert!(is_service_url(ok), "{ok}");
        }
        for bad in [
            "http://core.example",
            "http://10.0.0.5:3030",
            "http://127.0.0.1.evil.example",
            "http://localhost@evil.example",
            "http://[::2]:3030",
            "ftp://core.example",
            "core.example",
        ] {
            assert!(!is_service_url(bad), "{bad}");
        }
    }

    #[test]
    fn signs_and_verifies_with_rotation() {
        let sig = sign_batch(b"new", 1000, "b1", b"{}").unwrap();
        assert!(verify_batch(&[b"old".to_vec(), b"new".to_vec()], &sig, 1000, "b1", b"{}"));
        assert!(!verify_batch(&[b"old".to_vec()], &sig, 1000, "b1", b"{}"));
        assert!(!verify_batch(&[b"new".to_vec()], &sig, 1001, "b1", b"{}"));
        assert!(!verify_batch(&[b"new".to_vec()], &sig, 1000, "b2", b"{}"));
        assert!(!verify_batch(&[b"new".to_vec()], &sig, 1000, "b1", b"{ }"));
        assert!(!verify_batch(&[Vec::new()], "v1=", 1000, "b1", b"{}"));
    }

    #[test]
    fn a_signature_made_for_one_purpose_is_worth_nothing_for_another() {
        let secret = b"shared-secret-0123456789abcdef0123".to_vec();
        let secrets = [secret.clone()];
        let body = b"tenant:acme";
        // a purge and a batch whose id is "purge" (the old scheme's confusion) never match
        let purge = sign_purge(&secret, 1000, body).unwrap();
        assert!(verify_purge(&secrets, &purge, 1000, body));
        assert!(!verify_batch(&secrets, &purge, 1000, "purge", body));
        assert!(!verify_batch(&secrets, &purge, 1000, "", body));
        assert!(!verify_dlq_replay(&secrets, &purge, 1000, body));
        assert!(!verify_query(&secrets, &purge, 1000, body));
        let lookup = sign_lookup(&secret, 1000, "/internal/v1/tenants/acme").unwrap();
        assert!(!verify_batch(&secrets, &lookup, 1000, "/internal/v1/tenants/acme", b""));
        let batch = sign_batch(&secret, 1000, "q-1", b"{}").unwrap();
        assert!(!verify_api(&secrets, &batch, 1000, "POST", "/links", "q-1", |_| None, b"{}"));
        // the old scheme's signatures are refused
        let mut old = HmacSha256::new_from_slice(&secret).unwrap();
        old.update(b"v1\n1000\npurge\n");
        old.update(body);
        let old = format!("v1={}", hex::encode(old.finalize().into_bytes()));
        assert!(!verify_purge(&secrets, &old, 1000, body));
    }

    #[test]
    fn api_signatures_cover_method_path_credential_headers_and_body() {
        let s = [b"k".to_vec()];
        let headers = |name: &str| match name {
            "content-type" => Some("application/json"),
            "x-csrf-token" => Some("c1"),
            _ => None,
        };
        let sig = sign_api(b"k", 5, "PATCH", "/links/tu_1", "ab", headers, b"{}").unwrap();
        assert!(verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", headers, b"{}"));
        assert!(!verify_api(&s, &sig, 5, "DELETE", "/links/tu_1", "ab", headers, b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_2", "ab", headers, b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ac", headers, b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", headers, b"[]"));
        assert!(!verify_api(&s, &sig, 6, "PATCH", "/links/tu_1", "ab", headers, b"{}"));
        // a header that changes the answer, changed or added on the way
        let other_csrf = |name: &str| if name == "x-csrf-token" { Some("c2") } else { headers(name) };
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", other_csrf, b"{}"));
        let public =
            |name: &str| if name == "x-tracker-public-url" { Some("https://evil.example") } else { headers(name) };
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", public, b"{}"));
    }
}
