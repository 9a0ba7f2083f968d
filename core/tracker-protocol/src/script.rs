//! The browser beacon (`clients/beacon`), as the Worker and every core node serve it at `/t.js`.
//!
//! `/t.js` is cached for five minutes, so a new version reaches sites within that; `/t.js?v=<version>` (the
//! script's `ETag`) is immutable and cached for a year. A `v` of another version gets the current script, cached
//! briefly. `If-None-Match` is honoured; CORS is open (the script is public), so sites may load it with
//! `crossorigin` and subresource integrity.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The minified beacon (`clients/beacon/dist/t.js`; `make test` checks it is the build of its source).
pub const SCRIPT: &str = include_str!("../../../clients/beacon/dist/t.js");

const SHORT: &str = "public, max-age=300";
const PINNED: &str = "public, max-age=31536000, immutable";

/// The script's version: the first 16 hex digits of its SHA-256.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let digest = Sha256::digest(SCRIPT.as_bytes());
        hex::encode(digest.get(..8).unwrap_or_default())
    })
}

/// The answer to `GET /t.js`: `200` with the script, or `304`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Empty for `304`.
    pub body: &'static str,
}

/// `query` is the request's query string; `if_none_match` its `If-None-Match` header.
pub fn answer(query: Option<&str>, if_none_match: Option<&str>) -> Answer {
    let version = version();
    let etag = format!("\"{version}\"");
    let pinned = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, v)| k == "v" && v == version);
    let mut headers = vec![
        ("cache-control", (if pinned { PINNED } else { SHORT }).to_owned()),
        ("etag", etag.clone()),
        ("access-control-allow-origin", "*".to_owned()),
        ("cross-origin-resource-policy", "cross-origin".to_owned()),
    ];
    let fresh = if_none_match
        .is_some_and(|h| h.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == etag || t == "*"));
    if fresh {
        return Answer { status: 304, headers, body: "" };
    }
    headers.push(("content-type", "application/javascript; charset=utf-8".to_owned()));
    headers.push(("x-content-type-options", "nosniff".to_owned()));
    Answer { status: 200, headers, body: SCRIPT }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
        a.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_alias_is_cached_briefly_the_versioned_url_for_a_year() {
        let alias = answer(None, None);
        assert_eq!((alias.status, alias.body), (200, SCRIPT));
        assert_eq!(header(&alias, "cache-control"), Some(SHORT));
        assert_eq!(header(&alias, "content-type"), Some("application/javascript; charset=utf-8"));
        assert_eq!(header(&alias, "access-control-allow-origin"), Some("*"));
        let pinned = answer(Some(&format!("v={}", version())), None);
        assert_eq!(header(&pinned, "cache-control"), Some(PINNED));
        assert_eq!(header(&answer(Some("v=0123456789abcdef"), None), "cache-control"), Some(SHORT));
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let etag = format!("\"{}\"", version());
        assert_eq!(answer(None, Some(&etag)).status, 304);
        assert_eq!(answer(None, Some(&format!("W/\"x\", W/{etag}"))).status, 304);
        assert_eq!(answer(None, Some("\"other\"")).status, 200);
        assert_eq!(answer(None, Some(&etag)).body, "");
    }

    #[test]
    fn the_script_is_the_minified_beacon_within_its_budget() {
        assert!(SCRIPT.contains("/t/auto") && SCRIPT.contains("sendBeacon"));
        assert!(!SCRIPT.contains("\n//"), "minified");
        assert_eq!(version().len(), 16);
    }
}
