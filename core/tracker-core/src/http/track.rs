//! The public tracking endpoints: clicks (`/t`, `/t/<tu_id>`), the browser beacon (`/t/auto`), postbacks (`/p`)
//! and impressions (`/i`). The logic is `tracker_protocol::service`, shared with the edge Worker; this module is
//! transport: HTTP in, events to the log, HTTP out.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracker_protocol::service::{
    self, BEACON_PREFLIGHT_HEADERS, PIXEL_GIF, PIXEL_HEADERS, PIXEL_REFUSED_HEADER, REDIRECT_HEADERS,
};
use tracker_protocol::{LinkKind, ProtocolError};

use super::{RawBody, RequestMeta, Segment, bearer};
use crate::http::ApiError;
use crate::metrics::Endpoint;
use crate::state::{AppState, random10};

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(loc) => {
            let mut res = (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, loc)]).into_response();
            for (k, v) in REDIRECT_HEADERS {
                res.headers_mut().insert(k, HeaderValue::from_static(v));
            }
            res
        }
        // build_redirect only produces visible ASCII, so this is unreachable in practice; still no panic
        Err(_) => {
            ApiError::from(ProtocolError::InvalidDestination { reason: "not a valid header value" }).into_response()
        }
    }
}

fn count_and_answer<T>(
    state: &AppState,
    endpoint: Endpoint,
    result: Result<T, ApiError>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(v) => {
            state.metrics.accepted(endpoint, 1);
            ok(v)
        }
        Err(e) => {
            state.metrics.rejected(endpoint, e.code);
            e.into_response()
        }
    }
}

async fn follow(
    state: &AppState,
    meta: &RequestMeta,
    tu_id: Option<&str>,
    query: Option<String>,
) -> Result<String, ApiError> {
    let click = service::click(
        state,
        &state.service,
        &meta.0,
        tu_id,
        query.as_deref().unwrap_or_default(),
        state.clock.now_ms(),
        random10(),
    )
    .await?;
    // the click is queued before the browser is answered; it is on disk within the commit window
    state.emit(&click.event).await?;
    Ok(click.location)
}

pub async fn click(State(state): State<Arc<AppState>>, meta: RequestMeta, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let result = follow(&state, &meta, None, q).await;
    if result.is_ok() {
        state.metrics.redirect_served(started.elapsed());
    }
    count_and_answer(&state, Endpoint::Click, result, |loc| redirect(&loc))
}

pub async fn short(
    State(state): State<Arc<AppState>>,
    Segment(tu_id): Segment,
    meta: RequestMeta,
    RawQuery(q): RawQuery,
) -> Response {
    let started = Instant::now();
    let result = follow(&state, &meta, Some(&tu_id), q).await;
    if result.is_ok() {
        state.metrics.redirect_served(started.elapsed());
    }
    count_and_answer(&state, Endpoint::Short, result, |loc| redirect(&loc))
}

/// A postback or impression event, authenticated (or not) by the shared service.
async fn signal(
    state: &AppState,
    meta: &RequestMeta,
    token: Option<&str>,
    kind: LinkKind,
    query: Option<String>,
) -> Result<tracker_protocol::Event, ApiError> {
    let q = query.as_deref().unwrap_or_default();
    Ok(service::signal(state, &state.service, &meta.0, kind, q, token, state.clock.now_ms(), random10()).await?)
}

pub async fn postback(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    take_postback(&state, &meta, bearer(&headers), q).await
}

/// `GET /v1/<token>/p`: a postback from a client configured with a base URL that carries its ingest token.
pub async fn v1_postback(
    State(state): State<Arc<AppState>>,
    Segment(token): Segment,
    mut meta: RequestMeta,
    RawQuery(q): RawQuery,
) -> Response {
    meta.0.path = "/v1/p".to_owned();
    take_postback(&state, &meta, Some(&token), q).await
}

async fn take_postback(state: &AppState, meta: &RequestMeta, token: Option<&str>, q: Option<String>) -> Response {
    let result = async {
        let event = signal(state, meta, token, LinkKind::Postback, q).await?;
        // a postback is a server telling us about a conversion: answer only once it is durable
        state.store_durably(&event, None).await?;
        Ok(event)
    }
    .await;
    count_and_answer(state, Endpoint::Postback, result, |e| {
        super::json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "event_id": e.event_id, "authenticated": e.auth.is_authenticated() }),
        )
    })
}

pub async fn impression(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let event = signal(&state, &meta, bearer(&headers), LinkKind::Impression, q).await?;
        Ok::<_, ApiError>(state.emit(&event).await?)
    }
    .await;
    // a pixel sits in a page or an email: whatever the verdict, the visitor gets an image, never a broken one;
    // a refusal is counted and named in a header
    let refused = result.as_ref().err().map(|e| e.code);
    let mut res =
        count_and_answer(&state, Endpoint::Impression, result, |()| (StatusCode::OK, PIXEL_GIF).into_response());
    if let Some(code) = refused {
        res = (StatusCode::OK, PIXEL_GIF).into_response();
        if let Ok(v) = HeaderValue::from_str(code) {
            res.headers_mut().insert(PIXEL_REFUSED_HEADER, v);
        }
    }
    for (k, v) in PIXEL_HEADERS {
        res.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    res
}

fn with_cors(mut res: Response) -> Response {
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

pub async fn beacon_preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    for (k, v) in BEACON_PREFLIGHT_HEADERS {
        res.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    res
}

pub async fn beacon(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    body: Result<RawBody, ApiError>,
) -> Response {
    let result = async {
        let RawBody(body) = body?;
        let event = service::beacon(&*state, &state.service, &meta.0, &body, state.clock.now_ms(), random10()).await?;
        Ok::<_, ApiError>(state.emit(&event).await?)
    }
    .await;
    with_cors(count_and_answer(&state, Endpoint::Beacon, result, |()| StatusCode::NO_CONTENT.into_response()))
}

/// `GET /t.js`: the browser beacon (`tracker_protocol::script`: versions, caching, ETag).
pub async fn script(RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let answer = tracker_protocol::script::answer(q.as_deref(), if_none_match);
    let mut response = (StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK), answer.body).into_response();
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
