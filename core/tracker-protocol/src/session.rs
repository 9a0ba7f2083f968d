//! Dashboard sessions on the wire, shared by the core node and the edge Worker: the cookie that carries a session,
//! the header that must accompany every change made with one (CSRF), and how the edge names a session credential
//! when it forwards a request to the core.
//!
//! A session is opened with `POST /api/session` and a credential (a tenant API key or the admin token); the answer
//! sets [`SESSION_COOKIE`] (`HttpOnly`, `Secure`, `SameSite=Strict`), so the page never holds the credential, and
//! gives the page a CSRF token it keeps in memory and sends as [`CSRF_HEADER`] with every request that is not a
//! read. A cross-site page can neither send the cookie (`SameSite=Strict`) nor set the header without a CORS
//! preflight, which the API does not grant to credentialed requests.

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tracker_session";

/// The header carrying the session's CSRF token on requests that change something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Prefix of the credential the edge forwards for a session: `session:<SHA-256 hex of the cookie>` (a bare
/// SHA-256 hex is an API key's or the admin token's).
pub const SESSION_CREDENTIAL_PREFIX: &str = "session:";

/// How long a session lives (8 hours): a working day, then the key is asked for again.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;

/// Largest session cookie value accepted (the secrets made are 51 bytes).
const MAX_COOKIE_VALUE: usize = 256;

/// The value of the cookie `name` in a `Cookie` request header, if present and non-empty.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE_VALUE)
}

/// The session's secret from a `Cookie` request header.
pub fn session_secret(cookie_header: &str) -> Option<&str> {
    cookie(cookie_header, SESSION_COOKIE)
}

/// The `Set-Cookie` value that opens a session. `Path=/`: the API and the live streams both read it.
pub fn set_cookie(secret: &str, max_age_secs: i64) -> String {
    format!("{SESSION_COOKIE}={secret}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    set_cookie("", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_among_other_cookies() {
        assert_eq!(session_secret("a=1; tracker_session=trk_ses_x; b=2"), Some("trk_ses_x"));
        assert_eq!(session_secret("tracker_session=\"q\""), Some("q"));
        assert_eq!(session_secret("tracker_sessionx=1; xtracker_session=2"), None);
        assert_eq!(session_secret("tracker_session="), None);
        assert_eq!(session_secret(&format!("tracker_session={}", "a".repeat(300))), None);
        assert_eq!(session_secret(""), None);
    }

    #[test]
    fn cookies_are_http_only_secure_and_strict() {
        let c = set_cookie("s3cret", 60);
        assert!(c.starts_with("tracker_session=s3cret;"));
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(c.split("; ").any(|a| a == attr), "{attr} in {c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
