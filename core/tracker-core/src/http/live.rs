//! `GET /sse/events` (and `/internal/v1/sse/events` for the edge): a tenant's filtered events live, as Server-Sent
//! Events from the live hub (`crate::live`); `POST /api/sse/tokens`: short-lived stream keys for browsers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::http::ApiError;
use crate::http::api::{Caller, Principal, Query};
use crate::live::{Frame, LiveError, StreamFilter};
use crate::state::AppState;

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "live_unavailable", "live events are unavailable")
            }
            LiveError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the node is shutting down")
            }
            LiveError::NodeFull(_) => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "streams_full", e.to_string());
                e.headers.push(("retry-after", "5".to_owned()));
                e
            }
            LiveError::TenantFull(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("{e}: close one (or reuse one for several filters)"),
            ),
            LiveError::Log(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseQuery {
    /// Comma-separated event types (all when absent).
    event_type: Option<String>,
    param_key: Option<String>,
    param_value: Option<String>,
    /// For clients that cannot set headers (browsers' `EventSource`): a short-lived stream token.
    #[allow(dead_code)] // read by the authentication layer
    access_token: Option<String>,
    /// Set by the edge when it took the credential from `access_token`.
    credential: Option<String>,
    /// Same as the `Last-Event-ID` header (which wins).
    last_event_id: Option<u64>,
}

/// `GET /sse/events`: the tenant's filtered events as they arrive (`read` or `stream` scope).
pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    url_credential: Option<Extension<crate::http::api::UrlCredential>>,
    headers: HeaderMap,
    Query(q): Query<SseQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("stream").or_else(|_| principal.tenant("read"))?.key_prefix.clone();
    // a URL ends up in logs and histories: only short-lived stream tokens may travel in one
    let in_url = url_credential.is_some() || q.credential.as_deref() == Some("query");
    if in_url && !principal.short_lived() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "key_in_url",
            "only short-lived stream tokens (POST /api/sse/tokens) may be sent in the URL; \
             send keys in the Authorization header",
        ));
    }
    let event_types = match q.event_type.as_deref() {
        None | Some("") => None,
        Some(list) => {
            let types: Vec<String> = list.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
            if types.len() > 50 || types.iter().any(|t| t.len() > 128) {
                return Err(ApiError::bad_request("invalid_query", "at most 50 event types of up to 128 bytes"));
            }
            Some(types)
        }
    };
    let param = match (q.param_key, q.param_value) {
        (None, None) => None,
        (Some(k), Some(v)) if !k.is_empty() && k.len() <= 256 && v.len() <= 2048 => Some((k, v)),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "param_key and param_value go together (key 1 to 256 bytes, value up to 2048)",
            ));
        }
    };
    let resume = match headers.get("last-event-id").map(|v| v.to_str().map(|s| s.trim().parse::<u64>())) {
        Some(Ok(Ok(id))) => Some(id),
        Some(_) => return Err(ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be an event id")),
        None => q.last_event_id,
    };
    let filter = StreamFilter { tenant, event_types, param };
    let frames = state.live.open(state.outputs.filtered.clone(), filter, resume).await?;
    // the credential is checked again every keep-alive interval: a stream ends once its key expires or is revoked
    let key = match &principal.caller {
        Caller::Tenant { tenant, key } => (tenant.key_prefix.clone(), key.key_id.clone()),
        Caller::Admin => return Err(ApiError::new(StatusCode::FORBIDDEN, "tenant_only", "streams are a tenant's")),
    };
    let recheck = tokio::time::interval(state.cfg.node.sse_keepalive);
    let events = futures_util::stream::unfold(
        (frames, recheck, state.clone(), key),
        |(mut frames, mut recheck, state, key)| async move {
            loop {
                tokio::select! {
                    frame = frames.recv() => {
                        return frame.map(|f| (Ok::<_, Infallible>(sse_event(f)), (frames, recheck, state, key)));
                    }
                    _ = recheck.tick() => {
                        if !key_still_valid(&state, &key.0, &key.1).await {
                            return None;
                        }
                    }
                }
            }
        },
    );
    let keep_alive = KeepAlive::new().interval(state.cfg.node.sse_keepalive).text("keep-alive");
    let mut res = Sse::new(events).keep_alive(keep_alive).into_response();
    // no proxy may hold the stream back to buffer it
    res.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// Whether the key a stream was opened with is still neither revoked nor expired (a store that cannot answer right
/// now ends no stream).
async fn key_still_valid(state: &AppState, key_prefix: &str, key_id: &str) -> bool {
    let now = state.clock.now_ms();
    match state.store.api_key(key_prefix, key_id).await {
        Ok(Some(key)) => key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "live stream: its key could not be checked again");
            true
        }
    }
}

/// A frame of the live hub as a Server-Sent Event.
fn sse_event(frame: Frame) -> SseEvent {
    match frame {
        Frame::Start { tenant } => {
            SseEvent::default().retry(Duration::from_secs(2)).comment(format!("live events of {tenant}"))
        }
        Frame::Event { id, json } => SseEvent::default().id(id.to_string()).data(json),
        Frame::Lagged { from, to } => SseEvent::default().event("lagged").data(
            serde_json::json!({
                "missed_from_id": from,
                "missed_to_id": to.saturating_sub(1),
                "resume_with_last_event_id": from.saturating_sub(1),
            })
            .to_string(),
        ),
    }
}

/// `POST /api/sse/tokens`: a short-lived key with only the `stream` scope, for a browser's `EventSource`
/// (`/sse/events?access_token=...`), so no long-lived key is ever exposed to a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStreamToken {
    /// Lifetime in seconds, 60 to 3,600 (default 900).
    ttl_secs: Option<i64>,
}

pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    crate::http::api::Body(body): crate::http::api::Body<NewStreamToken>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let ttl = body.ttl_secs.unwrap_or(900);
    if !(60..=3600).contains(&ttl) {
        return Err(ApiError::bad_request("invalid_field", "ttl_secs must be 60 to 3600"));
    }
    let now = state.clock.now_ms();
    let expires_at = now + ttl * 1000;
    // expired stream tokens are of no use to anyone: they go as new ones are made
    state.store.delete_expired_keys(&tenant.key_prefix, "stream", now - 24 * 3600 * 1000).await?;
    let (secret, key) = state
        .store
        .create_api_key(&tenant.key_prefix, "live stream token", &["stream".to_owned()], Some(expires_at), now)
        .await?;
    Ok(crate::http::api::json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "token": secret, "key_id": key.key_id, "expires_at": expires_at }),
    ))
}
