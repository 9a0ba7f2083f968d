//! Links in the platform's formats, built by the protocol crate.
//!
//! v2 (what new links use): the signature covers the link kind, the tenant, the key id, the destination (or
//! short link id), the expiry, the names that may be appended unsigned (`ext`) and every param. Encrypted v2 links
//! hide all of that in one AES-256-GCM blob bound to the tenant and key id. The `v1_*` functions build the formats
//! of the system this one replaces, for links it already has in circulation.

use tracker_protocol::links::{v1_encrypted_url, v1_short_url, v1_signed_url};
use tracker_protocol::{
    LinkKind, ProtocolError, V2Link, check_redirectable, parse_encryption_key, validate_destination,
};

use crate::Error;

/// A tenant's link key: its key prefix, key id, and signing secret or encryption key (64 hex digits).
#[derive(Clone)]
pub struct Key {
    pub key_prefix: String,
    pub kid: String,
    secret: Option<String>,
    encryption_key: Option<String>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the secrets are never printed
        f.debug_struct("Key").field("key_prefix", &self.key_prefix).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Key {
    pub fn new(key_prefix: impl Into<String>, kid: impl Into<String>) -> Self {
        Key { key_prefix: key_prefix.into(), kid: kid.into(), secret: None, encryption_key: None }
    }

    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    pub fn with_encryption_key(mut self, hex_key: impl Into<String>) -> Self {
        self.encryption_key = Some(hex_key.into());
        self
    }

    fn secret(&self) -> Result<&str, Error> {
        self.secret.as_deref().ok_or(Error::Invalid(ProtocolError::MalformedSignature { reason: "no signing secret" }))
    }

    fn aes(&self) -> Result<[u8; 32], Error> {
        self.encryption_key
            .as_deref()
            .and_then(parse_encryption_key)
            .ok_or(Error::Invalid(ProtocolError::MalformedCiphertext { reason: "no encryption key (64 hex digits)" }))
    }
}

/// Params (in link order), an expiry and the names that may be appended unsigned.
#[derive(Debug, Clone, Default)]
pub struct LinkOptions {
    params: Vec<(String, String)>,
    ext: Vec<String>,
    expires_at: Option<i64>,
}

impl LinkOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    pub fn params<K: Into<String>, V: Into<String>>(mut self, params: impl IntoIterator<Item = (K, V)>) -> Self {
        self.params.extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A param name an ad network may append later without a signature (`gclid`, `fbclid`).
    pub fn ext(mut self, name: impl Into<String>) -> Self {
        self.ext.push(name.into());
        self
    }

    /// When the link stops redirecting, in unix seconds.
    pub fn expires_at(mut self, unix_seconds: i64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

fn v2<'a>(
    kind: LinkKind,
    key: &'a Key,
    target: &'a str,
    options: &'a LinkOptions,
    params: &'a [(&'a str, &'a str)],
    ext: &'a [&'a str],
) -> V2Link<'a> {
    V2Link { kind, key_prefix: &key.key_prefix, kid: &key.kid, target, expires_at: options.expires_at, ext, params }
}

fn signed(base: &str, key: &Key, kind: LinkKind, target: &str, options: &LinkOptions) -> Result<String, Error> {
    let params = options.pairs();
    let ext: Vec<&str> = options.ext.iter().map(String::as_str).collect();
    Ok(v2(kind, key, target, options, &params, &ext).signed_url(base, key.secret()?)?)
}

/// A v2 signed click to `destination`: `<base>/t?v=2&k=<prefix>.<kid>&url=<destination>[&exp=][&ext=]&<params>&s=`.
///
/// The destination must be an absolute http(s) URL a browser follows to the host it shows
/// ([`tracker_protocol::validate_destination`]), as the platform requires of new links: anything else is refused here
/// rather than printed as a link that could never work.
pub fn click_url(base: &str, key: &Key, destination: &str, options: &LinkOptions) -> Result<String, Error> {
    validate_destination(destination)?;
    signed(base, key, LinkKind::Click, destination, options)
}

/// A v2 signed short link (`/t/<tu_id>`; the destination is stored by the platform).
pub fn short_link_url(base: &str, key: &Key, tu_id: &str, options: &LinkOptions) -> Result<String, Error> {
    signed(base, key, LinkKind::Short, tu_id, options)
}

/// A v2 signed postback URL (`/p`): its params, `event_type` among them, cannot be changed on the way.
///
/// ```
/// use tracker_sdk::links::{Key, LinkOptions, postback_url};
///
/// let key = Key::new("acme", "k1").with_secret("s3cret");
/// let options = LinkOptions::new().param("event_type", "purchase").param("click_id", "0195");
/// let url = postback_url("https://track.example.com", &key, &options)?;
/// assert!(url.starts_with("https://track.example.com/p?v=2&k=acme.k1&event_type=purchase&click_id=0195&s="));
/// # Ok::<(), tracker_sdk::Error>(())
/// ```
pub fn postback_url(base: &str, key: &Key, options: &LinkOptions) -> Result<String, Error> {
    signed(base, key, LinkKind::Postback, "", options)
}

/// A v2 signed impression pixel URL (`/i`), for `<img src>`.
pub fn pixel_url(base: &str, key: &Key, options: &LinkOptions) -> Result<String, Error> {
    signed(base, key, LinkKind::Impression, "", options)
}

/// A v2 encrypted click: `<base>/t?v=2&k=<prefix>.<kid>&e=<blob>`, the destination, expiry and params sealed with
/// the tenant's encryption key under a fresh random nonce.
///
/// ```
/// use tracker_sdk::links::{Key, LinkOptions, encrypted_click_url};
///
/// let key = Key::new("acme", "k1").with_encryption_key("00".repeat(32));
/// let a = encrypted_click_url("https://t.example", &key, "https://shop.example/", &LinkOptions::new())?;
/// let b = encrypted_click_url("https://t.example", &key, "https://shop.example/", &LinkOptions::new())?;
/// assert!(a.starts_with("https://t.example/t?v=2&k=acme.k1&e=") && a != b);
/// # Ok::<(), tracker_sdk::Error>(())
/// ```
pub fn encrypted_click_url(base: &str, key: &Key, destination: &str, options: &LinkOptions) -> Result<String, Error> {
    encrypted_click_url_with_nonce(base, key, destination, options, rand::random())
}

/// [`encrypted_click_url`] with a given nonce: for test vectors only (a nonce must never be used twice).
pub fn encrypted_click_url_with_nonce(
    base: &str,
    key: &Key,
    destination: &str,
    options: &LinkOptions,
    nonce: [u8; 12],
) -> Result<String, Error> {
    validate_destination(destination)?;
    let params = options.pairs();
    let ext: Vec<&str> = options.ext.iter().map(String::as_str).collect();
    Ok(v2(LinkKind::Click, key, destination, options, &params, &ext).encrypted_url(base, &key.aes()?, nonce)?)
}

/// A v1 signed click: `<base>/t?url=<destination>&sig=[<prefix>_]<hex>&<params>` (only the destination is signed).
/// A destination a click would refuse ([`tracker_protocol::check_redirectable`]) is refused here.
pub fn v1_signed_click_url(
    base: &str,
    secret: &str,
    key_prefix: Option<&str>,
    destination: &str,
    options: &LinkOptions,
) -> Result<String, Error> {
    check_redirectable(destination)?;
    Ok(v1_signed_url(base, secret, key_prefix, destination, &options.pairs())?)
}

/// A v1 short link: `<base>/t/<tu_id>?sig=[<prefix>_]<hex HMAC(secret, tu_id)>&<params>`.
pub fn v1_short_link_url(
    base: &str,
    secret: &str,
    key_prefix: Option<&str>,
    tu_id: &str,
    options: &LinkOptions,
) -> Result<String, Error> {
    Ok(v1_short_url(base, secret, key_prefix, tu_id, &options.pairs())?)
}

/// A v1 encrypted click: `<base>/t?d=<base64url(nonce || AES-256-GCM(destination) || tag)>&<params>`.
pub fn v1_encrypted_click_url(
    base: &str,
    encryption_key: &str,
    destination: &str,
    options: &LinkOptions,
) -> Result<String, Error> {
    v1_encrypted_click_url_with_nonce(base, encryption_key, destination, options, rand::random())
}

/// [`v1_encrypted_click_url`] with a given nonce: for test vectors only.
pub fn v1_encrypted_click_url_with_nonce(
    base: &str,
    encryption_key: &str,
    destination: &str,
    options: &LinkOptions,
    nonce: [u8; 12],
) -> Result<String, Error> {
    check_redirectable(destination)?;
    let key = parse_encryption_key(encryption_key)
        .ok_or(ProtocolError::MalformedCiphertext { reason: "the key is 64 hex digits" })?;
    Ok(v1_encrypted_url(base, &key, nonce, destination, &options.pairs())?)
}
