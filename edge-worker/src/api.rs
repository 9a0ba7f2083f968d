//! The platform API at the edge, the pure part: what the Worker forwards to the core's internal API, what it
//! answers itself, and what it remembers between requests. The runtime glue is in `runtime/proxy.rs`.
//!
//! The edge authenticates the request's shape (a bearer credential, a body within bounds), shields the core
//! from floods (per-IP limit, and credentials the core refused or rate-limited are answered locally until the
//! refusal expires), and forwards the rest signed with the service credential. The raw credential never leaves
//! the edge: the core receives its SHA-256 and resolves the caller from it, so a tenant can only ever act on its
//! own data whatever ids it sends. Answers to changes name the hot-path records they made stale; the Worker
//! deletes them from Workers KV and its isolate caches before it answers, so the edge follows a change within
//! `CACHE_TTL_MS` in other isolates of the same location and within KV's propagation (up to 60 s) elsewhere.

use sha2::{Digest, Sha256};

use crate::cache::Bounded;

/// Largest API request body the edge forwards.
pub const MAX_API_BODY: usize = 1 << 20;

/// Core answers whose headers reach the client (`set-cookie`: signing in to and out of the dashboard).
pub const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "www-authenticate",
    "set-cookie",
];

/// CORS for browsers calling the API with a bearer credential (no cookies, so any origin may call).
pub const PREFLIGHT_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, PATCH, DELETE, OPTIONS"),
    ("access-control-allow-headers", "authorization, content-type, idempotency-key, mcp-protocol-version"),
    ("access-control-max-age", "86400"),
];

pub const CORS_HEADERS: [(&str, &str); 2] = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "ratelimit, ratelimit-policy, retry-after"),
];

/// How long a credential the core refused (401) is refused at the edge without asking again.
pub const REFUSED_FOR_MS: i64 = 10_000;

/// CORS of live event streams (`/sse/events`): browsers' `EventSource` sends no credentials of its own (the
/// short-lived token is in the query), so any origin may read; `Last-Event-ID` may be sent on reconnects.
pub const LIVE_PREFLIGHT_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, OPTIONS"),
    ("access-control-allow-headers", "authorization, last-event-id, cache-control"),
    ("access-control-max-age", "86400"),
];

/// For `/sse/events`: the path and query as signed for the core (below `/internal/v1/sse`), without the
/// `access_token` parameter, and that token. The token never leaves the edge either: the core gets its hash.
pub fn live_forward(path: &str, query: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/sse")?;
    if rest != "/events" {
        return None;
    }
    let mut token = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "access_token" {
            token = Some(v.into_owned());
        } else {
            kept.append_pair(&k, &v);
        }
    }
    if token.is_some() {
        // the core allows only short-lived stream tokens in URLs
        kept.append_pair("credential", "query");
    }
    let kept = kept.finish();
    Some((if kept.is_empty() { rest.to_owned() } else { format!("{rest}?{kept}") }, token))
}

/// The path below `/api` with the query, as signed for the core; `None` if the path is not an API path.
pub fn forward_path(path: &str, query: &str) -> Option<String> {
    // MCP (streamable HTTP) is the core's too, below its internal API
    let rest = if path == "/mcp" { path } else { path.strip_prefix("/api")? };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    Some(if query.is_empty() { rest.to_owned() } else { format!("{rest}?{query}") })
}

/// SHA-256 (hex) of a bearer credential, the only form in which it leaves the edge.
pub fn credential_hash(credential: &str) -> Option<String> {
    (!credential.is_empty() && credential.len() <= 512).then(|| hex::encode(Sha256::digest(credential.as_bytes())))
}

/// The credential a request presents, as the core receives it: the bearer credential's hash, else a dashboard
/// session's (`session:<hash of the cookie>`; see `tracker_protocol::session`). `Err` for several session cookies
/// (one was planted beside ours, and neither is trusted).
#[allow(clippy::result_unit_err)] // the only error is "ambiguous"
pub fn presented_credential(bearer: Option<&str>, cookie_header: Option<&str>) -> Result<Option<String>, ()> {
    if let Some(hash) = bearer.and_then(credential_hash) {
        return Ok(Some(hash));
    }
    let Some(secret) = tracker_protocol::session::session_secret(cookie_header.unwrap_or_default())? else {
        return Ok(None);
    };
    Ok(credential_hash(secret).map(|hash| format!("{}{hash}", tracker_protocol::session::SESSION_CREDENTIAL_PREFIX)))
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
pub fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(i) => url.get(..after_scheme + i).unwrap_or(url),
        None => url,
    }
}

/// The hot-path keys an answer made stale (`x-tracker-edge-purge`), checked: only the three kinds the edge
/// caches, with ids of safe characters.
pub fn purge_keys(header: &str) -> Vec<(&str, &str)> {
    header
        .split(',')
        .filter_map(|k| k.trim().split_once(':'))
        .filter(|(kind, id)| {
            matches!(*kind, "tenant" | "short" | "token")
                && !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .collect()
}

/// The status to remember for a credential after the core's answer: only a refusal of the credential itself
/// (`invalid_credentials`) or of its rate (`rate_limited`). Other 401s (the edge's own signature refused during a
/// secret rotation or clock skew) and every other answer are not about the caller; they clear the entry.
pub fn refusal(status: u16, body: &[u8]) -> u16 {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        error: Error<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Error<'a> {
        code: &'a str,
    }
    let code = serde_json::from_slice::<Body<'_>>(body).ok().map(|b| b.error.code);
    match (status, code) {
        (401, Some("invalid_credentials" | "invalid_session")) => 401,
        (429, Some("rate_limited")) => 429,
        _ => 200,
    }
}

/// Credentials the core refused or rate-limited, answered at the edge until the refusal expires.
#[derive(Debug)]
pub struct Refusals {
    map: Bounded<(u16, i64)>,
}

/// Refusals kept; past them the oldest are forgotten (bounds memory against random credentials).
const MAX_REFUSALS: usize = 10_000;

impl Default for Refusals {
    fn default() -> Self {
        Refusals { map: Bounded::new(MAX_REFUSALS) }
    }
}

impl Refusals {
    /// The status to answer with and the seconds until the refusal ends, while it lasts.
    pub fn get(&self, hash: &str, now_ms: i64) -> Option<(u16, u64)> {
        let (status, until) = self.map.get(hash)?;
        (*until > now_ms).then(|| (*status, u64::try_from((until - now_ms + 999) / 1000).unwrap_or(1)))
    }

    /// Remembers a 401 (for [`REFUSED_FOR_MS`]) or a 429 (for its `Retry-After`); other answers clear the entry.
    pub fn record(&mut self, hash: &str, status: u16, retry_after_secs: Option<u64>, now_ms: i64) {
        let until = match (status, retry_after_secs) {
            (401, _) => now_ms + REFUSED_FOR_MS,
            (429, Some(secs)) => now_ms + i64::try_from(secs.min(3600)).unwrap_or(60) * 1000,
            _ => {
                self.map.remove(hash);
                return;
            }
        };
        self.map.insert(hash, (status, until));
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn live_streams_forward_without_the_token() {
        assert_eq!(live_forward("/sse/events", ""), Some(("/events".into(), None)));
        assert_eq!(
            live_forward("/sse/events", "event_type=click&access_token=trk_key_x%2By&param_key=a"),
            Some(("/events?event_type=click&param_key=a&credential=query".into(), Some("trk_key_x+y".into())))
        );
        assert_eq!(live_forward("/sse/other", ""), None);
        assert_eq!(live_forward("/ssex/events", ""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_forwarded_below_api_with_their_query() {
        assert_eq!(forward_path("/api/links", "limit=5").as_deref(), Some("/links?limit=5"));
        assert_eq!(forward_path("/api", "").as_deref(), Some("/"));
        assert_eq!(forward_path("/apix", ""), None);
        assert_eq!(forward_path("/mcp", "").as_deref(), Some("/mcp"));
        assert_eq!(forward_path("/mcp/x", ""), None);
        assert_eq!(forward_path("/t", ""), None);
    }

    #[test]
    fn purge_keys_are_checked() {
        let keys = purge_keys("short:tu_01-ab, tenant:acme,token:ab12,evil:x,short:a/b,short:");
        assert_eq!(keys, vec![("short", "tu_01-ab"), ("tenant", "acme"), ("token", "ab12")]);
    }

    #[test]
    fn origins_and_hashes() {
        assert_eq!(origin("https://edge.test:8787/api/links?x=1"), "https://edge.test:8787");
        assert_eq!(origin("https://edge.test"), "https://edge.test");
        assert_eq!(credential_hash("").as_deref(), None);
        assert_eq!(credential_hash("abc").unwrap().len(), 64);
    }

    #[test]
    fn credentials_leave_the_edge_as_hashes_only() {
        let key_hash = credential_hash("trk_key_a").unwrap();
        let cookie = Some("theme=dark; __Host-tracker_session=trk_ses_b");
        assert_eq!(presented_credential(Some("trk_key_a"), cookie), Ok(Some(key_hash)), "the bearer wins");
        let session = presented_credential(None, cookie).unwrap().unwrap();
        assert_eq!(session, format!("session:{}", credential_hash("trk_ses_b").unwrap()));
        assert_eq!(presented_credential(None, Some("theme=dark")), Ok(None));
        assert_eq!(presented_credential(None, None), Ok(None));
        let planted = Some("__Host-tracker_session=a; __Host-tracker_session=b");
        assert_eq!(presented_credential(None, planted), Err(()));
    }

    #[test]
    fn only_refusals_of_the_credential_are_remembered() {
        let e = |code: &str| format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"m\"}}}}").into_bytes();
        assert_eq!(refusal(401, &e("invalid_credentials")), 401);
        assert_eq!(refusal(401, &e("invalid_session")), 401);
        assert_eq!(refusal(429, &e("rate_limited")), 429);
        assert_eq!(refusal(401, &e("invalid_edge_signature")), 200, "the edge's problem, not the caller's");
        assert_eq!(refusal(401, b"not json"), 200);
        assert_eq!(refusal(403, &e("missing_scope")), 200);
    }

    #[test]
    fn refusals_last_until_they_expire_and_success_clears_them() {
        let mut r = Refusals::default();
        r.record("h", 401, None, 0);
        assert_eq!(r.get("h", 1), Some((401, 10)));
        assert_eq!(r.get("h", REFUSED_FOR_MS), None);
        r.record("h", 429, Some(3), 0);
        assert_eq!(r.get("h", 500), Some((429, 3)));
        r.record("h", 200, None, 600);
        assert_eq!(r.get("h", 700), None);
    }
}
