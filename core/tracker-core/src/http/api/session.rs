//! `/api/session`: the dashboard's sign-in. A credential (a tenant API key or the admin token) is exchanged for a
//! short-lived session whose secret travels only in an `HttpOnly` cookie; the page keeps the session's CSRF token
//! in memory. The authentication layer resolves the credential (`auth::SigningIn`) and, afterwards, the cookie.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracker_protocol::session::{SESSION_TTL_SECS, clear_cookie, set_cookie};
use tracker_store::{Session, SessionOpener};

use super::auth::{Caller, SigningIn, admin_check};
use super::{Principal, json};
use crate::http::ApiError;
use crate::state::AppState;

/// What the page learns of its session.
fn view(principal: &Principal, session: &Session) -> serde_json::Value {
    let (kind, key_prefix, key_id, scopes) = match &principal.caller {
        Caller::Admin => ("admin", None, None, Vec::new()),
        Caller::Tenant { tenant, key } => {
            ("tenant", Some(tenant.key_prefix.as_str()), Some(key.key_id.as_str()), key.scopes.clone())
        }
    };
    serde_json::json!({
        "kind": kind,
        "key_prefix": key_prefix,
        "key_id": key_id,
        "scopes": scopes,
        "csrf_token": session.csrf_token,
        "public_url": principal.public_url,
        "expires_at": session.expires_at,
    })
}

fn no_session() -> Response {
    let mut res =
        ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "this request has no dashboard session: sign in first")
            .into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tracker\""));
    res
}

fn with_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /api/session`: signs in with the credential the authentication layer resolved.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    signing_in: Option<Extension<SigningIn>>,
) -> Result<Response, ApiError> {
    if signing_in.is_none() {
        return Err(ApiError::bad_request("invalid_body", "sign in with {\"credential\": \"<API key>\"}"));
    }
    let opener = match &principal.caller {
        Caller::Admin => match &state.cfg.node.admin_token_sha256 {
            Some(admin) => SessionOpener::Admin { token_check: admin_check(admin) },
            // the admin credential resolves only when ADMIN_TOKEN is set
            None => return Ok(no_session()),
        },
        Caller::Tenant { .. } if principal.stream_only() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "stream_token",
                "a live stream token cannot open a dashboard session; use an API key",
            ));
        }
        Caller::Tenant { tenant, key } => {
            SessionOpener::Key { key_prefix: tenant.key_prefix.clone(), key_id: key.key_id.clone() }
        }
    };
    let now = state.clock.now_ms();
    let (secret, session) = state.store.create_session(opener, SESSION_TTL_SECS * 1000, now).await?;
    tracing::info!(session = %session.session_id, "dashboard sign-in");
    let res = json(StatusCode::CREATED, &view(&principal, &session));
    Ok(with_cookie(res, &set_cookie(&secret, SESSION_TTL_SECS)))
}

/// `GET /api/session`: the current session, with its CSRF token (after a reload the page has lost it).
pub async fn get(Extension(principal): Extension<Arc<Principal>>) -> Response {
    match &principal.session {
        Some(session) => json(StatusCode::OK, &view(&principal, session)),
        None => no_session(),
    }
}

/// `DELETE /api/session`: signs out: the session ends on every node at once and the cookie is cleared.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Response, ApiError> {
    let Some(session) = &principal.session else { return Ok(no_session()) };
    state.store.end_session(&session.session_id, state.clock.now_ms()).await?;
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &clear_cookie()))
}
