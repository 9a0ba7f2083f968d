//! Dashboard sessions on the wire, shared by the core node and the edge Worker: the cookie that carries a session,
//! the header that must accompany every change made with one (CSRF), and how the edge names a session credential
//! when it forwards a request to the core.
//!
//! A session is opened with `POST /api/session` and a credential (a tenant API key or the admin token); the answer
//! sets [`SESSION_COOKIE`] (`HttpOnly`, `Secure`, `SameSite=Strict`), so the page never holds the credential, and
//! gives the page a CSRF token it keeps in memory and sends as [`CSRF_HEADER`] with every request that is not a
//! read. A cross-site page can neither send the cookie (`SameSite=Strict`) nor set the header without a CORS
//! preflight, which the API does not grant to credentialed requests. The cookie's `__Host-` prefix means only this
//! host can set it (never a sibling subdomain, never for a narrower path), and a sign-in is refused from another
//! site or without a JSON body ([`sign_in`]), so nobody can sign a browser in to a session of theirs either.

/// The session cookie's name (`__Host-`: `Secure`, `Path=/`, no `Domain`, so only this host can set it).
pub const SESSION_COOKIE: &str = "__Host-tracker_session";

/// The header carrying the session's CSRF token on requests that change something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Prefix of the credential the edge forwards for a session: `session:<SHA-256 hex of the cookie>` (a bare
/// SHA-256 hex is an API key's or the admin token's).
pub const SESSION_CREDENTIAL_PREFIX: &str = "session:";

/// How long a session lives (8 hours): a working day, then the key is asked for again.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;

/// Largest session cookie value accepted (the secrets made are 51 bytes).
const MAX_COOKIE_VALUE: usize = 256;

/// Longest credential a sign-in may present.
pub const MAX_CREDENTIAL: usize = 512;

/// Largest sign-in body read (`{"credential": "..."}`).
pub const MAX_SIGN_IN_BODY: usize = 4096;

/// Why a sign-in is refused before its credential is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    /// `415`: the body is not declared JSON (a form or a `no-cors` fetch from another page cannot declare it).
    NotJson,
    /// `403`: a browser says the request comes from another site (`Sec-Fetch-Site`).
    CrossSite,
    /// `400`: the body is not `{"credential": "<1 to 512 bytes>"}`.
    InvalidBody,
}

impl SignInRefusal {
    pub fn status(self) -> u16 {
        match self {
            SignInRefusal::NotJson => 415,
            SignInRefusal::CrossSite => 403,
            SignInRefusal::InvalidBody => 400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            SignInRefusal::NotJson => "unsupported_media_type",
            SignInRefusal::CrossSite => "cross_site_sign_in",
            SignInRefusal::InvalidBody => "invalid_body",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SignInRefusal::NotJson => "sign in with a JSON body (Content-Type: application/json)",
            SignInRefusal::CrossSite => "sign in from the dashboard itself, not from another site",
            SignInRefusal::InvalidBody => {
                "sign in with {\"credential\": \"<API key or admin token>\"} (1 to 512 bytes)"
            }
        }
    }
}

/// The credential of a sign-in request (`POST /api/session`), from its `Content-Type` and `Sec-Fetch-Site` headers
/// and its body; the same checks at the edge and the core. Tools that are not browsers send no `Sec-Fetch-Site`.
pub fn sign_in(content_type: Option<&str>, sec_fetch_site: Option<&str>, body: &[u8]) -> Result<String, SignInRefusal> {
    let json = content_type.is_some_and(|v| {
        let mime = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        mime == "application/json" || mime.ends_with("+json")
    });
    if !json {
        return Err(SignInRefusal::NotJson);
    }
    if sec_fetch_site.is_some_and(|site| !matches!(site.trim(), "same-origin" | "none")) {
        return Err(SignInRefusal::CrossSite);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewSession {
        credential: String,
    }
    if body.len() > MAX_SIGN_IN_BODY {
        return Err(SignInRefusal::InvalidBody);
    }
    let NewSession { credential } = serde_json::from_slice(body).map_err(|_| SignInRefusal::InvalidBody)?;
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL {
        return Err(SignInRefusal::InvalidBody);
    }
    Ok(credential)
}

/// The session's secret from a request's `Cookie` header(s) (joined with `; `): `Ok(None)` without one, `Err(())`
/// when there are several (a browser sends one; several mean a cookie planted beside ours, and none is trusted).
#[allow(clippy::result_unit_err)] // the only error is "ambiguous"
pub fn session_secret(cookie_header: &str) -> Result<Option<&str>, ()> {
    let mut found = cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == SESSION_COOKIE)
        .map(|(_, v)| v.trim().trim_matches('"'));
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(secret), None) => Ok(Some(secret).filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE_VALUE)),
        (Some(_), Some(_)) => Err(()),
    }
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
        assert_eq!(session_secret("a=1; __Host-tracker_session=trk_ses_x; b=2"), Ok(Some("trk_ses_x")));
        assert_eq!(session_secret("__Host-tracker_session=\"q\""), Ok(Some("q")));
        assert_eq!(session_secret("tracker_session=1; __Host-tracker_sessionx=2"), Ok(None));
        assert_eq!(session_secret("__Host-tracker_session="), Ok(None));
        assert_eq!(session_secret(&format!("__Host-tracker_session={}", "a".repeat(300))), Ok(None));
        assert_eq!(session_secret(""), Ok(None));
        // two of them: one was planted, and neither is trusted
        assert_eq!(session_secret("__Host-tracker_session=a; __Host-tracker_session=b"), Err(()));
    }

    #[test]
    fn a_sign_in_is_json_from_this_site_or_a_tool() {
        let body = br#"{"credential":"trk_key_a"}"#;
        let json = Some("application/json; charset=utf-8");
        assert_eq!(sign_in(json, Some("same-origin"), body).as_deref(), Ok("trk_key_a"));
        assert_eq!(sign_in(json, None, body).as_deref(), Ok("trk_key_a"), "curl sends no Sec-Fetch-Site");
        assert_eq!(sign_in(None, None, body), Err(SignInRefusal::NotJson));
        assert_eq!(sign_in(Some("text/plain"), None, body), Err(SignInRefusal::NotJson));
        assert_eq!(sign_in(json, Some("cross-site"), body), Err(SignInRefusal::CrossSite));
        assert_eq!(sign_in(json, Some("same-site"), body), Err(SignInRefusal::CrossSite), "a sibling subdomain");
        for bad in [&br#"{"credential":""}"#[..], br#"{"credential":"k","x":1}"#, b"[]", b"not json"] {
            assert_eq!(sign_in(json, None, bad), Err(SignInRefusal::InvalidBody));
        }
        let long = format!(r#"{{"credential":"{}"}}"#, "k".repeat(MAX_CREDENTIAL + 1));
        assert_eq!(sign_in(json, None, long.as_bytes()), Err(SignInRefusal::InvalidBody));
    }

    #[test]
    fn cookies_are_http_only_secure_and_strict() {
        let c = set_cookie("s3cret", 60);
        assert!(c.starts_with("__Host-tracker_session=s3cret;"));
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(c.split("; ").any(|a| a == attr), "{attr} in {c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
