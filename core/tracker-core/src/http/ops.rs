//! Health, broker status and metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::TrustProxy;
use crate::state::AppState;

/// `200` while the node and the consumers it runs work; `503` naming the consumers that died (the process should
/// be restarted: their positions are durable, so a restart resumes them where they were).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let dead = state.consumers.dead();
    let version = env!("CARGO_PKG_VERSION");
    if dead.is_empty() {
        return super::json(StatusCode::OK, &serde_json::json!({ "status": "ok", "version": version }));
    }
    let body = serde_json::json!({ "status": "unavailable", "version": version, "dead_consumers": dead });
    super::json(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// `/metrics` and `/health/broker` tell how the node is built and how loaded it is: they answer callers on this
/// machine (a loopback peer, when no proxy stands in front: `TRUST_PROXY=none`) and callers with the metrics token
/// (`METRICS_TOKEN`) or the admin token as their bearer credential; anyone else gets a `401` that says no more
/// (the refusal, if refused).
fn operator_only(state: &AppState, req: &Request) -> Option<Response> {
    let local = matches!(state.cfg.node.trust_proxy, TrustProxy::None)
        && req.extensions().get::<ConnectInfo<SocketAddr>>().is_some_and(|c| c.0.ip().is_loopback());
    let presented = super::bearer(req.headers()).map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
    let known = [state.cfg.node.metrics_token_sha256, state.cfg.node.admin_token_sha256];
    let token = presented.is_some_and(|p| known.iter().flatten().any(|k| bool::from(k.ct_eq(&p))));
    if local || token {
        return None;
    }
    let message = "send the metrics token (METRICS_TOKEN) or the admin token as a bearer credential";
    Some(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response())
}

pub async fn broker(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = operator_only(&state, &req) {
        return refused;
    }
    let s = state.log.status();
    let status = if s.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    super::json(
        status,
        &serde_json::json!({
            "status": if s.healthy { "ok" } else { "unavailable" },
            "backend": s.backend,
            "error": s.error,
            "partitions": s.partitions,
            "queued_appends": s.queued,
            "appended_events": s.appended_events,
            "fsyncs": s.fsyncs,
            "last_fsync_micros": s.last_fsync_micros,
            "stored_bytes": s.stored_bytes,
            "spooled_events": s.spooled_events,
        }),
    )
}

pub async fn metrics(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if let Some(refused) = operator_only(&state, &req) {
        return refused;
    }
    let raw_groups = [tracker_consumers::filter::GROUP, state.link_counter.as_str()];
    let filtered_groups = [tracker_consumers::stats::GROUP, tracker_consumers::webhooks::GROUP, tracker_archive::GROUP];
    let readers: [crate::metrics::Readers<'_>; 2] =
        [(state.log.as_ref(), &raw_groups), (state.outputs.filtered.as_ref(), &filtered_groups)];
    let body = crate::metrics::render(&state.log.status(), &readers).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
