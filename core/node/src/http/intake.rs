//! Authenticated intake: `/batch` and `/ingest` (tenant from an ingest token) and the edge's signed batches.
//! All three answer only after the events are durable, and all three are idempotent: by `Idempotency-Key` or
//! batch id, and by client-supplied `event_id`s downstream.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracker_log::RecordSet;
use tracker_protocol::intake::{BATCH_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, is_valid_batch_id, verify_batch};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, EventInput, IntakeContext, ProtocolError, build_event, partition_for};
use tracker_store::GLOBAL_KEY_PREFIX;

use super::{RawBody, RequestMeta, bearer};
use crate::error::ApiError;
use crate::metrics::Endpoint;
use crate::state::{AppState, now_ms, random10};

#[derive(Debug, Serialize)]
struct Rejection {
    index: usize,
    code: &'static str,
    message: String,
}

impl Rejection {
    fn new(index: usize, e: &ProtocolError) -> Self {
        Rejection { index, code: e.code(), message: e.to_string() }
    }
}

#[derive(Debug, Serialize)]
struct BatchResponse {
    accepted: u64,
    rejected: Vec<Rejection>,
    duplicate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// A JSON array of events or `{"events": [...]}`, each element kept raw so that one bad event is reported with its
/// index instead of failing the whole batch.
fn split_batch(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(body),
        Some(b'{') => serde_json::from_slice::<Wrapped<'_>>(body).map(|w| w.events),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_batch",
                "the body must be a JSON array of events or {\"events\": [...]}",
            ));
        }
    };
    parsed.map_err(|e| ApiError::bad_request("invalid_batch", format!("the batch is not valid JSON: {e}")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if tracker_protocol::is_valid_name(k, 128) => Ok(Some(k.to_owned())),
            _ => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 characters from [A-Za-z0-9_.:-]",
            )),
        },
    }
}

async fn tenant_from_token(st: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer(headers).ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <ingest token>"))?;
    Ok(st.authenticate_token(token).await?.key_prefix.clone())
}

fn respond(st: &AppState, endpoint: Endpoint, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            st.metrics.rejected(endpoint, e.code);
            e.into_response()
        }
    }
}

pub async fn batch(
    State(st): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let result = async {
        let key_prefix = tenant_from_token(&st, &headers).await?;
        let idem = idempotency_key(&headers)?;
        let items = split_batch(&body)?;
        if items.is_empty() {
            return Err(ApiError::bad_request("empty_batch", "the batch has no events"));
        }
        if items.len() > st.cfg.max_batch_size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("a batch may hold at most {} events, this one has {}", st.cfg.max_batch_size, items.len()),
            ));
        }
        let ctx = IntakeContext {
            key_prefix: &key_prefix,
            received_at: now_ms(),
            auth: Auth::Token,
            request_path: Some(&meta.path),
            request_host: meta.host.as_deref(),
        };
        let mut set = RecordSetBuilder::with_capacity(body.len());
        let mut rejected = Vec::new();
        for (index, raw) in items.iter().enumerate() {
            let built = EventInput::from_json(raw.get().as_bytes())
                .and_then(|input| build_event(input, &ctx, &st.cfg.limits, random10()));
            match built {
                Ok(event) => set.push(&event),
                Err(e) => {
                    st.metrics.rejected(Endpoint::Batch, e.code());
                    rejected.push(Rejection::new(index, &e));
                }
            }
        }
        if set.is_empty() {
            let body = serde_json::json!({
                "error": { "code": "no_valid_events", "message": "every event in the batch was rejected" },
                "accepted": 0,
                "rejected": rejected,
            });
            return Ok(super::json(StatusCode::UNPROCESSABLE_ENTITY, &body));
        }
        let count = set.len();
        let records =
            RecordSet { partition: partition_for(&key_prefix, st.log.partitions()), count, bytes: set.finish() };
        let receipt = st.log.append(vec![records], idem.map(|k| format!("batch\0{key_prefix}\0{k}"))).await?;
        st.metrics.accepted(Endpoint::Batch, u64::from(count));
        Ok(super::json(
            StatusCode::OK,
            &BatchResponse { accepted: receipt.events(), rejected, duplicate: receipt.duplicate },
        ))
    }
    .await;
    respond(&st, Endpoint::Batch, result)
}

pub async fn ingest(
    State(st): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let result = async {
        let key_prefix = tenant_from_token(&st, &headers).await?;
        let idem = idempotency_key(&headers)?;
        let ctx = IntakeContext {
            key_prefix: &key_prefix,
            received_at: now_ms(),
            auth: Auth::Token,
            request_path: Some(&meta.path),
            request_host: meta.host.as_deref(),
        };
        let event = build_event(EventInput::from_json(&body)?, &ctx, &st.cfg.limits, random10())?;
        let duplicate = st.store_durably(&event, idem.map(|k| format!("ingest\0{key_prefix}\0{k}"))).await?;
        st.metrics.accepted(Endpoint::Ingest, 1);
        Ok(super::json(StatusCode::OK, &serde_json::json!({ "event_id": event.event_id, "duplicate": duplicate })))
    }
    .await;
    respond(&st, Endpoint::Ingest, result)
}

/// Signed batches of already-verified events forwarded by the edge. The signature covers timestamp, batch id and
/// body; the timestamp must be within the replay window; the batch id makes queue retries idempotent.
pub async fn edge_batch(State(st): State<Arc<AppState>>, headers: HeaderMap, RawBody(body): RawBody) -> Response {
    let result = async {
        if st.cfg.edge_secrets.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "edge_intake_disabled",
                "this node has no EDGE_SHARED_SECRETS",
            ));
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(sig), Some(ts), Some(batch_id)) =
            (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER), header(BATCH_ID_HEADER))
        else {
            return Err(ApiError::unauthorized(
                "signed edge batches need X-Tracker-Signature, X-Tracker-Timestamp and X-Tracker-Batch-Id",
            ));
        };
        let ts: i64 = ts
            .parse()
            .map_err(|_| ApiError::unauthorized("X-Tracker-Timestamp must be milliseconds since the epoch"))?;
        if !is_valid_batch_id(batch_id) {
            return Err(ApiError::bad_request(
                "invalid_batch_id",
                "X-Tracker-Batch-Id must be 1 to 128 characters from [A-Za-z0-9_.:-]",
            ));
        }
        // authenticity before anything else about the request is looked at
        if !verify_batch(&st.cfg.edge_secrets, sig, ts, batch_id, &body) {
            return Err(ApiError::unauthorized("the batch signature is invalid"));
        }
        let window = st.cfg.edge_replay_window.as_millis() as i64;
        if (now_ms() - ts).abs() > window {
            return Err(ApiError::unauthorized("the batch timestamp is outside the replay window"));
        }
        let items = split_batch(&body)?;
        if items.len() > st.cfg.max_batch_size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                "too many events in one edge batch",
            ));
        }
        let partitions = st.log.partitions();
        let mut sets: BTreeMap<u32, RecordSetBuilder> = BTreeMap::new();
        let mut rejected = Vec::new();
        for (index, raw) in items.iter().enumerate() {
            let checked: Result<Event, ApiError> = async {
                let event: Event = serde_json::from_str(raw.get())
                    .map_err(|e| ProtocolError::InvalidEventBody { reason: e.to_string() })?;
                event.validate(&st.cfg.limits)?;
                if event.key_prefix != GLOBAL_KEY_PREFIX {
                    st.tenant(&event.key_prefix).await?;
                }
                Ok(event)
            }
            .await;
            match checked {
                Ok(event) => sets.entry(partition_for(&event.key_prefix, partitions)).or_default().push(&event),
                Err(e) => {
                    st.metrics.rejected(Endpoint::Edge, e.code);
                    rejected.push(Rejection { index, code: e.code, message: e.message });
                }
            }
        }
        let sets: Vec<RecordSet> =
            sets.into_iter().map(|(partition, b)| RecordSet { partition, count: b.len(), bytes: b.finish() }).collect();
        let (accepted, duplicate) = if sets.is_empty() {
            (0, false)
        } else {
            let receipt = st.log.append(sets, Some(format!("edge\0{batch_id}"))).await?;
            st.metrics.accepted(Endpoint::Edge, receipt.events());
            (receipt.events(), receipt.duplicate)
        };
        // permanent rejections are reported, not retried: the edge dead-letters them
        Ok(super::json(StatusCode::OK, &BatchResponse { accepted, rejected, duplicate }))
    }
    .await;
    respond(&st, Endpoint::Edge, result)
}
