//! Webhook delivery signatures.
//!
//! Every delivery is a `POST` with a JSON body and these headers:
//!
//! - `Tracker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t || "." || body)>`. During a secret
//!   rotation there may be several `v1=` entries; a receiver accepts the delivery if any of them verifies.
//! - `Tracker-Delivery-Id: <id>`: the same for every retry of one delivery, so receivers can drop duplicates.
//! - `Tracker-Event: <event type>` (`webhook.test` for test deliveries).
//!
//! Receivers recompute the HMAC over the raw body bytes, compare in constant time, and refuse timestamps older
//! than their tolerance (five minutes is the usual choice), which makes a captured delivery useless later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "tracker-signature";
pub const DELIVERY_ID_HEADER: &str = "tracker-delivery-id";
pub const EVENT_HEADER: &str = "tracker-event";

fn mac(secret: &str, timestamp_secs: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(timestamp_secs.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The `Tracker-Signature` value for a delivery of `body` at `timestamp_secs`.
pub fn sign(secret: &str, timestamp_secs: i64, body: &[u8]) -> Option<String> {
    let m = mac(secret, timestamp_secs, body)?;
    Some(format!("t={timestamp_secs},v1={}", hex::encode(m.finalize().into_bytes())))
}

/// Why a delivery was refused by [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// What a receiver does: checks the header against the body with `secret`, refusing timestamps more than
/// `tolerance_secs` away from `now_secs`. Constant-time in the signature bytes.
pub fn verify(secret: &str, header: &str, body: &[u8], now_secs: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", sig)) => signatures.push(hex::decode(sig).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let t = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if now_secs.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let m = mac(secret, t, body).ok_or(VerifyError::Malformed)?;
    if signatures.iter().any(|s| m.clone().verify_slice(s).is_ok()) { Ok(()) } else { Err(VerifyError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_verify_and_replays_or_changes_do_not() {
        let h = sign("whsec_x", 1_000, b"{\"a\":1}").unwrap();
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(verify("whsec_x", &h, b"{\"a\":1}", 1_100, 300), Ok(()));
        assert_eq!(verify("whsec_x", &h, b"{\"a\":2}", 1_100, 300), Err(VerifyError::Mismatch));
        assert_eq!(verify("whsec_y", &h, b"{\"a\":1}", 1_100, 300), Err(VerifyError::Mismatch));
        assert_eq!(verify("whsec_x", &h, b"{\"a\":1}", 1_301, 300), Err(VerifyError::Stale));
        assert_eq!(verify("whsec_x", "v1=zz", b"", 0, 300), Err(VerifyError::Malformed));
        let far = format!("t={},v1={}", i64::MIN, "00".repeat(32));
        assert_eq!(verify("whsec_x", &far, b"", i64::MAX, 300), Err(VerifyError::Stale), "no overflow");
        // a rotated endpoint may carry several signatures
        let both = format!("{h},v1={}", "00".repeat(32));
        assert_eq!(verify("whsec_x", &both, b"{\"a\":1}", 1_000, 300), Ok(()));
    }
}
