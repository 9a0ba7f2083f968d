//! Link secrets sealed at rest with `SECRETS_KEY` (AES-256-GCM, `enc:v1:` values); rows written before the key
//! was set are still read as they are.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Result, StoreError};

pub(crate) const SEALED_PREFIX: &str = "enc:v1:";

/// Seals secrets at rest: `enc:v1:` + base64url(nonce || AES-256-GCM ciphertext || tag).
#[derive(Clone)]
pub(crate) struct Sealer(pub(crate) aes_gcm::Aes256Gcm);

impl Sealer {
    pub(crate) fn seal(&self, plain: &str) -> Result<String> {
        use aes_gcm::aead::{Aead, AeadCore, OsRng};
        let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self.0.encrypt(&nonce, plain.as_bytes()).map_err(|_| StoreError::Sealed)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(blob)))
    }
}

pub(crate) fn open_secret(sealer: Option<&Sealer>, stored: String) -> Result<String> {
    use aes_gcm::aead::Aead;
    let Some(blob) = stored.strip_prefix(SEALED_PREFIX) else { return Ok(stored) };
    let sealer = sealer.ok_or(StoreError::Sealed)?;
    let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| StoreError::Sealed)?;
    if blob.len() < 12 {
        return Err(StoreError::Sealed);
    }
    let (nonce, ct) = blob.split_at(12);
    let plain = sealer.0.decrypt(aes_gcm::Nonce::from_slice(nonce), ct).map_err(|_| StoreError::Sealed)?;
    String::from_utf8(plain).map_err(|_| StoreError::Sealed)
}
