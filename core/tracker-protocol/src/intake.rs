//! Authentication of batches forwarded by the edge to the core fleet.
//!
//! `X-Tracker-Signature: v1=<hex HMAC-SHA256(secret, "v1\n" || timestamp_ms || "\n" || batch_id || "\n" || body)>`
//! with `X-Tracker-Timestamp` and `X-Tracker-Batch-Id`. The core refuses timestamps outside a replay window and
//! answers a repeated batch id with the first answer (idempotency), so a signed request can neither be replayed
//! later nor double-count when the queue retries it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-tracker-signature";
pub const TIMESTAMP_HEADER: &str = "x-tracker-timestamp";
pub const BATCH_ID_HEADER: &str = "x-tracker-batch-id";

fn mac(secret: &[u8], timestamp_ms: i64, batch_id: &str, body: &[u8]) -> Option<HmacSha256> {
    if secret.is_empty() {
        return None;
    }
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    m.update(format!("v1\n{timestamp_ms}\n{batch_id}\n").as_bytes());
    m.update(body);
    Some(m)
}

/// The header value for a batch.
pub fn sign_batch(secret: &[u8], timestamp_ms: i64, batch_id: &str, body: &[u8]) -> Option<String> {
    Some(format!("v1={}", hex::encode(mac(secret, timestamp_ms, batch_id, body)?.finalize().into_bytes())))
}

/// Whether `header` is a valid signature under any of `secrets` (several during a secret rotation).
/// Constant-time in the signature bytes.
pub fn verify_batch(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, batch_id: &str, body: &[u8]) -> bool {
    let Some(sig) = header.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    secrets.iter().filter_map(|s| mac(s, timestamp_ms, batch_id, body)).any(|m| m.verify_slice(&sig).is_ok())
}

/// Signature of a service lookup by the edge (`GET /internal/v1/...`): the batch scheme over the request path and
/// an empty body, with `X-Tracker-Timestamp` and `X-Tracker-Signature`.
pub fn sign_lookup(secret: &[u8], timestamp_ms: i64, path: &str) -> Option<String> {
    sign_batch(secret, timestamp_ms, path, b"")
}

pub fn verify_lookup(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, path: &str) -> bool {
    verify_batch(secrets, header, timestamp_ms, path, b"")
}

/// Path of the Worker's purge endpoint: the core tells the edge which hot-path records (`tenant:<p>`, `short:<id>`,
/// `token:<sha256>`, comma-separated in the body) changed without a request through the edge (a tenant reaching its
/// hard cap). Signed with the batch scheme over the subject `"purge"` and the body.
pub const PURGE_PATH: &str = "/internal/v1/purge";

pub fn sign_purge(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> Option<String> {
    sign_batch(secret, timestamp_ms, "purge", body)
}

pub fn verify_purge(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, body: &[u8]) -> bool {
    verify_batch(secrets, header, timestamp_ms, "purge", body)
}

/// Header that carries the SHA-256 (hex) of the caller's credential on platform API requests the edge forwards.
pub const CREDENTIAL_HEADER: &str = "x-tracker-credential-sha256";

fn api_subject(method: &str, path_and_query: &str, credential_sha256: &str) -> String {
    format!("api\n{method}\n{path_and_query}\n{credential_sha256}")
}

/// Signature of a platform API request the edge forwards (`/internal/v1/api/...`): the batch scheme over
/// `"api\n" || method || "\n" || path_and_query || "\n" || credential_sha256` as the subject and the request body.
/// `path_and_query` is the public path below `/api` (for example `/links?limit=5`). The credential travels only
/// as its hash, so a raw API key never leaves the edge.
pub fn sign_api(
    secret: &[u8],
    timestamp_ms: i64,
    method: &str,
    path_and_query: &str,
    credential_sha256: &str,
    body: &[u8],
) -> Option<String> {
    sign_batch(secret, timestamp_ms, &api_subject(method, path_and_query, credential_sha256), body)
}

pub fn verify_api(
    secrets: &[Vec<u8>],
    header: &str,
    timestamp_ms: i64,
    method: &str,
    path_and_query: &str,
    credential_sha256: &str,
    body: &[u8],
) -> bool {
    verify_batch(secrets, header, timestamp_ms, &api_subject(method, path_and_query, credential_sha256), body)
}

/// Signature of a request to the query functions (`POST /v1/query`, from the platform API): the batch scheme
/// with `query` as the subject, so a signed batch can never pass for a query or the other way round.
pub fn sign_query(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> Option<String> {
    sign_batch(secret, timestamp_ms, "query", body)
}

pub fn verify_query(secrets: &[Vec<u8>], header: &str, timestamp_ms: i64, body: &[u8]) -> bool {
    verify_batch(secrets, header, timestamp_ms, "query", body)
}

/// Batch ids are opaque to the core but bounded: `[A-Za-z0-9_.:-]{1,128}`.
pub fn is_valid_batch_id(id: &str) -> bool {
    crate::is_valid_name(id, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn api_signatures_cover_method_path_credential_and_body() {
        let s = [b"k".to_vec()];
        let sig = sign_api(b"k", 5, "PATCH", "/links/tu_1", "ab", b"{}").unwrap();
        assert!(verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", b"{}"));
        assert!(!verify_api(&s, &sig, 5, "DELETE", "/links/tu_1", "ab", b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_2", "ab", b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ac", b"{}"));
        assert!(!verify_api(&s, &sig, 5, "PATCH", "/links/tu_1", "ab", b"[]"));
        assert!(!verify_api(&s, &sig, 6, "PATCH", "/links/tu_1", "ab", b"{}"));
    }
}
