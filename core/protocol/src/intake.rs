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
}
