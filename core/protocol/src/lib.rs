//! # The tracking protocol
//!
//! One source of truth for the edge Worker (wasm32) and the core node (native): the event model and its limits,
//! link signing and encryption, redirect building, batch authentication and the log's wire format. The crate is
//! pure: no I/O, no clock, no OS randomness. Callers pass `now` and random bytes in.
//!
//! ## Link formats, byte by byte
//!
//! All links are query strings decoded as `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte).
//! A parameter name may appear only once. Parameters that are not part of the format are event params.
//! Reserved names: `v k s e d url sig exp ext`.
//!
//! ### Seed signed click (compatible with links in circulation)
//! `GET /t?url=<dest>&sig=[<key_prefix>_]<hex>&<params>`
//! - `hex` = lowercase hex of HMAC-SHA256(key = the secret string's UTF-8 bytes, message = `<dest>` after query
//!   decoding). A 64-hex-character secret is used as text, not hex-decoded.
//! - Without a prefix the server's global `HMAC_SECRET` verifies; with one, any active key of that tenant.
//!
//! ### Seed encrypted click
//! `GET /t?d=<base64url-nopad(nonce[12] || ciphertext || tag[16])>&<params>`
//! - AES-256-GCM with the global `ENCRYPTION_KEY` (32 bytes written as 64 hex characters), no associated data;
//!   the plaintext is the destination URL in UTF-8.
//!
//! ### Seed short link
//! `GET /t/<tu_id>?sig=[<key_prefix>_]<hex HMAC-SHA256(secret, tu_id)>&<params>` where `tu_id` is `tu_<uuid>`.
//! The destination is looked up server-side and must belong to the tenant that signed.
//!
//! ### v2 signed (the default for new links)
//! `GET /t?v=2&k=<key_prefix>.<kid>&url=<dest>[&exp=<unix seconds>][&ext=<name,name>]&<params>&s=<sig>`
//! (also `/t/<tu_id>?v=2&…` without `url`, and `/p`, `/i` for authenticated postbacks and impressions).
//! - `sig` = base64url-nopad(HMAC-SHA256(secret, M)) where M is the bytes `TRK2` followed by netstrings
//!   (`<decimal byte length>:<bytes>,`) of: kind (`click`, `short`, `postback`, `impression`), key prefix, kid,
//!   target (destination, `tu_id`, or empty), exp (as written, or empty), ext (as written, or empty), the number
//!   of signed params in decimal, then key and value of each signed param sorted by key bytes.
//! - Signed params are all params except those named in `ext`, which may be appended later unsigned (for example
//!   `gclid` added by an ad network). Changing, removing or adding any other param breaks the signature.
//! - `exp` is canonical decimal Unix seconds (no sign, no leading zero); the link is refused from that second on.
//! - `kid` names the tenant key (`[a-z0-9]{1,16}`); during a rotation's grace period old and new kids both verify.
//!
//! ### v2 encrypted
//! `GET /t?v=2&k=<key_prefix>.<kid>&e=<base64url-nopad(nonce[12] || ciphertext || tag[16])>[&<ext params>]`
//! - AES-256-GCM with the tenant key `kid`; associated data = `TRK2E` + netstrings of `click`, key prefix, kid
//!   (so a blob cannot be replayed under another tenant or key); plaintext = form-encoded
//!   `url=<dest>[&exp=…][&ext=…]&<params>`. Outer params are allowed only if named in `ext`.
//!
//! Test vectors for all formats live in `tests/vectors/links.json` at the repository root.

mod error;
pub mod event;
pub mod intake;
pub mod links;
pub mod redirect;
pub mod wire;

pub use error::ProtocolError;
pub use event::{
    Auth, Event, EventInput, IntakeContext, Limits, RawJson, build_event, is_valid_key_prefix,
    is_valid_name, new_event_id, parse_event_id, partition_for, truncate_field,
};
pub use links::{
    KeyRef, LinkFormat, LinkKey, LinkKind, ParsedLink, SeedMode, V2Link, VerifiedLink,
    parse_encryption_key, parse_link,
};
pub use redirect::{CLICK_ID_PARAM, build_redirect, validate_destination};
pub use uuid::Uuid;
