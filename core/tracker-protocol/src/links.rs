//! Tracking links: the v1 formats (those of the system this one replaces, still in circulation) and our v2
//! format, parsing, verification and signing.
//!
//! Verification is two-phase so that it works where key lookup is asynchronous (Workers KV): [`parse_link`] reads
//! the query and says which keys it needs ([`ParsedLink::key_ref`]); the caller fetches them and calls
//! [`ParsedLink::verify`] with the current time. The byte-level formats are documented in the crate docs.

use std::collections::{BTreeMap, BTreeSet};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::is_valid_key_prefix;
use crate::{ProtocolError, is_valid_name};

type HmacSha256 = Hmac<Sha256>;

/// Query parameter names that belong to the link formats and can never be event params.
pub const RESERVED_PARAMS: [&str; 9] = ["v", "k", "s", "e", "d", "url", "sig", "exp", "ext"];
/// Longest key id.
pub const MAX_KID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which endpoint a link or signed request is for; part of what a v2 signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `GET /t`: a click redirecting to a destination.
    Click,
    /// `GET /t/<tu_id>`: a click on a short link whose destination lives server-side.
    Short,
    /// `GET /p`: a postback (server-to-server conversion).
    Postback,
    /// `GET /i`: an impression pixel.
    Impression,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Click => "click",
            LinkKind::Short => "short",
            LinkKind::Postback => "postback",
            LinkKind::Impression => "impression",
        }
    }
}

/// The format a verified link used. The `V1*` formats are v1: the replaced system's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkFormat {
    V1Signed,
    V1Encrypted,
    V1Short,
    /// A v1 short link without `sig`: the replaced system redirected those too. Only short links imported from it
    /// accept this (the service checks).
    V1ShortUnsigned,
    V2Signed,
    V2Encrypted,
}

impl LinkFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkFormat::V1Signed => "v1_signed",
            LinkFormat::V1Encrypted => "v1_encrypted",
            LinkFormat::V1Short => "v1_short",
            LinkFormat::V1ShortUnsigned => "v1_short_unsigned",
            LinkFormat::V2Signed => "v2_signed",
            LinkFormat::V2Encrypted => "v2_encrypted",
        }
    }

    /// One of the replaced system's formats, whose params it read loosely (repeats, any name, any length).
    pub fn is_v1(self) -> bool {
        !matches!(self, LinkFormat::V2Signed | LinkFormat::V2Encrypted)
    }
}

/// Which unversioned (v1) click formats a server accepts (`URL_MODE`). v2 links are always accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum V1Mode {
    #[default]
    Signed,
    Encrypted,
    Any,
}

impl std::str::FromStr for V1Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signed" => Ok(V1Mode::Signed),
            "encrypted" => Ok(V1Mode::Encrypted),
            "any" => Ok(V1Mode::Any),
            other => Err(format!("URL_MODE must be signed, encrypted or any, not {other:?}")),
        }
    }
}

/// Whose keys verify a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// No key: a v1 short link without a signature.
    Unsigned,
    /// The server's global `HMAC_SECRET` / `ENCRYPTION_KEY` (v1 links without a key prefix).
    Global,
    /// A tenant's keys; `kid` names one key (v2), `None` means any active key (v1 formats).
    Tenant { key_prefix: String, kid: Option<String> },
}

/// One signing/encryption key of a tenant (or the global one). Secrets are used exactly as given: the HMAC key
/// is the secret string's UTF-8 bytes, never hex-decoded.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkKey {
    pub kid: String,
    pub signing_secret: Option<String>,
    /// Written as 64 hex characters in JSON (the core-to-edge key records).
    #[serde(with = "hex_key")]
    pub encryption_key: Option<[u8; 32]>,
    /// End of the rotation grace period, ms since the epoch; `None` while the key is current.
    pub retires_at_ms: Option<i64>,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKey")
            .field("kid", &self.kid)
            .field("retires_at_ms", &self.retires_at_ms)
            .finish_non_exhaustive()
    }
}

impl LinkKey {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.retires_at_ms.is_none_or(|t| now_ms < t)
    }

    fn signer(&self) -> Option<HmacSha256> {
        let secret = self.signing_secret.as_deref().filter(|s| !s.is_empty())?;
        <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).ok()
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => s.serialize_some(&hex::encode(k)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(h) => super::parse_encryption_key(&h)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("encryption_key must be 64 hex characters")),
        }
    }
}

/// Parses a 64-hex-character AES-256 key (the replaced system's `ENCRYPTION_KEY` format).
pub fn parse_encryption_key(hex_key: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut out).ok()?;
    Some(out)
}

/// `[a-z0-9]{1,16}`.
pub fn is_valid_kid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_KID_LEN && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `tu_` followed by a hyphenated UUID.
pub fn is_valid_short_id(s: &str) -> bool {
    s.strip_prefix("tu_").is_some_and(|u| u.len() == 36 && uuid::Uuid::try_parse(u).is_ok())
}

/// Decoded query parameters in order; a repeated name is an error (it would let two parsers disagree).
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !seen.insert(k.clone()) {
            return Err(ProtocolError::DuplicateParam { name: k.into_owned() });
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Decoded query parameters in order, repeats kept: how the replaced system's links are read.
pub fn parse_query_loose(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn take(pairs: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = pairs.iter().position(|(k, _)| k == name)?;
    Some(pairs.remove(i).1)
}

/// Removes every `name` and returns the last value: the replaced system read a query into a map, so of a repeated
/// field the last one counted.
fn take_last(pairs: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let mut last = None;
    pairs.retain_mut(|(k, v)| {
        if k == name {
            last = Some(std::mem::take(v));
            false
        } else {
            true
        }
    });
    last
}

/// Whether a query is a v2 link or signed request: `v` is present and none of the v1 format fields (`sig`, `d`),
/// which v2 reserves and never writes. For short links, postbacks and pixels `k` must be there too, so that a v1
/// campaign param that happens to be called `v` stays a param.
fn is_v2(kind: LinkKind, raw_query: &str) -> bool {
    let (mut v, mut k, mut v1) = (false, false, false);
    for (name, _) in form_urlencoded::parse(raw_query.as_bytes()) {
        match name.as_ref() {
            "v" => v = true,
            "k" => k = true,
            "sig" | "d" => v1 = true,
            _ => {}
        }
    }
    v && !v1 && (k || kind == LinkKind::Click)
}

/// Splits a v1 link's params into the value that counts for each name (the last, as the replaced system kept it)
/// and the earlier values of repeated names.
pub(crate) fn last_wins(pairs: Vec<(String, String)>) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut params = BTreeMap::new();
    let mut shadowed = Vec::new();
    for (k, v) in pairs {
        if let Some(old) = params.insert(k.clone(), v) {
            shadowed.push((k, old));
        }
    }
    (params, shadowed)
}

fn reject_reserved(pairs: &[(String, String)]) -> Result<(), ProtocolError> {
    match pairs.iter().find(|(k, _)| RESERVED_PARAMS.contains(&k.as_str())) {
        Some((k, _)) => Err(ProtocolError::ReservedParam { name: k.clone() }),
        None => Ok(()),
    }
}

#[derive(Debug, Clone)]
enum Body {
    Unsigned { target: String },
    V1Signed { target: String, sig: [u8; 32] },
    V2Signed { target: String, exp: Option<String>, ext: Option<String>, sig: [u8; 32] },
    Encrypted { blob: Vec<u8> },
}

/// A link whose syntax is valid but whose authenticity is not yet checked.
#[derive(Debug, Clone)]
pub struct ParsedLink {
    kind: LinkKind,
    format: LinkFormat,
    key: KeyRef,
    body: Body,
    /// Params outside the format's own fields (passed through as event params).
    params: Vec<(String, String)>,
}

/// A link whose signature or encryption checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLink {
    pub format: LinkFormat,
    /// `None` for links verified with the global secret.
    pub key_prefix: Option<String>,
    pub kid: String,
    /// The destination (click), the short link id (short), or empty (postback, impression).
    pub target: String,
    pub params: BTreeMap<String, String>,
    /// v1 links only: earlier values of names the link repeats (`params` holds the last, which is the one the
    /// replaced system kept). v2 refuses repeats.
    pub shadowed: Vec<(String, String)>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// Reads a link's query (and the `tu_id` from the path for short links).
pub fn parse_link(
    kind: LinkKind,
    path_id: Option<&str>,
    raw_query: &str,
    v1_mode: V1Mode,
) -> Result<ParsedLink, ProtocolError> {
    let short_target = || -> Result<String, ProtocolError> {
        match path_id {
            Some(id) if is_valid_short_id(id) => Ok(id.to_owned()),
            _ => Err(ProtocolError::InvalidShortLinkId),
        }
    };
    if !is_v2(kind, raw_query) {
        return parse_v1(kind, short_target, parse_query_loose(raw_query), v1_mode);
    }
    let mut pairs = parse_query(raw_query)?;
    if let Some(version) = take(&mut pairs, "v") {
        if version != "2" {
            return Err(ProtocolError::UnsupportedLinkVersion { version });
        }
        let k = take(&mut pairs, "k").ok_or(ProtocolError::MalformedSignature { reason: "k is missing" })?;
        let (key_prefix, kid) = k
            .split_once('.')
            .filter(|(p, kid)| is_valid_key_prefix(p) && is_valid_kid(kid))
            .ok_or(ProtocolError::MalformedSignature { reason: "k must be <key_prefix>.<kid>" })?;
        let key = KeyRef::Tenant { key_prefix: key_prefix.to_owned(), kid: Some(kid.to_owned()) };
        if kind == LinkKind::Click
            && let Some(e) = take(&mut pairs, "e")
        {
            reject_reserved(&pairs)?;
            let blob = decode_blob(&e)?;
            return Ok(ParsedLink {
                kind,
                format: LinkFormat::V2Encrypted,
                key,
                body: Body::Encrypted { blob },
                params: pairs,
            });
        }
        let sig = take(&mut pairs, "s").ok_or(ProtocolError::MalformedSignature { reason: "s is missing" })?;
        let sig = decode_b64_sig(&sig)?;
        let target = match kind {
            LinkKind::Click => take(&mut pairs, "url").ok_or(ProtocolError::MissingLinkParams)?,
            LinkKind::Short => short_target()?,
            LinkKind::Postback | LinkKind::Impression => String::new(),
        };
        let exp = take(&mut pairs, "exp");
        if let Some(exp) = &exp {
            parse_exp(exp)?;
        }
        let ext = take(&mut pairs, "ext");
        if let Some(ext) = &ext {
            validate_ext(ext)?;
        }
        reject_reserved(&pairs)?;
        return Ok(ParsedLink {
            kind,
            format: LinkFormat::V2Signed,
            key,
            body: Body::V2Signed { target, exp, ext, sig },
            params: pairs,
        });
    }
    Err(ProtocolError::MissingLinkParams)
}

/// The replaced system's formats, read as it read them: the last of a repeated field counts, and in each mode
/// only that mode's fields are the link's (in `signed` mode a `d` is a param, in `encrypted` mode `url` and `sig`
/// are). A short link's `sig` is optional.
fn parse_v1(
    kind: LinkKind,
    short_target: impl FnOnce() -> Result<String, ProtocolError>,
    mut pairs: Vec<(String, String)>,
    v1_mode: V1Mode,
) -> Result<ParsedLink, ProtocolError> {
    let has = |pairs: &[(String, String)], name: &str| pairs.iter().any(|(k, _)| k == name);
    match kind {
        LinkKind::Short => {
            let Some(sig) = take_last(&mut pairs, "sig") else {
                return Ok(ParsedLink {
                    kind,
                    format: LinkFormat::V1ShortUnsigned,
                    key: KeyRef::Unsigned,
                    body: Body::Unsigned { target: short_target()? },
                    params: pairs,
                });
            };
            let (key, sig) = parse_v1_sig(&sig)?;
            let target = short_target()?;
            Ok(ParsedLink {
                kind,
                format: LinkFormat::V1Short,
                key,
                body: Body::V1Signed { target, sig },
                params: pairs,
            })
        }
        LinkKind::Click => {
            let signed = match v1_mode {
                V1Mode::Signed => true,
                V1Mode::Encrypted => false,
                V1Mode::Any => has(&pairs, "sig") || !has(&pairs, "d"),
            };
            if !signed {
                let Some(d) = take_last(&mut pairs, "d") else {
                    let signed_link = has(&pairs, "url") && has(&pairs, "sig");
                    return Err(if signed_link {
                        ProtocolError::LinkFormatDisabled { format: "signed" }
                    } else {
                        ProtocolError::MissingLinkParams
                    });
                };
                let blob = decode_blob(&d)?;
                return Ok(ParsedLink {
                    kind,
                    format: LinkFormat::V1Encrypted,
                    key: KeyRef::Global,
                    body: Body::Encrypted { blob },
                    params: pairs,
                });
            }
            let (url, sig) = (take_last(&mut pairs, "url"), take_last(&mut pairs, "sig"));
            let (Some(url), Some(sig)) = (url, sig) else {
                return Err(match (v1_mode, has(&pairs, "d")) {
                    (V1Mode::Signed, true) => ProtocolError::LinkFormatDisabled { format: "encrypted" },
                    _ => ProtocolError::MissingLinkParams,
                });
            };
            let (key, sig) = parse_v1_sig(&sig)?;
            Ok(ParsedLink {
                kind,
                format: LinkFormat::V1Signed,
                key,
                body: Body::V1Signed { target: url, sig },
                params: pairs,
            })
        }
        LinkKind::Postback | LinkKind::Impression => Err(ProtocolError::MissingLinkParams),
    }
}

fn parse_v1_sig(sig: &str) -> Result<(KeyRef, [u8; 32]), ProtocolError> {
    let (key, hex_sig) = match sig.split_once('_') {
        Some((prefix, hex_sig)) => {
            if !is_valid_key_prefix(prefix) {
                return Err(ProtocolError::MalformedSignature { reason: "the part before _ must be a key prefix" });
            }
            (KeyRef::Tenant { key_prefix: prefix.to_owned(), kid: None }, hex_sig)
        }
        None => (KeyRef::Global, sig),
    };
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut out)
        .map_err(|_| ProtocolError::MalformedSignature { reason: "sig must be 64 hex characters" })?;
    Ok((key, out))
}

fn decode_b64_sig(s: &str) -> Result<[u8; 32], ProtocolError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ProtocolError::MalformedSignature { reason: "s must be base64url without padding" })?;
    bytes.try_into().map_err(|_| ProtocolError::MalformedSignature { reason: "s must encode 32 bytes" })
}

fn decode_blob(s: &str) -> Result<Vec<u8>, ProtocolError> {
    let blob = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ProtocolError::MalformedCiphertext { reason: "not base64url without padding" })?;
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(ProtocolError::MalformedCiphertext { reason: "shorter than nonce and tag" });
    }
    Ok(blob)
}

fn parse_exp(exp: &str) -> Result<i64, ProtocolError> {
    let canonical =
        !exp.is_empty() && exp.len() <= 12 && exp.bytes().all(|b| b.is_ascii_digit()) && !exp.starts_with('0');
    if !canonical {
        return Err(ProtocolError::InvalidExpiry);
    }
    exp.parse().map_err(|_| ProtocolError::InvalidExpiry)
}

fn validate_ext(ext: &str) -> Result<(), ProtocolError> {
    for name in ext.split(',') {
        if !is_valid_name(name, 64) || RESERVED_PARAMS.contains(&name) {
            return Err(ProtocolError::ReservedParam { name: name.to_owned() });
        }
    }
    Ok(())
}

fn ext_names(ext: Option<&str>) -> BTreeSet<&str> {
    ext.map(|e| e.split(',').collect()).unwrap_or_default()
}

fn netstring(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(field.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(field.as_bytes());
    out.push(b',');
}

/// The exact bytes a v2 signature covers (see the crate docs): `TRK2` then netstrings of kind, key prefix, kid,
/// target, exp, ext, the number of signed params, and each signed param's key and value sorted by key.
pub fn v2_message(
    kind: LinkKind,
    key_prefix: &str,
    kid: &str,
    target: &str,
    exp: Option<&str>,
    ext: Option<&str>,
    signed_params: &[(&str, &str)],
) -> Vec<u8> {
    let mut sorted = signed_params.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(64 + target.len());
    out.extend_from_slice(b"TRK2");
    for f in [kind.as_str(), key_prefix, kid, target, exp.unwrap_or(""), ext.unwrap_or("")] {
        netstring(&mut out, f);
    }
    netstring(&mut out, &sorted.len().to_string());
    for (k, v) in sorted {
        netstring(&mut out, k);
        netstring(&mut out, v);
    }
    out
}

fn v2_aad(kind: LinkKind, key_prefix: &str, kid: &str) -> Vec<u8> {
    let mut out = b"TRK2E".to_vec();
    for f in [kind.as_str(), key_prefix, kid] {
        netstring(&mut out, f);
    }
    out
}

impl ParsedLink {
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    pub fn format(&self) -> LinkFormat {
        self.format
    }

    /// Whose keys the caller must fetch before [`ParsedLink::verify`].
    pub fn key_ref(&self) -> &KeyRef {
        &self.key
    }

    /// Checks the signature or decrypts, then the expiry. `keys` are the keys of [`ParsedLink::key_ref`]; retired
    /// keys are ignored. Comparisons are constant-time.
    pub fn verify(self, keys: &[LinkKey], now_ms: i64) -> Result<VerifiedLink, ProtocolError> {
        let (key_prefix, wanted_kid) = match &self.key {
            KeyRef::Unsigned => {
                let Body::Unsigned { target } = self.body else { return Err(ProtocolError::MissingLinkParams) };
                let (params, shadowed) = last_wins(self.params);
                return Ok(VerifiedLink {
                    format: self.format,
                    key_prefix: None,
                    kid: String::new(),
                    target,
                    params,
                    shadowed,
                    expires_at: None,
                });
            }
            KeyRef::Global => (None, None),
            KeyRef::Tenant { key_prefix, kid } => (Some(key_prefix.clone()), kid.as_deref()),
        };
        let active: Vec<&LinkKey> =
            keys.iter().filter(|k| k.is_active(now_ms)).filter(|k| wanted_kid.is_none_or(|w| k.kid == w)).collect();
        if active.is_empty() {
            return Err(match (&self.key, wanted_kid) {
                (KeyRef::Global, _) if self.format == LinkFormat::V1Encrypted => {
                    ProtocolError::GlobalKeyNotConfigured { what: "ENCRYPTION_KEY" }
                }
                (KeyRef::Global | KeyRef::Unsigned, _) => ProtocolError::GlobalKeyNotConfigured { what: "HMAC_SECRET" },
                (_, Some(kid)) => ProtocolError::UnknownKeyId { kid: kid.to_owned() },
                (KeyRef::Tenant { key_prefix, .. }, None) => {
                    ProtocolError::UnknownTenant { key_prefix: key_prefix.clone() }
                }
            });
        }
        let ParsedLink { kind, format, key: _, body, params } = self;
        match body {
            Body::Unsigned { .. } => Err(ProtocolError::MissingLinkParams),
            Body::V1Signed { target, sig } => {
                let key = active
                    .iter()
                    .find(|k| k.signer().is_some_and(|m| m.chain_update(target.as_bytes()).verify_slice(&sig).is_ok()))
                    .ok_or(ProtocolError::InvalidSignature)?;
                let (params, shadowed) = last_wins(params);
                Ok(VerifiedLink {
                    format,
                    key_prefix,
                    kid: key.kid.clone(),
                    target,
                    params,
                    shadowed,
                    expires_at: None,
                })
            }
            Body::V2Signed { target, exp, ext, sig } => {
                let kp = key_prefix.as_deref().unwrap_or_default();
                let key = active.first().ok_or(ProtocolError::InvalidSignature)?;
                let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let extra = ext_names(ext.as_deref());
                let signed: Vec<(&str, &str)> = borrowed.iter().copied().filter(|(k, _)| !extra.contains(k)).collect();
                let msg = v2_message(kind, kp, &key.kid, &target, exp.as_deref(), ext.as_deref(), &signed);
                let ok = key.signer().is_some_and(|m| m.chain_update(&msg).verify_slice(&sig).is_ok());
                if !ok {
                    return Err(ProtocolError::InvalidSignature);
                }
                let expires_at = exp.as_deref().map(parse_exp).transpose()?;
                check_expiry(expires_at, now_ms)?;
                Ok(VerifiedLink {
                    format,
                    key_prefix,
                    kid: key.kid.clone(),
                    target,
                    params: params.into_iter().collect(),
                    shadowed: Vec::new(),
                    expires_at,
                })
            }
            Body::Encrypted { blob } => {
                let (nonce, ct) = blob.split_at(NONCE_LEN);
                let aad = match format {
                    LinkFormat::V2Encrypted => {
                        v2_aad(kind, key_prefix.as_deref().unwrap_or_default(), wanted_kid.unwrap_or_default())
                    }
                    _ => Vec::new(),
                };
                let (key, plain) = active
                    .iter()
                    .filter_map(|k| Some((k, k.encryption_key.as_ref()?)))
                    .find_map(|(k, aes)| {
                        let cipher = Aes256Gcm::new_from_slice(aes).ok()?;
                        let plain = cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad }).ok()?;
                        Some((k, plain))
                    })
                    .ok_or(ProtocolError::DecryptionFailed)?;
                let plain = String::from_utf8(plain)
                    .map_err(|_| ProtocolError::MalformedCiphertext { reason: "plaintext is not UTF-8" })?;
                if format == LinkFormat::V1Encrypted {
                    let (params, shadowed) = last_wins(params);
                    return Ok(VerifiedLink {
                        format,
                        key_prefix,
                        kid: key.kid.clone(),
                        target: plain,
                        params,
                        shadowed,
                        expires_at: None,
                    });
                }
                let mut inner = parse_query(&plain)?;
                let target = take(&mut inner, "url").ok_or(ProtocolError::MissingLinkParams)?;
                let expires_at = take(&mut inner, "exp").as_deref().map(parse_exp).transpose()?;
                let ext = take(&mut inner, "ext");
                let extra = ext_names(ext.as_deref());
                reject_reserved(&inner)?;
                if let Some((name, _)) = params.iter().find(|(k, _)| !extra.contains(k.as_str())) {
                    return Err(ProtocolError::UnsignedParam { name: name.clone() });
                }
                check_expiry(expires_at, now_ms)?;
                let mut all: BTreeMap<String, String> = inner.into_iter().collect();
                for (k, v) in params {
                    if all.contains_key(&k) {
                        return Err(ProtocolError::DuplicateParam { name: k });
                    }
                    all.insert(k, v);
                }
                Ok(VerifiedLink {
                    format,
                    key_prefix,
                    kid: key.kid.clone(),
                    target,
                    params: all,
                    shadowed: Vec::new(),
                    expires_at,
                })
            }
        }
    }
}

fn check_expiry(expires_at: Option<i64>, now_ms: i64) -> Result<(), ProtocolError> {
    match expires_at {
        Some(exp) if now_ms / 1000 >= exp => Err(ProtocolError::LinkExpired),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Building links (CLI, SDKs, tests, test vectors).

fn path_for(kind: LinkKind, short_id: &str) -> String {
    match kind {
        LinkKind::Click => "/t".to_owned(),
        LinkKind::Short => format!("/t/{short_id}"),
        LinkKind::Postback => "/p".to_owned(),
        LinkKind::Impression => "/i".to_owned(),
    }
}

fn url_with(base: &str, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{}{}?{}", base.trim_end_matches('/'), path, ser.finish())
}

fn hmac_bytes(secret: &str, msg: &[u8]) -> Result<[u8; 32], ProtocolError> {
    if secret.is_empty() {
        return Err(ProtocolError::MalformedSignature { reason: "the secret is empty" });
    }
    let mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|_| ProtocolError::MalformedSignature { reason: "the secret is unusable" })?;
    Ok(mac.chain_update(msg).finalize().into_bytes().into())
}

fn check_params(params: &[(&str, &str)]) -> Result<(), ProtocolError> {
    let mut seen = BTreeSet::new();
    for (k, _) in params {
        if RESERVED_PARAMS.contains(k) {
            return Err(ProtocolError::ReservedParam { name: (*k).to_owned() });
        }
        if !seen.insert(*k) {
            return Err(ProtocolError::DuplicateParam { name: (*k).to_owned() });
        }
    }
    Ok(())
}

/// The v1 signature value: `[<key_prefix>_]<lowercase hex HMAC-SHA256(secret, message)>`.
pub fn v1_signature(secret: &str, key_prefix: Option<&str>, message: &str) -> Result<String, ProtocolError> {
    let hex_sig = hex::encode(hmac_bytes(secret, message.as_bytes())?);
    Ok(match key_prefix {
        Some(p) => format!("{p}_{hex_sig}"),
        None => hex_sig,
    })
}

/// `<base>/t?url=<dest>&sig=[<kp>_]<hex>&<params>` (v1 signed click).
pub fn v1_signed_url(
    base: &str,
    secret: &str,
    key_prefix: Option<&str>,
    destination: &str,
    params: &[(&str, &str)],
) -> Result<String, ProtocolError> {
    check_params(params)?;
    let sig = v1_signature(secret, key_prefix, destination)?;
    let mut pairs = vec![("url", destination), ("sig", sig.as_str())];
    pairs.extend_from_slice(params);
    Ok(url_with(base, "/t", &pairs))
}

/// `<base>/t/<tu_id>?sig=[<kp>_]<hex HMAC(secret, tu_id)>&<params>` (v1 short link).
pub fn v1_short_url(
    base: &str,
    secret: &str,
    key_prefix: Option<&str>,
    tu_id: &str,
    params: &[(&str, &str)],
) -> Result<String, ProtocolError> {
    check_params(params)?;
    if !is_valid_short_id(tu_id) {
        return Err(ProtocolError::InvalidShortLinkId);
    }
    let sig = v1_signature(secret, key_prefix, tu_id)?;
    let mut pairs = vec![("sig", sig.as_str())];
    pairs.extend_from_slice(params);
    Ok(url_with(base, &format!("/t/{tu_id}"), &pairs))
}

fn seal(key: &[u8; 32], nonce: [u8; NONCE_LEN], plain: &[u8], aad: &[u8]) -> Result<String, ProtocolError> {
    let cipher =
        Aes256Gcm::new_from_slice(key).map_err(|_| ProtocolError::MalformedCiphertext { reason: "bad key" })?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| ProtocolError::MalformedCiphertext { reason: "encryption failed" })?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    Ok(URL_SAFE_NO_PAD.encode(blob))
}

/// `<base>/t?d=<base64url(nonce || AES-256-GCM(key, nonce, dest) || tag)>&<params>` (v1 encrypted click).
/// The nonce must be fresh randomness for every link.
pub fn v1_encrypted_url(
    base: &str,
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    destination: &str,
    params: &[(&str, &str)],
) -> Result<String, ProtocolError> {
    check_params(params)?;
    let d = seal(key, nonce, destination.as_bytes(), &[])?;
    let mut pairs = vec![("d", d.as_str())];
    pairs.extend_from_slice(params);
    Ok(url_with(base, "/t", &pairs))
}

/// What a v2 link says, before signing or encryption.
#[derive(Debug, Clone)]
pub struct V2Link<'a> {
    pub kind: LinkKind,
    pub key_prefix: &'a str,
    pub kid: &'a str,
    /// Destination for clicks, `tu_id` for short links, empty otherwise.
    pub target: &'a str,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Param names that may be appended later without a signature (e.g. `gclid` added by an ad network).
    pub ext: &'a [&'a str],
    pub params: &'a [(&'a str, &'a str)],
}

impl V2Link<'_> {
    fn check(&self) -> Result<(Option<String>, Option<String>), ProtocolError> {
        check_params(self.params)?;
        if !is_valid_key_prefix(self.key_prefix) {
            return Err(ProtocolError::InvalidKeyPrefix);
        }
        if !is_valid_kid(self.kid) {
            return Err(ProtocolError::MalformedSignature { reason: "kid must be [a-z0-9]{1,16}" });
        }
        if self.kind == LinkKind::Short && !is_valid_short_id(self.target) {
            return Err(ProtocolError::InvalidShortLinkId);
        }
        let exp = self.expires_at.map(|e| e.to_string());
        if let Some(e) = &exp {
            parse_exp(e)?;
        }
        let ext = (!self.ext.is_empty()).then(|| self.ext.join(","));
        if let Some(e) = &ext {
            validate_ext(e)?;
        }
        if let Some((k, _)) = self.params.iter().find(|(k, _)| self.ext.contains(k)) {
            return Err(ProtocolError::ReservedParam { name: (*k).to_owned() });
        }
        Ok((exp, ext))
    }

    /// The v2 signature (`s`): base64url without padding of HMAC-SHA256(secret, [`v2_message`]).
    pub fn signature(&self, secret: &str) -> Result<String, ProtocolError> {
        let (exp, ext) = self.check()?;
        let msg =
            v2_message(self.kind, self.key_prefix, self.kid, self.target, exp.as_deref(), ext.as_deref(), self.params);
        Ok(URL_SAFE_NO_PAD.encode(hmac_bytes(secret, &msg)?))
    }

    /// `<base><path>?v=2&k=<kp>.<kid>[&url=<dest>][&exp=][&ext=]&<params>&s=<sig>`.
    pub fn signed_url(&self, base: &str, secret: &str) -> Result<String, ProtocolError> {
        let (exp, ext) = self.check()?;
        let sig = self.signature(secret)?;
        let k = format!("{}.{}", self.key_prefix, self.kid);
        let mut pairs = vec![("v", "2"), ("k", k.as_str())];
        if self.kind == LinkKind::Click {
            pairs.push(("url", self.target));
        }
        if let Some(e) = &exp {
            pairs.push(("exp", e));
        }
        if let Some(e) = &ext {
            pairs.push(("ext", e));
        }
        pairs.extend_from_slice(self.params);
        pairs.push(("s", &sig));
        Ok(url_with(base, &path_for(self.kind, self.target), &pairs))
    }

    /// `<base>/t?v=2&k=<kp>.<kid>&e=<base64url(nonce || ciphertext || tag)>` where the plaintext is the
    /// form-encoded `url=<dest>[&exp=][&ext=]&<params>` and the associated data binds kind, tenant and kid.
    pub fn encrypted_url(&self, base: &str, key: &[u8; 32], nonce: [u8; NONCE_LEN]) -> Result<String, ProtocolError> {
        if self.kind != LinkKind::Click {
            return Err(ProtocolError::MissingLinkParams);
        }
        let (exp, ext) = self.check()?;
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("url", self.target);
        if let Some(e) = &exp {
            ser.append_pair("exp", e);
        }
        if let Some(e) = &ext {
            ser.append_pair("ext", e);
        }
        for (k, v) in self.params {
            ser.append_pair(k, v);
        }
        let e = seal(key, nonce, ser.finish().as_bytes(), &v2_aad(self.kind, self.key_prefix, self.kid))?;
        let k = format!("{}.{}", self.key_prefix, self.kid);
        Ok(url_with(base, "/t", &[("v", "2"), ("k", &k), ("e", &e)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_770_704_294_008;
    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key(kid: &str, secret: &str) -> LinkKey {
        LinkKey {
            kid: kid.into(),
            signing_secret: Some(secret.into()),
            encryption_key: Some([9; 32]),
            retires_at_ms: None,
        }
    }

    fn query(url: &str) -> (&str, &str) {
        let (path, q) = url.split_once('?').unwrap();
        (path.trim_start_matches("http://t.example"), q)
    }

    fn verify(kind: LinkKind, url: &str, keys: &[LinkKey], now: i64) -> Result<VerifiedLink, ProtocolError> {
        let (path, q) = query(url);
        let id = path.strip_prefix("/t/");
        parse_link(kind, id, q, V1Mode::Any)?.verify(keys, now)
    }

    #[test]
    fn v1_signed_uses_secret_text_and_decoded_destination() {
        let dest = "https://offer.com/landing?a=1&b=two words";
        let url = v1_signed_url("http://t.example", SECRET, Some("6vct"), dest, &[("sub1", "g")]).unwrap();
        let v = verify(LinkKind::Click, &url, &[key("k1", SECRET)], NOW).unwrap();
        assert_eq!(v.target, dest);
        assert_eq!(v.key_prefix.as_deref(), Some("6vct"));
        assert_eq!(v.params.get("sub1").map(String::as_str), Some("g"));
        // the HMAC key is the text of the secret, not its hex decoding
        let mut mac = <HmacSha256 as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(dest.as_bytes());
        assert!(url.contains(&format!("sig=6vct_{}", hex::encode(mac.finalize().into_bytes()))));
    }

    #[test]
    fn tampering_is_refused() {
        let url = v1_signed_url("http://t.example", SECRET, None, "https://a.com/", &[]).unwrap();
        let bad = url.replace("a.com", "b.com");
        assert_eq!(verify(LinkKind::Click, &bad, &[key("g", SECRET)], NOW), Err(ProtocolError::InvalidSignature));
        assert_eq!(
            verify(LinkKind::Click, &url, &[], NOW),
            Err(ProtocolError::GlobalKeyNotConfigured { what: "HMAC_SECRET" })
        );
    }

    #[test]
    fn v2_covers_params_and_expiry_and_allows_declared_extras() {
        let link = V2Link {
            kind: LinkKind::Click,
            key_prefix: "6vct",
            kid: "k2",
            target: "https://offer.com/?x=1#top",
            expires_at: Some(NOW / 1000 + 60),
            ext: &["gclid"],
            params: &[("campaign", "c1"), ("sub1", "s")],
        };
        let url = link.signed_url("http://t.example", "s3cret").unwrap();
        let keys = [key("k2", "s3cret"), key("k1", "old")];
        let v = verify(LinkKind::Click, &url, &keys, NOW).unwrap();
        assert_eq!(v.target, "https://offer.com/?x=1#top");
        assert_eq!(v.kid, "k2");
        // an ad network appends a declared extra: still valid, and passed through
        let v = verify(LinkKind::Click, &format!("{url}&gclid=abc"), &keys, NOW).unwrap();
        assert_eq!(v.params.get("gclid").map(String::as_str), Some("abc"));
        // changing a signed param or adding an undeclared one breaks it
        let tampered = url.replace("campaign=c1", "campaign=c2");
        assert_eq!(verify(LinkKind::Click, &tampered, &keys, NOW), Err(ProtocolError::InvalidSignature));
        assert_eq!(
            verify(LinkKind::Click, &format!("{url}&other=1"), &keys, NOW),
            Err(ProtocolError::InvalidSignature)
        );
        // expiry
        assert_eq!(verify(LinkKind::Click, &url, &keys, NOW + 61_000), Err(ProtocolError::LinkExpired));
        // the key id must exist and be active
        let retired = [LinkKey { retires_at_ms: Some(NOW), ..key("k2", "s3cret") }];
        assert_eq!(verify(LinkKind::Click, &url, &retired, NOW), Err(ProtocolError::UnknownKeyId { kid: "k2".into() }));
    }

    #[test]
    fn rotation_grace_period_keeps_v1_links_working() {
        let url = v1_signed_url("http://t.example", "old", Some("6vct"), "https://a.com/", &[]).unwrap();
        let keys = [key("k2", "new"), LinkKey { retires_at_ms: Some(NOW + 1000), ..key("k1", "old") }];
        assert_eq!(verify(LinkKind::Click, &url, &keys, NOW).unwrap().kid, "k1");
        assert_eq!(verify(LinkKind::Click, &url, &keys, NOW + 1000), Err(ProtocolError::InvalidSignature));
    }

    #[test]
    fn encrypted_formats_round_trip_and_bind_the_tenant() {
        let aes = [9u8; 32];
        let url = v1_encrypted_url("http://t.example", &aes, [1; 12], "https://hidden.com/x", &[("s", "1")]);
        assert_eq!(url.unwrap_err().code(), "reserved_param");
        let url = v1_encrypted_url("http://t.example", &aes, [1; 12], "https://hidden.com/x", &[("sub", "1")]).unwrap();
        let v = verify(LinkKind::Click, &url, &[key("global", SECRET)], NOW).unwrap();
        assert_eq!(v.target, "https://hidden.com/x");
        assert_eq!(v.format, LinkFormat::V1Encrypted);

        let link = V2Link {
            kind: LinkKind::Click,
            key_prefix: "6vct",
            kid: "k1",
            target: "https://hidden.com/y",
            expires_at: None,
            ext: &["gclid"],
            params: &[("campaign", "c1")],
        };
        let url = link.encrypted_url("http://t.example", &aes, [2; 12]).unwrap();
        let v = verify(LinkKind::Click, &format!("{url}&gclid=z"), &[key("k1", SECRET)], NOW).unwrap();
        assert_eq!(v.target, "https://hidden.com/y");
        assert_eq!(v.params.len(), 2);
        assert_eq!(
            verify(LinkKind::Click, &format!("{url}&campaign=c9"), &[key("k1", SECRET)], NOW),
            Err(ProtocolError::UnsignedParam { name: "campaign".into() })
        );
        // the same blob presented as another tenant does not decrypt
        let other = url.replace("k=6vct.k1", "k=zzzz.k1");
        assert_eq!(verify(LinkKind::Click, &other, &[key("k1", SECRET)], NOW), Err(ProtocolError::DecryptionFailed));
    }

    #[test]
    fn short_links_sign_the_id() {
        let id = "tu_019c3f8d-aa19-7261-a5d6-9aa75cea309d";
        let url = v1_short_url("http://t.example", SECRET, Some("6vct"), id, &[("sub1", "x")]).unwrap();
        let v = verify(LinkKind::Short, &url, &[key("k1", SECRET)], NOW).unwrap();
        assert_eq!(v.target, id);
        let other = url.replace("9aa75cea309d", "9aa75cea3090");
        assert_eq!(verify(LinkKind::Short, &other, &[key("k1", SECRET)], NOW), Err(ProtocolError::InvalidSignature));
    }

    #[test]
    fn syntax_errors_have_precise_codes() {
        let code = |kind, q: &str| parse_link(kind, None, q, V1Mode::Signed).unwrap_err().code();
        assert_eq!(code(LinkKind::Click, ""), "missing_link_params");
        assert_eq!(code(LinkKind::Click, "v=2&k=6vct.k1&url=a&url=b&s=x"), "duplicate_param");
        // v1 links keep the last of a repeated field, as the replaced system did
        assert_eq!(code(LinkKind::Click, "url=a&url=b&sig=00"), "malformed_signature");
        assert_eq!(code(LinkKind::Click, "url=a&sig=zz"), "malformed_signature");
        assert_eq!(code(LinkKind::Click, "url=a&sig=BAD_00"), "malformed_signature");
        assert_eq!(code(LinkKind::Click, "d=AAAA"), "link_format_disabled");
        assert_eq!(code(LinkKind::Click, "v=3"), "unsupported_link_version");
        assert_eq!(code(LinkKind::Click, "v=2&k=6vct.k1&url=x&s=AAAA"), "malformed_signature");
        assert_eq!(code(LinkKind::Short, "sig=00"), "malformed_signature");
    }
}
