//! # The tracking protocol
//!
//! One source of truth for the edge Worker (wasm32) and the core node (native): the event model and its limits,
//! link signing and encryption, redirect building, batch authentication and the log's wire format. The crate is
//! pure: no I/O, no clock, no OS randomness. Callers pass `now` and random bytes in.
//!
//! ## Link formats, byte by byte
//!
//! All links are query strings decoded as `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte).
//! Parameters that are not part of the format are event params.
//!
//! The v1 formats are those of the system this one replaces, with links of it in circulation. They are read
//! as it read them: a query with `sig` or `d` is v1 (v2 never writes either), so a param that happens to be named
//! like a v2 field (`v`, `k`, `s`, `e`, `exp`, `ext`) stays a param; of a repeated name the last value counts; in
//! `signed` mode only `url` and `sig` are the link's (a `d` is a param), in `encrypted` mode only `d`; a short link's
//! `sig` is optional (for short links imported from that system). Params an event cannot hold are kept raw in it
//! ([`v1::fit`]). In v2 a parameter name may appear only once, and the names `v k s e d url sig exp ext` are
//! reserved.
//!
//! ### V1 signed click (compatible with links in circulation)
//! `GET /t?url=<dest>&sig=[<key_prefix>_]<hex>&<params>`
//! - `hex` = lowercase hex of HMAC-SHA256(key = the secret string's UTF-8 bytes, message = `<dest>` after query
//!   decoding). A 64-hex-character secret is used as text, not hex-decoded.
//! - Without a prefix the server's global `HMAC_SECRET` verifies; with one, any active key of that tenant.
//!
//! ### V1 encrypted click
//! `GET /t?d=<base64url-nopad(nonce[12] || ciphertext || tag[16])>&<params>`
//! - AES-256-GCM with the global `ENCRYPTION_KEY` (32 bytes written as 64 hex characters), no associated data;
//!   the plaintext is the destination URL in UTF-8.
//!
//! ### V1 short link
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

pub mod client_ip;
pub mod dashboard;
mod error;
pub mod event;
pub mod intake;
pub mod links;
pub mod matching;
pub mod origins;
pub mod quota;
pub mod redirect;
pub mod script;
mod secret;
pub mod service;
pub mod session;
pub mod settings;
pub mod v1;
pub mod webhook;
pub mod wire;

pub use error::ProtocolError;
pub use event::{
    Auth, Event, EventInput, IntakeContext, Limits, RawJson, build_event, is_valid_key_prefix, is_valid_name,
    new_event_id, parse_event_id, partition_for, truncate_field,
};
pub use links::{
    KeyRef, LinkFormat, LinkKey, LinkKind, ParsedLink, V1Mode, V2Link, VerifiedLink, parse_encryption_key, parse_link,
};
pub use redirect::{CLICK_ID_PARAM, build_redirect, check_redirectable, validate_destination};
pub use secret::Secret;
pub use uuid::Uuid;

/// Entry points shared by the property tests and the `cargo fuzz` targets (`core/tracker-protocol/fuzz`): every
/// parser of untrusted input, driven with arbitrary bytes. They must never panic.
#[doc(hidden)]
pub mod fuzzing {
    use crate::links::{LinkKind, V1Mode, parse_link};
    use crate::{Limits, LinkKey};

    const KINDS: [LinkKind; 4] = [LinkKind::Click, LinkKind::Short, LinkKind::Postback, LinkKind::Impression];
    const MODES: [V1Mode; 3] = [V1Mode::Signed, V1Mode::Encrypted, V1Mode::Any];

    pub fn link(data: &[u8]) {
        let Some((&selector, rest)) = data.split_first() else {
            return;
        };
        let text = String::from_utf8_lossy(rest);
        let (path_id, query) = text.split_once('?').unwrap_or(("", &text));
        let kind = KINDS.get(usize::from(selector % 4)).copied().unwrap_or(LinkKind::Click);
        let mode = MODES.get(usize::from(selector / 4 % 3)).copied().unwrap_or_default();
        let keys = [LinkKey {
            kid: "k1".into(),
            signing_secret: Some("secret".into()),
            encryption_key: Some([1; 32]),
            retires_at_ms: None,
        }];
        if let Ok(parsed) = parse_link(kind, Some(path_id), query, mode) {
            let _ = parsed.verify(&keys, 1_770_704_294_008);
        }
    }

    pub fn redirect(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = crate::build_redirect(&text, &uuid::Uuid::from_u128(1));
    }

    pub fn record_set(data: &[u8]) {
        let _ = crate::wire::decode_record_set(data);
        let _ = crate::wire::decode_event(data);
    }

    pub fn event_json(data: &[u8]) {
        if let Ok(input) = crate::EventInput::from_json(data) {
            let ctx = crate::IntakeContext { key_prefix: "fuzz", received_at: 1_770_704_294_008, ..Default::default() };
            let _ = crate::build_event(input, &ctx, &Limits::default(), [0; 10]);
        }
        if let Ok(event) = serde_json::from_slice::<crate::Event>(data) {
            let _ = event.validate(&Limits::default());
        }
    }

    pub fn batch_signature(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = crate::intake::verify_batch(&[b"secret".to_vec()], &text, 0, &text, data);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use crate::links::{LinkKind, V1Mode, parse_link};
    use crate::{Auth, Event, LinkKey, RawJson, V2Link, build_redirect, fuzzing, wire};

    const NOW: i64 = 1_770_704_294_008;

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,12}".prop_filter("not reserved", |n| !crate::links::RESERVED_PARAMS.contains(&n.as_str()))
    }

    fn key() -> LinkKey {
        LinkKey {
            kid: "k1".into(),
            signing_secret: Some("s3cret".into()),
            encryption_key: Some([3; 32]),
            retires_at_ms: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzzing::link(&data);
            fuzzing::redirect(&data);
            fuzzing::record_set(&data);
            fuzzing::event_json(&data);
            fuzzing::batch_signature(&data);
        }

        #[test]
        fn query_like_inputs_never_panic(q in "[a-z=&%0-9A-F_.+~-]{0,200}", kind in 0u8..12) {
            fuzzing::link(&[&[kind][..], q.as_bytes()].concat());
        }

        #[test]
        fn v2_links_verify_and_any_param_change_is_refused(
            params in proptest::collection::btree_map(name(), "\\PC{0,20}", 0..6),
            path in "[a-z0-9/._~-]{0,30}",
            tamper in any::<proptest::sample::Index>(),
        ) {
            let dest = format!("https://shop.example/{path}");
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let link = V2Link {
                kind: LinkKind::Click, key_prefix: "6vct", kid: "k1", target: &dest,
                expires_at: None, ext: &[], params: &pairs,
            };
            let url = link.signed_url("https://t.example", "s3cret").unwrap();
            let query = url.split_once('?').unwrap().1;
            let parsed = parse_link(LinkKind::Click, None, query, V1Mode::Signed).unwrap();
            let verified = parsed.verify(&[key()], NOW).unwrap();
            prop_assert_eq!(&verified.target, &dest);
            prop_assert_eq!(&verified.params, &params);
            if !pairs.is_empty() {
                let (k, v) = pairs[tamper.index(pairs.len())];
                let mut changed: Vec<(&str, String)> = pairs.iter().map(|(a, b)| (*a, b.to_string())).collect();
                let i = changed.iter().position(|(a, _)| *a == k).unwrap();
                changed[i].1 = format!("{v}x");
                let mut ser = form_urlencoded::Serializer::new(String::new());
                for (a, b) in [("v", "2"), ("k", "6vct.k1"), ("url", dest.as_str())] { ser.append_pair(a, b); }
                for (a, b) in &changed { ser.append_pair(a, b); }
                let sig = form_urlencoded::parse(query.as_bytes()).find(|(a, _)| a == "s").unwrap().1.into_owned();
                ser.append_pair("s", &sig);
                let parsed = parse_link(LinkKind::Click, None, &ser.finish(), V1Mode::Signed).unwrap();
                let tampered = parsed.verify(&[key()], NOW);
                prop_assert_eq!(tampered.unwrap_err(), crate::ProtocolError::InvalidSignature);
            }
        }

        #[test]
        fn redirects_carry_exactly_one_click_id_and_keep_the_fragment(
            path in "[a-zA-Z0-9/._~%-]{0,30}",
            query in proptest::option::of("[a-z0-9=&_]{0,30}"),
            fragment in proptest::option::of("[a-z0-9?=&]{0,10}"),
        ) {
            let mut dest = format!("https://a.example/{path}");
            if let Some(q) = &query { dest.push('?'); dest.push_str(q); }
            if let Some(f) = &fragment { dest.push('#'); dest.push_str(f); }
            let id = uuid::Uuid::from_u128(42);
            let loc = build_redirect(&dest, &id).unwrap();
            prop_assert_eq!(loc.matches("ad_click_id=").count(), 1);
            prop_assert!(loc.starts_with("https://a.example/"));
            match &fragment {
                Some(f) => { let tail = format!("#{}", f); prop_assert!(loc.ends_with(&tail)) }
                None => prop_assert!(!loc.contains('#')),
            }
        }

        #[test]
        fn wire_round_trips(
            params in proptest::collection::btree_map("\\PC{0,10}", "\\PC{0,30}", 0..8),
            ua in proptest::option::of("\\PC{0,40}"),
            ts in 946_684_800_000i64..4_000_000_000_000,
            raw in proptest::option::of(Just(r#"{"a":[1,true,null]}"#)),
            auth in 0u8..5,
            n in any::<u128>(),
        ) {
            let e = Event {
                event_id: uuid::Uuid::from_u128(n), event_type: "x".into(), timestamp: ts, received_at: ts + 1,
                key_prefix: "6vct".into(), ip: None, user_agent: ua, referer: Some("r".into()), accept_language: None,
                request_path: None, request_host: Some("h".into()), params,
                raw_payload: raw.map(|r| RawJson::parse(r).unwrap()), auth: Auth::from_u8(auth).unwrap(),
                historical: n % 2 == 0, overflow: n % 3 == 0,
            };
            let buf = wire::encode_record_set(std::slice::from_ref(&e));
            prop_assert_eq!(wire::decode_record_set(&buf).unwrap(), vec![e]);
        }
    }
}
