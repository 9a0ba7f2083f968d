//! The SDK against the platform's test vectors (`tests/vectors/links.json`): every link built byte for byte, and
//! every webhook case judged as recorded.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use serde_json::Value;
use tracker_sdk::links::{self, Key, LinkOptions};
use tracker_sdk::webhook;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/links.json");
const BASE: &str = "https://track.example";

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap()
}

fn key_for(v: &Value, build: &Value) -> Key {
    let prefix = build["key_prefix"].as_str().unwrap_or("");
    if build["kid"] == "global" {
        let g = &v["keys"]["global"];
        return Key::new(prefix, "global")
            .with_secret(g["hmac_secret"].as_str().unwrap())
            .with_encryption_key(g["encryption_key"].as_str().unwrap());
    }
    let k = v["keys"][prefix].as_array().unwrap().iter().find(|k| k["kid"] == build["kid"]).unwrap();
    let mut key = Key::new(prefix, k["kid"].as_str().unwrap()).with_secret(k["signing_secret"].as_str().unwrap());
    if let Some(aes) = k["encryption_key"].as_str() {
        key = key.with_encryption_key(aes);
    }
    key
}

fn secret_of(v: &Value, build: &Value) -> String {
    if build["kid"] == "global" {
        return v["keys"]["global"]["hmac_secret"].as_str().unwrap().to_owned();
    }
    let prefix = build["key_prefix"].as_str().unwrap();
    let k = v["keys"][prefix].as_array().unwrap().iter().find(|k| k["kid"] == build["kid"]).unwrap();
    k["signing_secret"].as_str().unwrap().to_owned()
}

fn nonce(b: &Value) -> [u8; 12] {
    hex::decode(b["nonce"].as_str().unwrap()).unwrap().try_into().unwrap()
}

#[test]
fn every_link_in_the_vectors_is_built_byte_for_byte() {
    let v = vectors();
    let builds = v["builds"].as_array().unwrap();
    assert!(builds.len() >= 8);
    assert!(builds.iter().any(|b| b["kind"] == "impression"), "the vectors have pixel builds");
    for b in builds {
        let key = key_for(&v, b);
        let mut options = LinkOptions::new()
            .params(b["params"].as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap())));
        for name in b["ext"].as_array().into_iter().flatten() {
            options = options.ext(name.as_str().unwrap());
        }
        if let Some(exp) = b["expires_at"].as_i64() {
            options = options.expires_at(exp);
        }
        let target = b["target"].as_str().unwrap();
        let prefix = b["key_prefix"].as_str();
        let url = match (b["format"].as_str().unwrap(), b["kind"].as_str().unwrap()) {
            ("v2_signed", "click") => links::click_url(BASE, &key, target, &options),
            ("v2_signed", "short") => links::short_link_url(BASE, &key, target, &options),
            ("v2_signed", "postback") => links::postback_url(BASE, &key, &options),
            ("v2_signed", "impression") => links::pixel_url(BASE, &key, &options),
            ("v2_encrypted", _) => links::encrypted_click_url_with_nonce(BASE, &key, target, &options, nonce(b)),
            ("v1_signed", _) => links::v1_signed_click_url(BASE, &secret_of(&v, b), prefix, target, &options),
            ("v1_short", _) => links::v1_short_link_url(BASE, &secret_of(&v, b), prefix, target, &options),
            ("v1_encrypted", _) => {
                let aes = v["keys"]["global"]["encryption_key"].as_str().unwrap();
                links::v1_encrypted_click_url_with_nonce(BASE, aes, target, &options, nonce(b))
            }
            other => panic!("unknown build {other:?}"),
        };
        assert_eq!(url.unwrap(), b["url"].as_str().unwrap(), "{}", b["name"]);
    }
}

#[test]
fn links_the_platform_would_refuse_are_refused_with_its_codes() {
    let key = Key::new("acme", "k1").with_secret("s");
    let dest = "https://a.example/";
    let code = |r: Result<String, tracker_sdk::Error>| r.unwrap_err().code().unwrap().to_owned();
    assert_eq!(code(links::click_url(BASE, &key, dest, &LinkOptions::new().param("sig", "x"))), "reserved_param");
    let repeated = LinkOptions::new().param("a", "1").param("a", "2");
    assert_eq!(code(links::click_url(BASE, &key, dest, &repeated)), "duplicate_param");
    assert_eq!(code(links::short_link_url(BASE, &key, "tu_nope", &LinkOptions::new())), "invalid_short_link_id");
    let bad_prefix = Key::new("A", "k1").with_secret("s");
    assert_eq!(code(links::click_url(BASE, &bad_prefix, dest, &LinkOptions::new())), "invalid_key_prefix");
    assert_eq!(code(links::encrypted_click_url(BASE, &key, dest, &LinkOptions::new())), "malformed_ciphertext");
}

#[test]
fn destinations_a_click_would_refuse_make_no_link() {
    let v = vectors();
    let key = Key::new("acme", "k1").with_secret("s").with_encryption_key("11".repeat(32));
    let cases = v["destinations"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let code = |r: Result<String, tracker_sdk::Error>| r.err().map(|e| e.code().unwrap().to_owned());
    for c in cases {
        let d = c["destination"].as_str().unwrap();
        let expect = |field: &str| c[field].as_str().map(str::to_owned);
        let options = LinkOptions::new();
        assert_eq!(code(links::click_url(BASE, &key, d, &options)), expect("new_link"), "v2 click to {d:?}");
        assert_eq!(code(links::encrypted_click_url(BASE, &key, d, &options)), expect("new_link"), "encrypted to {d:?}");
        assert_eq!(code(links::v1_signed_click_url(BASE, "s", Some("acme"), d, &options)), expect("click"), "v1 {d:?}");
        let aes = "22".repeat(32);
        assert_eq!(code(links::v1_encrypted_click_url(BASE, &aes, d, &options)), expect("click"), "v1 enc {d:?}");
    }
}

#[test]
fn webhook_signatures_are_judged_as_the_platform_judges_them() {
    let v = vectors();
    let w = &v["webhook_signatures"];
    let secret = w["secret"].as_str().unwrap();
    for c in w["cases"].as_array().unwrap() {
        let got = webhook::verify(
            secret,
            c["header"].as_str().unwrap(),
            c["body"].as_str().unwrap().as_bytes(),
            c["now"].as_i64().unwrap(),
            w["tolerance_secs"].as_i64().unwrap(),
        );
        let outcome = match got {
            Ok(()) => "ok",
            Err(webhook::VerifyError::Malformed) => "malformed",
            Err(webhook::VerifyError::Stale) => "stale",
            Err(webhook::VerifyError::Mismatch) => "mismatch",
        };
        assert_eq!(outcome, c["expect"], "{}", c["name"]);
    }
}
