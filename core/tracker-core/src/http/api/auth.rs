//! Who is calling: the admin credential, a tenant's API key, or a dashboard session opened with one, resolved from
//! the credential alone; the CSRF check of changes made with a session; plus the per-plan rate limit and the cache
//! purges that follow a change.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tracker_protocol::intake::{CREDENTIAL_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_api};
use tracker_protocol::session::{CSRF_HEADER, MAX_SIGN_IN_BODY, SESSION_CREDENTIAL_PREFIX, session_secret};
use tracker_store::{ApiKey, Session, SessionOpener, SessionOwner, Tenant, hash_token};

use super::{MAX_API_BODY, PUBLIC_URL_HEADER, PURGE_HEADER, Purge, json};
use crate::http::ApiError;
use crate::state::{AppState, now_ms};

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per request, never stored in bulk
pub enum Caller {
    /// The platform operator (`ADMIN_TOKEN`): manages tenants, nothing inside them.
    Admin,
    /// A tenant's API key.
    Tenant { tenant: Tenant, key: ApiKey },
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub caller: Caller,
    /// Base URL for links the API prints (the edge's origin when the request came through it).
    pub public_url: String,
    /// The dashboard session the request came with, if it came with one rather than a bearer credential.
    pub session: Option<Session>,
}

impl Principal {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.caller {
            Caller::Admin => Ok(()),
            Caller::Tenant { .. } => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_only",
                "this route needs the platform admin credential, not a tenant API key",
            )),
        }
    }

    /// The caller's tenant, if its key has `scope` (and, for changes, the tenant is not suspended).
    pub fn tenant(&self, scope: &'static str) -> Result<&Tenant, ApiError> {
        match &self.caller {
            Caller::Admin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_only",
                "the admin credential manages tenants; use one of the tenant's API keys for its resources",
            )),
            Caller::Tenant { key, .. } if !key.has_scope(scope) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!("this API key does not have the `{scope}` scope"),
            )),
            Caller::Tenant { tenant, .. } if !matches!(scope, "read" | "stream") && !tenant.is_active() => {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "tenant_suspended",
                    "the tenant is suspended: its data can be read but not changed",
                ))
            }
            Caller::Tenant { tenant, .. } => Ok(tenant),
        }
    }

    /// The caller's tenant for reading and revoking its credentials (`admin` scope), also while suspended: a
    /// suspended tenant must still be able to see and revoke a leaked key or token.
    pub fn tenant_even_if_suspended(&self, scope: &'static str) -> Result<&Tenant, ApiError> {
        match &self.caller {
            Caller::Tenant { tenant, key } if key.has_scope(scope) => Ok(tenant),
            _ => self.tenant(scope),
        }
    }

    /// Whether the credential is a key that can only open live streams (a short-lived stream token).
    pub fn stream_only(&self) -> bool {
        matches!(&self.caller, Caller::Tenant { key, .. } if key.scopes.iter().all(|s| s == "stream"))
    }

    /// Whether the credential is a short-lived key (an hour or less from its creation to its expiry): the only kind
    /// a URL may carry, whatever its scopes, since URLs end up in logs and browser histories.
    pub fn short_lived(&self) -> bool {
        matches!(
            &self.caller,
            Caller::Tenant { key, .. } if key.expires_at.is_some_and(|e| e.saturating_sub(key.created_at) <= 3_600_000)
        )
    }

    /// The rate-limit bucket and requests per minute.
    fn rate(&self, cfg: &crate::config::Config) -> (String, u32) {
        match &self.caller {
            Caller::Admin => ("admin".into(), cfg.node.admin_api_rpm),
            Caller::Tenant { tenant, .. } => {
                (format!("tenant:{}", tenant.key_prefix), cfg.plan_of(tenant).api_requests_per_minute)
            }
        }
    }
}

fn unauthorized(code: &'static str, message: &'static str) -> Response {
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tracker\""));
    res
}

/// Resolves a credential's SHA-256 to the caller: the admin credential (compared in constant time) or a live API
/// key (looked up by hash on every request, so a revoked key stops working at once).
async fn resolve(state: &AppState, hash_hex: Option<&str>) -> Result<Caller, Response> {
    let Some(hash_hex) = hash_hex else {
        return Err(unauthorized(
            "missing_credentials",
            "send Authorization: Bearer <API key> (or sign in to the dashboard)",
        ));
    };
    let Some(hash) = tracker_protocol::parse_encryption_key(hash_hex) else {
        return Err(unauthorized("invalid_credentials", "the credential is unknown, revoked or expired"));
    };
    if let Some(admin) = &state.cfg.node.admin_token_sha256
        && bool::from(admin.ct_eq(&hash))
    {
        return Ok(Caller::Admin);
    }
    match state.store.api_key_by_hash(hash_hex, state.clock.now_ms()).await {
        Ok(Some(owner)) => Ok(Caller::Tenant { tenant: owner.tenant, key: owner.key }),
        Ok(None) => Err(unauthorized("invalid_credentials", "the credential is unknown, revoked or expired")),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// The credential a request presents.
enum Credential {
    /// The SHA-256 (hex) of an API key or the admin token.
    Key(String),
    /// The SHA-256 (hex) of a dashboard session's secret.
    Session(String),
    /// More than one session cookie: one was planted beside ours, and neither is trusted.
    AmbiguousSession,
    None,
}

fn bearer_hash(headers: &HeaderMap) -> Option<String> {
    super::super::bearer(headers).filter(|t| t.len() <= 512).map(hash_token)
}

/// The bearer credential, else the dashboard session cookie.
fn presented(headers: &HeaderMap) -> Credential {
    if let Some(hash) = bearer_hash(headers) {
        return Credential::Key(hash);
    }
    let cookies: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    match session_secret(&cookies.join("; ")) {
        Ok(Some(secret)) => Credential::Session(hash_token(secret)),
        Ok(None) => Credential::None,
        Err(()) => Credential::AmbiguousSession,
    }
}

/// What an operator's session remembers of the admin token: a hash of the token's hash under its own label, so the
/// value in the database is not the credential hash the edge's entrance takes (it opens nothing by itself).
pub(super) fn admin_check(admin_token_sha256: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"tracker dashboard session of the admin token\0");
    h.update(admin_token_sha256);
    hex::encode(h.finalize())
}

fn invalid_session() -> Response {
    unauthorized("invalid_session", "the dashboard session is unknown, ended or expired: sign in again")
}

/// The live session with this hash and its caller. An operator's session is honoured only while `ADMIN_TOKEN` is
/// the token it was opened with.
async fn resolve_session(state: &AppState, hash_hex: &str) -> Result<(Caller, Session), Response> {
    let refused = invalid_session;
    if tracker_protocol::parse_encryption_key(hash_hex).is_none() {
        return Err(refused());
    }
    match state.store.session_by_hash(hash_hex, state.clock.now_ms()).await {
        Ok(Some(SessionOwner { session, key: Some(owner) })) => {
            Ok((Caller::Tenant { tenant: owner.tenant, key: owner.key }, session))
        }
        Ok(Some(SessionOwner { session, key: None })) => {
            let current = state.cfg.node.admin_token_sha256.as_ref().map(admin_check);
            match (&session.opener, current) {
                (SessionOpener::Admin { token_check }, Some(current))
                    if bool::from(token_check.as_bytes().ct_eq(current.as_bytes())) =>
                {
                    Ok((Caller::Admin, session))
                }
                _ => Err(refused()),
            }
        }
        Ok(None) => Err(refused()),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// A change made with a session must carry the session's CSRF token (compared in constant time).
fn csrf_refusal(method: &axum::http::Method, headers: &HeaderMap, session: &Session) -> Option<Response> {
    if method.is_safe() {
        return None;
    }
    let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
    let matches = sent.len() == session.csrf_token.len() && bool::from(sent.ct_eq(session.csrf_token.as_bytes()));
    (!matches).then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_token_mismatch",
            "a change made with a dashboard session needs the session's X-CSRF-Token header",
        )
        .into_response()
    })
}

/// Marks `POST /api/session`: the credential came in the body (or, through the edge, as its hash) to be exchanged
/// for a session.
#[derive(Debug, Clone, Copy)]
pub struct SigningIn;

/// Sign-in attempts one address may make per minute at a node (the edge limits its callers itself).
const SIGN_INS_PER_MINUTE: u32 = 20;

fn is_sign_in(req: &Request) -> bool {
    req.uri().path() == "/session" && req.method() == axum::http::Method::POST
}

/// The caller's address as a rate-limit key: an IPv6 client by its /64, which it can rotate through.
async fn address_key(state: &Arc<AppState>, parts: &mut axum::http::request::Parts) -> Result<String, Response> {
    let meta =
        <crate::http::RequestMeta as axum::extract::FromRequestParts<_>>::from_request_parts(parts, state).await?;
    Ok(meta.0.ip.as_deref().map(tracker_protocol::client_ip::rate_key).unwrap_or_default().into_owned())
}

/// Counts one request of `what` from `address` against `per_minute`; the `429` to answer when it is over.
fn address_limit(state: &AppState, what: &str, address: &str, per_minute: u32) -> Option<Response> {
    let verdict = state.api_limits.check(&format!("{what}:{address}"), per_minute, 60, state.clock.now_ms());
    if verdict.allowed {
        return None;
    }
    let retry = verdict.retry_after_secs;
    let message = format!("more than {per_minute} {what} requests a minute from this address; retry in {retry} s");
    let mut res = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    let h = res.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    for (name, value) in [("ratelimit-policy", verdict.policy_header()), ("ratelimit", verdict.header())] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Some(res)
}

/// Refuses a caller over `API_IP_REQUESTS_PER_MINUTE` before anything else is done for its request: a flood of
/// guessed credentials costs a hash and a map lookup each, never a database read.
async fn address_allowed(state: &Arc<AppState>, req: Request) -> Result<Request, Response> {
    let (mut parts, body) = req.into_parts();
    let address = address_key(state, &mut parts).await?;
    if let Some(refused) = address_limit(state, "API", &address, state.cfg.node.api_ip_rpm) {
        return Err(refused);
    }
    Ok(Request::from_parts(parts, body))
}

/// The credential of a direct sign-in, from its JSON body (`tracker_protocol::session::sign_in`, as at the edge),
/// after the per-address limit.
async fn sign_in_credential(state: &Arc<AppState>, req: Request) -> Result<(Request, String), Response> {
    let (mut parts, body) = req.into_parts();
    let address = address_key(state, &mut parts).await?;
    if let Some(refused) = address_limit(state, "sign-in", &address, SIGN_INS_PER_MINUTE) {
        return Err(refused);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_SIGN_IN_BODY).await else {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "a sign-in body is at most 4 KiB")
            .into_response());
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let credential = tracker_protocol::session::sign_in(header("content-type"), header("sec-fetch-site"), &bytes)
        .map_err(|refusal| {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, refusal.code(), refusal.message()).into_response()
        })?;
    Ok((Request::from_parts(parts, Body::empty()), hash_token(&credential)))
}

/// `?access_token=` (live streams only: browsers' `EventSource` cannot send an `Authorization` header).
fn query_token_hash(uri: &axum::http::Uri) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .map(|t| hash_token(&t))
}

/// `/api/...`: the credential is the bearer token, else the dashboard session cookie; signing in, the one in the
/// body.
pub async fn direct(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let req = match address_allowed(&state, req).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let public_url = state.cfg.node.public_url.clone();
    if is_sign_in(&req) {
        let (mut req, hash) = match sign_in_credential(&state, req).await {
            Ok(found) => found,
            Err(res) => return res,
        };
        req.extensions_mut().insert(SigningIn);
        return authenticate_and_run(&state, req, next, Credential::Key(hash), public_url, false).await;
    }
    let credential = presented(req.headers());
    authenticate_and_run(&state, req, next, credential, public_url, false).await
}

/// Marks a request whose credential came from the URL (`?access_token=`).
#[derive(Debug, Clone, Copy)]
pub struct UrlCredential;

/// `/sse/...`: the bearer token, or `?access_token=` for browsers' `EventSource`.
pub async fn direct_live(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let mut req = match address_allowed(&state, req).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    let mut hash = bearer_hash(req.headers());
    if hash.is_none() {
        hash = query_token_hash(req.uri());
        if hash.is_some() {
            req.extensions_mut().insert(UrlCredential);
        }
    }
    let public_url = state.cfg.node.public_url.clone();
    let credential = hash.map_or(Credential::None, Credential::Key);
    authenticate_and_run(&state, req, next, credential, public_url, false).await
}

/// `/internal/v1/api/...`: the edge's signature over method, path, credential hash and body, within the replay
/// window; then the caller is resolved from the credential hash like any direct call.
pub async fn via_edge(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if state.cfg.edge.secrets.expose().is_empty() {
        return ApiError::new(StatusCode::NOT_FOUND, "edge_intake_disabled", "this node has no EDGE_SHARED_SECRETS")
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_API_BODY).await else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the body is larger than 1 MiB")
            .into_response();
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |reason: &'static str| unauthorized("invalid_edge_signature", reason);
    let (Some(sig), Some(ts)) = (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER)) else {
        return refuse("edge requests need X-Tracker-Signature and X-Tracker-Timestamp");
    };
    let Ok(ts) = ts.parse::<i64>() else { return refuse("X-Tracker-Timestamp must be milliseconds since the epoch") };
    let credential = header(CREDENTIAL_HEADER).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let secrets = state.cfg.edge.secrets.expose();
    if !verify_api(secrets, sig, ts, parts.method.as_str(), path, credential, header, &bytes) {
        return refuse("the request signature is invalid");
    }
    if u128::from(now_ms().abs_diff(ts)) > state.cfg.edge.replay_window.as_millis() {
        return refuse("the request timestamp is outside the replay window");
    }
    // a change is taken once, by whichever node gets it first: the same signed request again within the window is
    // a replay (the signatures taken are in the metadata store the nodes share)
    let changes = !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
    if changes {
        let window = i64::try_from(state.cfg.edge.replay_window.as_millis()).unwrap_or(i64::MAX);
        match state.store.take_signature(sig, ts.saturating_add(window), now_ms()).await {
            Ok(true) => {}
            Ok(false) => return refuse("this signed request was already taken (a replay)"),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let public_url = header(PUBLIC_URL_HEADER)
        .filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && u.len() < 256)
        .map_or_else(|| state.cfg.node.public_url.clone(), |u| u.trim_end_matches('/').to_owned());
    // the edge forwards `session:<hash>` for a dashboard session, else a bearer credential's hash (signing in, the
    // hash of the credential the page sent)
    let credential = match credential.strip_prefix(SESSION_CREDENTIAL_PREFIX) {
        Some(hash) => Credential::Session(hash.to_owned()),
        None if credential.is_empty() => Credential::None,
        None => Credential::Key(credential.to_owned()),
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    if is_sign_in(&req) {
        if !matches!(credential, Credential::Key(_)) {
            return unauthorized("missing_credentials", "sign in with an API key or the admin token");
        }
        req.extensions_mut().insert(SigningIn);
    }
    authenticate_and_run(&state, req, next, credential, public_url, true).await
}

async fn authenticate_and_run(
    state: &AppState,
    mut req: Request,
    next: Next,
    credential: Credential,
    public_url: String,
    via_edge: bool,
) -> Response {
    let resolved = match credential {
        Credential::Key(hash) => resolve(state, Some(&hash)).await.map(|caller| (caller, None)),
        Credential::Session(hash) => resolve_session(state, &hash).await.map(|(caller, s)| (caller, Some(s))),
        Credential::AmbiguousSession => Err(invalid_session()),
        Credential::None => resolve(state, None).await.map(|caller| (caller, None)),
    };
    let (caller, session) = match resolved {
        Ok(found) => found,
        Err(res) => return res,
    };
    if let Some(session) = &session
        && let Some(refusal) = csrf_refusal(req.method(), req.headers(), session)
    {
        return refusal;
    }
    let principal = Principal { caller, public_url, session };
    let (bucket, rpm) = principal.rate(&state.cfg);
    let verdict = state.api_limits.check(&bucket, rpm, 60, state.clock.now_ms());
    let mut res = if verdict.allowed {
        req.extensions_mut().insert(Arc::new(principal));
        next.run(req).await
    } else {
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {rpm} API requests per minute; retry in {} s", verdict.retry_after_secs),
        )
        .into_response();
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(verdict.retry_after_secs));
        res
    };
    let h = res.headers_mut();
    for (name, value) in [("ratelimit-policy", verdict.policy_header()), ("ratelimit", verdict.header())] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if let Some(Purge(keys)) = res.extensions_mut().remove::<Purge>() {
        for key in &keys {
            state.invalidate(key);
        }
        if via_edge {
            if let Ok(v) = HeaderValue::from_str(&keys.join(",")) {
                res.headers_mut().insert(PURGE_HEADER, v);
            }
        } else {
            tell_edge(state, &keys);
        }
    }
    res
}

/// A change made at the node directly: the edge hears of it from the node (EDGE_URLS).
fn tell_edge(state: &AppState, keys: &[String]) {
    if let Some(edge) = &state.cfg.consumers.edge {
        edge.purge(keys.join(","));
    }
}

/// Drops what a change made in-process (an MCP tool call) made stale: here, and at the edge through EDGE_URLS
/// (the tool call's answer is not the HTTP answer the edge reads purges from).
pub(crate) fn purge(state: &AppState, keys: &[String]) {
    for key in keys {
        state.invalidate(key);
    }
    tell_edge(state, keys);
}

/// Routes any caller may read without a credential: the OpenAPI document and the tool definitions made from it.
fn is_public(path: &str) -> bool {
    matches!(path, "/openapi.json" | "/tools")
}

/// `GET /api/me`: who the credential is, and its rate limit.
pub async fn me(State(state): State<Arc<AppState>>, Extension(principal): Extension<Arc<Principal>>) -> Response {
    let (_, rpm) = principal.rate(&state.cfg);
    let body = match &principal.caller {
        Caller::Admin => serde_json::json!({ "kind": "admin", "api_requests_per_minute": rpm }),
        Caller::Tenant { tenant, key } => serde_json::json!({
            "kind": "tenant",
            "key_prefix": tenant.key_prefix,
            "plan": tenant.plan,
            "status": tenant.status,
            "key_id": key.key_id,
            "scopes": key.scopes,
            "api_requests_per_minute": rpm,
        }),
    };
    json(StatusCode::OK, &body)
}
