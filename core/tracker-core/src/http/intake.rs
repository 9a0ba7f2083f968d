//! Authenticated intake: `/batch` and `/ingest` (tenant from an ingest token) and the edge's signed batches.
//! All three answer only after the events are durable, and all three are idempotent: by `Idempotency-Key` or
//! batch id, and by client-supplied `event_id`s downstream.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Digest as _;
use tracker_log::RecordSet;
use tracker_protocol::service::{self, BatchFormat, GLOBAL_KEY_PREFIX, Rejection};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Event, ProtocolError, partition_for};

use super::{RawBody, RequestMeta, Segment, bearer};
use crate::http::ApiError;
use crate::metrics::Endpoint;
use crate::state::{AppState, random10};

#[derive(Debug, Serialize)]
struct BatchResponse {
    accepted: u64,
    rejected: Vec<Rejection>,
    duplicate: bool,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ProtocolError> {
    let value = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ProtocolError::InvalidIdempotencyKey)?),
    };
    service::idempotency_key(value)
}

fn respond(state: &AppState, endpoint: Endpoint, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.rejected(endpoint, e.code);
            e.into_response()
        }
    }
}

/// Counts a batch's refused elements in the tenant's usage (`dropped_invalid`). A retry of a stored batch is
/// answered from the idempotency record and not counted again; a batch refused whole is counted once per
/// `Idempotency-Key` when it has one.
async fn meter_invalid(state: &AppState, tenant: &str, n: usize, idempotency_key: Option<&str>) {
    if n == 0 {
        return;
    }
    let mut usage = tracker_store::usage::UsageDelta::default();
    usage.add(tenant, state.clock.now_ms(), "dropped_invalid", i64::try_from(n).unwrap_or(i64::MAX));
    let counted = match idempotency_key {
        Some(k) => {
            let id = format!("refused:{}", hex::encode(sha2::Sha256::digest(format!("{tenant}\0{k}").as_bytes())));
            state.outputs.hot.add_usage_once(&id, &usage, state.clock.now_ms()).await.map(|_| ())
        }
        None => state.outputs.hot.add_usage(&usage).await,
    };
    if let Err(e) = counted {
        tracing::warn!(error = %e, tenant, "refused events not metered");
    }
}

/// The body of `/batch` or `/ingest`, read once its credential has been checked (a request that cannot be taken
/// costs no body read) and only up to `limit` bytes, counted as it streams in whatever `Content-Length` says.
async fn authenticated_body(
    state: &AppState,
    endpoint: Endpoint,
    token: Option<&str>,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, Response> {
    if let Err(e) = service::authenticate(state, token).await {
        linger(state, body.into_data_stream());
        return Err(respond(state, endpoint, Err(e.into())));
    }
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            let e = ApiError::bad_request("unreadable_body", "the request body could not be read");
            return Err(respond(state, endpoint, Err(e)));
        };
        if read.len().saturating_add(chunk.len()) > limit {
            linger(state, stream);
            return Err(respond(state, endpoint, Err(ProtocolError::BodyTooLarge { max: limit }.into())));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.into())
}

/// How much more of a refused body is read (and dropped) while its answer goes out, and how long its connection is
/// kept open at most: long enough for the answer to reach a client on any network.
const LINGER_BYTES: usize = 16 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// After refusing a request whose body is still arriving, keeps its connection open a little while the answer goes
/// out: closing a connection with unread data makes the kernel reset it, and the client would lose the answer it was
/// sent (the classic lingering close). Up to [`LINGER_BYTES`] more are read and dropped; past them the body is left
/// unread (the client's sending stalls) until [`LINGER_TIME`] is over. The task is the node's, like its others.
fn linger(state: &AppState, mut stream: axum::body::BodyDataStream) {
    state.tasks.spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let drained = tokio::time::timeout_at(deadline, async {
            let mut left = LINGER_BYTES;
            while left > 0 {
                match stream.next().await {
                    Some(Ok(chunk)) => left = left.saturating_sub(chunk.len()),
                    // the body ended (or failed): nothing is left unread
                    _ => return true,
                }
            }
            false
        })
        .await;
        if drained != Ok(true) {
            tokio::time::sleep_until(deadline).await;
        }
        drop(stream);
    });
}

pub async fn batch(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let token = bearer(&headers).map(str::to_owned);
    let limit = service::max_batch_body(&state.service);
    match authenticated_body(&state, Endpoint::Batch, token.as_deref(), body, limit).await {
        Ok(body) => take_batch(&state, meta, &headers, token.as_deref(), &body, BatchFormat::Ours).await,
        Err(refused) => refused,
    }
}

/// `POST /v1/<token>/batch`: the replaced system's SDK batch, its ingest token in the path (the base URL that SDK
/// is configured with is all it can send). The token never becomes part of an event.
pub async fn v1_batch(
    State(state): State<Arc<AppState>>,
    Segment(token): Segment,
    mut meta: RequestMeta,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    meta.0.path = V1_BATCH_PATH.to_owned();
    let limit = service::max_batch_body(&state.service);
    match authenticated_body(&state, Endpoint::Batch, Some(&token), body, limit).await {
        Ok(body) => take_batch(&state, meta, &headers, Some(&token), &body, BatchFormat::V1).await,
        Err(refused) => refused,
    }
}

/// The request path v1 batch events record (the real one holds the token).
pub const V1_BATCH_PATH: &str = "/v1/batch";

async fn take_batch(
    state: &AppState,
    meta: RequestMeta,
    headers: &HeaderMap,
    token: Option<&str>,
    body: &[u8],
    format: BatchFormat,
) -> Response {
    let result = async {
        let idem = idempotency_key(headers)?;
        let batch =
            service::batch(state, &state.service, &meta.0, token, body, format, state.clock.now_ms(), random10).await?;
        for r in &batch.rejected {
            state.metrics.rejected(Endpoint::Batch, r.code);
        }
        if batch.events.is_empty() {
            meter_invalid(state, &batch.key_prefix, batch.rejected.len(), idem.as_deref()).await;
            let e = ProtocolError::NoValidEvents;
            let body = serde_json::json!({
                "error": { "code": e.code(), "message": e.to_string() },
                "accepted": 0,
                "rejected": batch.rejected,
            });
            return Ok(super::json(StatusCode::UNPROCESSABLE_ENTITY, &body));
        }
        let mut set = RecordSetBuilder::with_capacity(body.len());
        for event in &batch.events {
            set.push(event);
        }
        let key_prefix = &batch.key_prefix;
        let (count, tags) = (set.len(), set.tags());
        let partition = partition_for(key_prefix, state.log.partitions());
        let records = RecordSet { partition, count, tags, bytes: set.finish() };
        let receipt = state.log.append(vec![records], idem.map(|k| format!("batch\0{key_prefix}\0{k}"))).await?;
        if !receipt.duplicate {
            state.metrics.accepted(Endpoint::Batch, u64::from(count));
            meter_invalid(state, key_prefix, batch.rejected.len(), None).await;
        }
        let response =
            BatchResponse { accepted: receipt.events(), rejected: batch.rejected, duplicate: receipt.duplicate };
        Ok(super::json(StatusCode::OK, &response))
    }
    .await;
    respond(state, Endpoint::Batch, result)
}

pub async fn ingest(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let token = bearer(&headers).map(str::to_owned);
    let limit = service::max_ingest_body(&state.service);
    match authenticated_body(&state, Endpoint::Ingest, token.as_deref(), body, limit).await {
        Ok(body) => take_one(&state, &meta, &headers, token.as_deref(), &body).await,
        Err(refused) => refused,
    }
}

/// `POST /v1/<token>/ingest`: `/ingest` for a client configured with a base URL that carries its token.
pub async fn v1_ingest(
    State(state): State<Arc<AppState>>,
    Segment(token): Segment,
    mut meta: RequestMeta,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    meta.0.path = "/v1/ingest".to_owned();
    let limit = service::max_ingest_body(&state.service);
    match authenticated_body(&state, Endpoint::Ingest, Some(&token), body, limit).await {
        Ok(body) => take_one(&state, &meta, &headers, Some(&token), &body).await,
        Err(refused) => refused,
    }
}

async fn take_one(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    token: Option<&str>,
    body: &[u8],
) -> Response {
    let result = async {
        let idem = idempotency_key(headers)?;
        let event =
            service::ingest(state, &state.service, &meta.0, token, body, state.clock.now_ms(), random10()).await?;
        let key = idem.map(|k| format!("ingest\0{}\0{k}", event.key_prefix));
        let duplicate = state.store_durably(&event, key).await?;
        state.metrics.accepted(Endpoint::Ingest, 1);
        // `accepted` as the replaced system's `/ingest` answered, for its clients
        let answer = serde_json::json!({ "event_id": event.event_id, "duplicate": duplicate, "accepted": 1 });
        Ok(super::json(StatusCode::OK, &answer))
    }
    .await;
    respond(state, Endpoint::Ingest, result)
}

/// An edge batch: the events, and what the edge refused of the client's request (counted in the tenant's usage).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    invalid: Option<EdgeInvalid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeInvalid {
    key_prefix: String,
    count: u32,
}

/// Counts the elements the edge refused, once per batch id (the queue delivers at least once).
async fn meter_edge_invalid(state: &AppState, batch_id: &str, inv: &EdgeInvalid) -> Result<(), ApiError> {
    if !tracker_protocol::is_valid_key_prefix(&inv.key_prefix) || inv.count as usize > state.cfg.links.max_batch_size {
        return Err(
            ProtocolError::InvalidBatch { reason: "invalid must name a tenant and at most a batch".into() }.into()
        );
    }
    let mut usage = tracker_store::usage::UsageDelta::default();
    usage.add(&inv.key_prefix, state.clock.now_ms(), "dropped_invalid", i64::from(inv.count));
    state.outputs.hot.add_usage_once(&format!("edge:{batch_id}"), &usage, state.clock.now_ms()).await.map_err(|e| {
        tracing::error!(error = %e, "hot tier failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "hot_unavailable", "usage cannot be recorded right now")
    })?;
    Ok(())
}

/// Signed batches of already-verified events forwarded by the edge. The signature covers timestamp, batch id and
/// body; the timestamp must be within the replay window; the batch id makes queue retries idempotent.
pub async fn edge_batch(State(state): State<Arc<AppState>>, headers: HeaderMap, RawBody(body): RawBody) -> Response {
    let result = async {
        let batch_id = super::internal::authenticate(&state, &headers, None, &body)?;
        let (items, invalid) = match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {
                let b: EdgeBody<'_> = serde_json::from_slice(&body)
                    .map_err(|e| ProtocolError::InvalidBatch { reason: format!("not an edge batch: {e}") })?;
                (b.events, b.invalid)
            }
            _ => (service::split_batch(&body, state.cfg.links.max_batch_size)?, None),
        };
        if items.len() > state.cfg.links.max_batch_size {
            return Err(ProtocolError::BatchTooLarge { max: state.cfg.links.max_batch_size, got: items.len() }.into());
        }
        let partitions = state.log.partitions();
        let mut sets: BTreeMap<u32, RecordSetBuilder> = BTreeMap::new();
        let mut rejected = Vec::new();
        for (index, raw) in items.iter().enumerate() {
            let checked: Result<Event, ProtocolError> = async {
                let event: Event = serde_json::from_str(raw.get())
                    .map_err(|e| ProtocolError::InvalidEventBody { reason: e.to_string() })?;
                event.validate(&state.cfg.links.limits)?;
                if event.key_prefix != GLOBAL_KEY_PREFIX {
                    service::active_tenant(&*state, &event.key_prefix).await?;
                }
                Ok(event)
            }
            .await;
            match checked {
                Ok(event) => sets.entry(partition_for(&event.key_prefix, partitions)).or_default().push(&event),
                // the metadata store being down is not the events' fault: let the edge retry the whole batch
                Err(e @ ProtocolError::Unavailable { .. }) => return Err(e.into()),
                Err(e) => {
                    state.metrics.rejected(Endpoint::Edge, e.code());
                    rejected.push(Rejection::new(index, &e));
                }
            }
        }
        let sets: Vec<RecordSet> = sets
            .into_iter()
            .map(|(partition, b)| RecordSet { partition, count: b.len(), tags: b.tags(), bytes: b.finish() })
            .collect();
        let (accepted, duplicate) = if sets.is_empty() {
            (0, false)
        } else {
            let receipt = state.log.append(sets, Some(format!("edge\0{batch_id}"))).await?;
            if !receipt.duplicate {
                state.metrics.accepted(Endpoint::Edge, receipt.events());
            }
            (receipt.events(), receipt.duplicate)
        };
        state.metrics.edge_batch();
        if let Some(inv) = invalid {
            meter_edge_invalid(&state, &batch_id, &inv).await?;
        }
        // permanent rejections are reported, not retried: the edge dead-letters them
        Ok(super::json(StatusCode::OK, &BatchResponse { accepted, rejected, duplicate }))
    }
    .await;
    respond(&state, Endpoint::Edge, result)
}
