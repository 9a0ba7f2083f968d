//! The HTTP surface of a core node.

pub mod api;
mod dashboard;
mod deadline;
mod error;
mod intake;
mod internal;
pub mod live;
mod ops;
mod request_id;
pub mod server;
mod shed;
mod track;

pub use deadline::BodyTimeouts;
pub use error::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracker_protocol::truncate_field;

use crate::config::TrustProxy;
use crate::state::AppState;

use tracker_protocol::service::{MAX_BEACON_BYTES, RequestInfo};

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.cfg.node.max_body_bytes;
    let max_in_flight = state.cfg.node.max_in_flight;
    Router::new()
        .route("/t", get(track::click))
        .route("/t.js", get(track::script))
        .route("/dashboard", get(dashboard::serve))
        .route("/dashboard/", get(dashboard::serve))
        .route("/dashboard/{*file}", get(dashboard::serve))
        .route(
            "/t/auto",
            post(track::beacon).options(track::beacon_preflight).layer(DefaultBodyLimit::max(MAX_BEACON_BYTES)),
        )
        .route("/t/{tu_id}", get(track::short))
        .route("/p", get(track::postback))
        .route("/i", get(track::impression))
        .route("/batch", post(intake::batch))
        .route("/ingest", post(intake::ingest))
        // the replaced system's clients, whose configured base URL carries an ingest token
        .route("/v1/{token}/batch", post(intake::v1_batch))
        .route("/v1/{token}/ingest", post(intake::v1_ingest))
        .route("/v1/{token}/p", get(track::v1_postback))
        .route("/internal/v1/edge/batches", post(intake::edge_batch))
        .route("/internal/v1/tenants/{key_prefix}", get(internal::tenant))
        .route("/internal/v1/short-links/{tu_id}", get(internal::short_link))
        .route("/internal/v1/tokens/{hash}", get(internal::token))
        .merge(ops_router())
        .merge(api::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // one layer of the router: each of its layers wraps every route again, a boxed service cloned per request
        .layer(
            tower::ServiceBuilder::new()
                // made (or taken from `X-Request-Id`), on the request's span, on the answer
                .layer(request_id::RequestIdLayer)
                // past MAX_IN_FLIGHT requests at once, the next is answered 503 at once instead of queueing without
                // bound
                .layer(shed::ShedLayer::new(max_in_flight))
                // a body that stops arriving is answered 408 instead of holding its request slot
                .layer(deadline::BodyDeadlineLayer(state.cfg.node.body_timeouts))
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// `GET /health`, `/health/broker` and `/metrics`: what the node serves beside its endpoints, and all that
/// `tracker-consumer` serves.
pub fn ops_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(ops::health))
        .route("/health/broker", get(ops::broker))
        .route("/metrics", get(ops::metrics))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not accept that method")
}

/// Facts about the request that become event fields (truncated, never rejected: a click must not fail because
/// of a huge header).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta(pub RequestInfo);

impl FromRequestParts<Arc<AppState>> for RequestMeta {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let max = state.cfg.links.limits.max_field_len;
        let h = &parts.headers;
        let header = |name: header::HeaderName| -> Option<String> {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| truncate_field(v.trim(), max).to_owned())
                .filter(|v| !v.is_empty())
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let ip = match state.cfg.node.trust_proxy {
            TrustProxy::None => peer,
            // the entry our proxy appended (the rightmost): the ones left of it are the client's own words
            TrustProxy::XForwardedFor => tracker_protocol::client_ip::forwarded_for(
                h.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()),
            )
            .map(|ip| ip.to_string())
            .or(peer),
            TrustProxy::Cloudflare => h
                .get("cf-connecting-ip")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
                .or(peer),
        };
        Ok(RequestMeta(RequestInfo {
            ip,
            user_agent: header(header::USER_AGENT),
            referer: header(header::REFERER),
            accept_language: header(header::ACCEPT_LANGUAGE),
            host: header(header::HOST),
            path: truncate_field(parts.uri.path(), max).to_owned(),
            origin: header(header::ORIGIN),
        }))
    }
}

/// The request body as bytes; an oversized or unreadable body is a JSON error like every other rejection.
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state).await.map(RawBody).map_err(|e| {
            let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "unreadable_body" };
            ApiError::new(e.status(), code, e.body_text())
        })
    }
}

/// A path segment; one that is not valid percent-encoded UTF-8 is a JSON 400 like every other rejection.
#[derive(Debug)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| Segment(s))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Two path segments, checked like [`Segment`].
#[derive(Debug)]
pub struct Segments(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segments {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path((a, b))| Segments(a, b))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}
