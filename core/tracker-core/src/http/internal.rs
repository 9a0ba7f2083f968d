//! The service API the edge Worker calls: lookups that fill Workers KV on a miss. They read the store, not the
//! node's caches: what goes into KV stays there for `KV_FILL_TTL_SECS`, so it must be the latest (a node's cache
//! could still hold a record another node just changed). Every request is signed with an
//! edge shared secret over its timestamp and path (see `tracker_protocol::intake`) and refused outside the replay
//! window; the intake is off (404) unless `EDGE_SHARED_SECRETS` is set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracker_protocol::ProtocolError;
use tracker_protocol::intake::{
    BATCH_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, is_valid_batch_id, verify_batch, verify_lookup,
};

use super::Segment;
use crate::http::ApiError;
use crate::state::{AppState, now_ms};

/// Checks an edge request: a signed batch (`path == None`: returns its batch id) or a signed lookup of `path`.
/// Authenticity is checked before anything else about the request is looked at.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    path: Option<&str>,
    body: &[u8],
) -> Result<String, ApiError> {
    if state.cfg.edge.secrets.expose().is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "edge_intake_disabled",
            "this node has no EDGE_SHARED_SECRETS",
        ));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |reason: &'static str| ApiError::from(ProtocolError::Unauthorized { reason });
    let (Some(sig), Some(ts)) = (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER)) else {
        return Err(unauthorized("edge requests need X-Tracker-Signature and X-Tracker-Timestamp"));
    };
    let ts: i64 = ts.parse().map_err(|_| unauthorized("X-Tracker-Timestamp must be milliseconds since the epoch"))?;
    let subject = match path {
        Some(p) => {
            if !verify_lookup(state.cfg.edge.secrets.expose(), sig, ts, p) {
                return Err(unauthorized("the request signature is invalid"));
            }
            p.to_owned()
        }
        None => {
            let batch_id =
                header(BATCH_ID_HEADER).ok_or_else(|| unauthorized("edge batches need X-Tracker-Batch-Id"))?;
            if !is_valid_batch_id(batch_id) {
                return Err(ApiError::bad_request(
                    "invalid_batch_id",
                    "X-Tracker-Batch-Id must be 1 to 128 characters from [A-Za-z0-9_.:-]",
                ));
            }
            if !verify_batch(state.cfg.edge.secrets.expose(), sig, ts, batch_id, body) {
                return Err(unauthorized("the batch signature is invalid"));
            }
            batch_id.to_owned()
        }
    };
    if u128::from(now_ms().abs_diff(ts)) > state.cfg.edge.replay_window.as_millis() {
        return Err(unauthorized("the request timestamp is outside the replay window"));
    }
    Ok(subject)
}

fn found<T: serde::Serialize>(value: Option<Arc<T>>, what: &str) -> Response {
    match value {
        Some(v) => super::json(StatusCode::OK, &*v),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}")).into_response(),
    }
}

fn or_error(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn tenant(State(state): State<Arc<AppState>>, Segment(key_prefix): Segment, headers: HeaderMap) -> Response {
    or_error(
        async {
            authenticate(&state, &headers, Some(&format!("/internal/v1/tenants/{key_prefix}")), b"")?;
            let record = state.tenant_record(&key_prefix).await?.map(Arc::new);
            Ok(found(record, "tenant"))
        }
        .await,
    )
}

pub async fn short_link(State(state): State<Arc<AppState>>, Segment(tu_id): Segment, headers: HeaderMap) -> Response {
    or_error(
        async {
            authenticate(&state, &headers, Some(&format!("/internal/v1/short-links/{tu_id}")), b"")?;
            Ok(found(state.store.short_link(&tu_id).await?.map(Arc::new), "short link"))
        }
        .await,
    )
}

pub async fn token(State(state): State<Arc<AppState>>, Segment(hash): Segment, headers: HeaderMap) -> Response {
    or_error(
        async {
            authenticate(&state, &headers, Some(&format!("/internal/v1/tokens/{hash}")), b"")?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::bad_request("invalid_token_hash", "the token hash must be 64 hex characters"));
            }
            Ok(found(state.store.lookup_ingest_token_hash(&hash, state.clock.now_ms()).await?.map(Arc::new), "token"))
        }
        .await,
    )
}
