//! Secrets sealed at rest with `SECRETS_KEY` (AES-256-GCM): tenants' link keys and webhook endpoints' signing
//! secrets. A value is bound to its row (`enc:v2:`, the row's name as associated data), so a sealed value copied to
//! another tenant's key or another endpoint does not open there. Values sealed before rows were bound (`enc:v1:`)
//! and values written before the key was set are still read; `tracker-core secrets reseal` rewrites them bound.
//!
//! Rotation: besides the current key (which seals), a node may hold previous keys (`SECRETS_KEY_PREVIOUS`) that only
//! open; `reseal` rewrites every value the current key does not open under it, after which the previous keys can go.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Result, StoreError};

/// A value sealed without its row (before rows were bound).
pub(crate) const SEALED_PREFIX: &str = "enc:v1:";
/// A value sealed and bound to its row.
pub(crate) const BOUND_PREFIX: &str = "enc:v2:";

/// The name a tenant key's secret is bound to (`what`: `signing_secret` or `encryption_key`).
pub(crate) fn key_row(key_prefix: &str, kid: &str, what: &str) -> String {
    format!("tenant_keys/{key_prefix}/{kid}/{what}")
}

/// The name a webhook endpoint's signing secret is bound to.
pub(crate) fn webhook_row(webhook_id: &str) -> String {
    format!("webhooks/{webhook_id}/secret")
}

/// Seals secrets at rest: `enc:v2:` + base64url(nonce || AES-256-GCM ciphertext || tag), the row as associated data.
/// The current key seals and opens; previous keys only open (a value sealed under one is resealed by `reseal`).
#[derive(Clone)]
pub(crate) struct Sealer {
    current: aes_gcm::Aes256Gcm,
    previous: Vec<aes_gcm::Aes256Gcm>,
}

impl Sealer {
    pub(crate) fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> Sealer {
        use aes_gcm::KeyInit;
        let cipher = |key: &[u8; 32]| aes_gcm::Aes256Gcm::new(key.into());
        Sealer { current: cipher(current), previous: previous.iter().map(cipher).collect() }
    }

    pub(crate) fn seal(&self, plain: &str, row: &str) -> Result<String> {
        use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
        let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload { msg: plain.as_bytes(), aad: row.as_bytes() };
        let ct = self.current.encrypt(&nonce, payload).map_err(|_| StoreError::Sealed)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!("{BOUND_PREFIX}{}", URL_SAFE_NO_PAD.encode(blob)))
    }
}

/// A sealed value's nonce and ciphertext, and the associated data it was sealed with; `None` if not sealed.
fn sealed_parts<'a>(stored: &'a str, row: &'a str) -> Option<Result<(Vec<u8>, &'a [u8])>> {
    let (blob, aad) = match (stored.strip_prefix(BOUND_PREFIX), stored.strip_prefix(SEALED_PREFIX)) {
        (Some(blob), _) => (blob, row.as_bytes()),
        (None, Some(blob)) => (blob, &b""[..]),
        (None, None) => return None,
    };
    Some(match URL_SAFE_NO_PAD.decode(blob) {
        Ok(blob) if blob.len() >= 12 => Ok((blob, aad)),
        _ => Err(StoreError::Sealed),
    })
}

fn open_with(cipher: &aes_gcm::Aes256Gcm, blob: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, Payload};
    let (nonce, ct) = blob.split_at_checked(12)?;
    cipher.decrypt(aes_gcm::Nonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

/// The secret stored in `row` (sealed bound to it under the current or a previous key, sealed unbound, or as
/// written).
pub(crate) fn open_secret(sealer: Option<&Sealer>, stored: String, row: &str) -> Result<String> {
    let (blob, aad) = match sealed_parts(&stored, row) {
        None => return Ok(stored),
        Some(parts) => parts?,
    };
    let sealer = sealer.ok_or(StoreError::Sealed)?;
    let plain = std::iter::once(&sealer.current)
        .chain(&sealer.previous)
        .find_map(|cipher| open_with(cipher, &blob, aad))
        .ok_or(StoreError::Sealed)?;
    String::from_utf8(plain).map_err(|_| StoreError::Sealed)
}

/// Whether a stored value is already as `reseal` leaves it: sealed under the current key and bound to its row.
fn is_current(sealer: &Sealer, stored: &str, row: &str) -> bool {
    let opens = |(blob, aad): (Vec<u8>, &[u8])| open_with(&sealer.current, &blob, aad).is_some();
    stored.starts_with(BOUND_PREFIX) && sealed_parts(stored, row).and_then(Result::ok).is_some_and(opens)
}

impl crate::Store {
    /// Rewrites every secret that is not sealed under the current key and bound to its row (written before
    /// `SECRETS_KEY` was set, sealed before rows were bound, or sealed under a previous key): tenants' link keys and
    /// webhook endpoints' secrets. Returns how many it rewrote; a second run rewrites none. Needs `SECRETS_KEY`;
    /// a value no key opens fails it, and nothing is rewritten.
    pub async fn reseal_secrets(&self) -> Result<u64> {
        let sealer = self.sealer.as_ref().ok_or(StoreError::Invalid("resealing needs SECRETS_KEY"))?;
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut changes = Vec::new();
        let mut rows = tx.query("SELECT key_prefix, kid, signing_secret, encryption_key FROM tenant_keys", ()).await?;
        while let Some(row) = rows.next().await? {
            let (prefix, kid) = (crate::text(&row, 0, "key_prefix")?, crate::text(&row, 1, "kid")?);
            for (i, what) in [(2, "signing_secret"), (3, "encryption_key")] {
                let stored = crate::text(&row, i, what)?;
                let bound = key_row(&prefix, &kid, what);
                if !is_current(sealer, &stored, &bound) {
                    let sealed = sealer.seal(&open_secret(Some(sealer), stored, &bound)?, &bound)?;
                    let sql = format!("UPDATE tenant_keys SET {what} = ?3 WHERE key_prefix = ?1 AND kid = ?2");
                    changes.push((sql, vec![prefix.clone(), kid.clone(), sealed]));
                }
            }
        }
        drop(rows);
        let mut rows = tx.query("SELECT webhook_id, secret FROM webhooks", ()).await?;
        while let Some(row) = rows.next().await? {
            let (id, stored) = (crate::text(&row, 0, "webhook_id")?, crate::text(&row, 1, "secret")?);
            let bound = webhook_row(&id);
            if !is_current(sealer, &stored, &bound) {
                let sealed = sealer.seal(&open_secret(Some(sealer), stored, &bound)?, &bound)?;
                changes.push(("UPDATE webhooks SET secret = ?2 WHERE webhook_id = ?1".to_owned(), vec![id, sealed]));
            }
        }
        drop(rows);
        for (sql, params) in &changes {
            tx.execute(sql, libsql::params::params_from_iter(params.iter().cloned())).await?;
        }
        tx.commit().await?;
        Ok(changes.len() as u64)
    }
}
