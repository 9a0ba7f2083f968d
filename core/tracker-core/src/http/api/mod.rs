//! # The platform API
//!
//! JSON over HTTP under `/api`: tenants (admin credential), API keys, ingest tokens, tracking links, webhook
//! endpoints, filter rules, and the event query routes. The same routes are served twice:
//!
//! - `/api/...` directly (self-hosted), authenticated by `Authorization: Bearer <credential>` or a dashboard
//!   session's cookie (`session`; changes made with a session also need its CSRF token);
//! - `/internal/v1/api/...` for the edge Worker, which authenticates itself with a signature over the request
//!   (`tracker_protocol::intake::sign_api`) and passes the caller's credential only as its SHA-256.
//!
//! Either way the caller is resolved here, from the credential alone: the tenant of every tenant route is the
//! tenant of the API key, never an id from the path, query or body, and every store call is scoped by it.
//! Responses that change hot-path data (tenant keys, short links, tokens) carry the cache keys to drop; the node
//! drops its own caches and the edge drops its KV entries (see [`Purge`]).

mod auth;
mod beacon;
pub(crate) mod events;
mod intake_settings;
mod keys;
mod links;
mod mcp;
pub(crate) mod openapi;
mod query;
mod rules;
mod session;
mod tenants;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tracker_store::{MAX_PAGE, Page, StoreError};

pub use auth::{Caller, Principal, UrlCredential};

use crate::http::ApiError;
use crate::state::AppState;

/// Response header listing the hot-path cache keys a change made stale (only on answers to the edge).
pub const PURGE_HEADER: &str = "x-tracker-edge-purge";
/// Request header with the public origin the edge serves the API under (for the links the API prints).
pub const PUBLIC_URL_HEADER: &str = "x-tracker-public-url";

/// Largest platform API request body.
pub const MAX_API_BODY: usize = 1 << 20;

/// Declares the routes once: the router is built from this table and the OpenAPI test checks the document
/// against it, so neither can list an operation the other does not have.
macro_rules! api_routes {
    ($( $path:literal => { $( $method:ident $handler:path ),+ $(,)? } )*) => {
        /// Every operation as `(method, path below /api)`.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),* ];

        fn routes() -> Router<Arc<AppState>> {
            Router::new() $( .route($path, MethodRouter::new() $( .$method($handler) )+ ) )*
        }
    };
}

api_routes! {
    "/openapi.json" => { get openapi::document }
    "/tools" => { get mcp::definitions }
    "/me" => { get auth::me }
    "/session" => { get session::get, post session::create, delete session::delete }
    "/tenants" => { get tenants::list, post tenants::create }
    "/tenants/{key_prefix}" => { get tenants::get, patch tenants::update }
    "/tenants/{key_prefix}/rotate-keys" => { post tenants::rotate }
    "/tenants/{key_prefix}/api-keys" => { post tenants::create_key }
    "/keys" => { get keys::list_keys, post keys::create_key }
    "/keys/{key_id}" => { get keys::get_key, delete keys::revoke_key }
    "/tokens" => { get keys::list_tokens, post keys::create_token }
    "/tokens/{token_id}" => { get keys::get_token, delete keys::revoke_token }
    "/links" => { get links::list, post links::create }
    "/links/sign" => { post links::sign }
    "/links/{tu_id}" => { get links::get, patch links::update, delete links::delete }
    "/webhooks" => { get webhooks::list, post webhooks::create }
    "/webhooks/{webhook_id}" => { get webhooks::get, patch webhooks::update, delete webhooks::delete }
    "/webhooks/{webhook_id}/test" => { post webhooks::test }
    "/beacon" => { get beacon::get, put beacon::put }
    "/intake" => { get intake_settings::get, put intake_settings::put }
    "/rules" => { get rules::list, post rules::create }
    "/rules/{rule_id}" => { get rules::get, patch rules::update, delete rules::delete }
    "/webhooks/{webhook_id}/deliveries" => { get webhooks::deliveries }
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver" => { post webhooks::redeliver }
    "/events" => { get events::list }
    "/events/stats" => { get events::stats }
    "/events/match" => { get events::matches }
    "/query" => { post query::query }
    "/drops" => { get events::drops }
    "/drops/samples" => { get events::samples }
    "/sse/tokens" => { post crate::http::live::create_token }
    "/usage" => { get usage::usage }
    "/usage/invoice" => { get usage::invoice_preview }
    "/admin/usage" => { get usage::admin }
}

/// The API for direct callers (`/api`) and for the edge (`/internal/v1/api`).
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let limit = axum::extract::DefaultBodyLimit::max(MAX_API_BODY);
    let direct = routes().layer(limit).layer(axum::middleware::from_fn_with_state(state.clone(), auth::direct));
    let edge = routes()
        .merge(mcp::route(state.clone()))
        .layer(limit)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::via_edge));
    // MCP (streamable HTTP): `/mcp` here, `/internal/v1/api/mcp` from the edge's `/mcp`
    let mcp_direct =
        mcp::route(state.clone()).layer(limit).layer(axum::middleware::from_fn_with_state(state.clone(), auth::direct));
    // live events: the same callers, plus `?access_token=` for browsers' EventSource (which cannot set headers)
    let live = || Router::new().route("/events", axum::routing::get(crate::http::live::events));
    let live_direct = live().layer(axum::middleware::from_fn_with_state(state.clone(), auth::direct_live));
    let live_edge = live().layer(axum::middleware::from_fn_with_state(state, auth::via_edge));
    Router::new()
        .merge(mcp_direct)
        .nest("/api", direct)
        .nest("/internal/v1/api", edge)
        .nest("/sse", live_direct)
        .nest("/internal/v1/sse", live_edge)
}

/// The API's handlers without authentication, for callers already authenticated in this process (MCP tool
/// calls): the request must carry the caller's `Arc<Principal>` in its extensions.
fn handlers(state: Arc<AppState>) -> Router {
    routes().layer(axum::extract::DefaultBodyLimit::max(MAX_API_BODY)).with_state(state)
}

/// Hot-path cache keys a change made stale (`tenant:<key_prefix>`, `short:<tu_id>`, `token:<sha256>`).
#[derive(Debug, Clone, Default)]
pub struct Purge(pub Vec<String>);

/// A response that also drops hot-path cache entries.
fn purging(res: impl IntoResponse, keys: Vec<String>) -> Response {
    let mut res = res.into_response();
    res.extensions_mut().insert(Purge(keys));
    res
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    super::json(status, body)
}

/// A JSON answer (for API routes defined outside this module).
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    json(status, body)
}

/// The request body as JSON of type `T`; anything else is a 400 (or 415, 413) that says what is wrong.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| {
            let mime = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
        let super::RawBody(bytes) = super::RawBody::from_request(req, state).await?;
        if json_type == Some(false) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        // no body at all is an empty object (`POST /api/tokens` with every field defaulted)
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let invalid = |e: serde_json::Error| {
            ApiError::bad_request("invalid_body", format!("the JSON body is not valid here: {e}"))
        };
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        // an object, not an array that serde would also map onto a struct's fields in order
        if !value.is_object() {
            return Err(ApiError::bad_request("invalid_body", "the JSON body must be an object"));
        }
        integral_floats_as_integers(&mut value);
        serde_json::from_value(value).map(Body).map_err(invalid)
    }
}

/// JSON has one number type: `5.0` is the integer 5 (as JSON Schema says), so integral floats become integers
/// before typed decoding.
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Query parameters of type `T`; unknown or malformed ones are a 400 that names them.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// `?limit=&cursor=` of list routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

impl PageQuery {
    /// The page size and the cursor. A cursor is the id of the last row of the previous page (the next page
    /// starts after it in id order), so any string is a valid position; only its length is bounded.
    fn parts(&self) -> Result<(u32, Option<String>), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        if let Some(c) = &self.cursor
            && (c.is_empty() || c.len() > 200)
        {
            return Err(ApiError::bad_request("invalid_cursor", "cursor must be 1 to 200 characters"));
        }
        Ok((limit, self.cursor.clone()))
    }
}

/// A list answer: `{"data": [...], "next_cursor": "..." | null}`.
fn listing<T, V: Serialize>(page: Page<T>, view: impl Fn(T) -> V) -> Response {
    let next = page.next;
    let data: Vec<V> = page.items.into_iter().map(view).collect();
    json(StatusCode::OK, &serde_json::json!({ "data": data, "next_cursor": next }))
}

/// 404 with the resource named; also the answer for another tenant's ids.
fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
}

/// Maps store errors of a tenant-scoped call: not found and invalid input are the caller's (4xx).
fn store_err(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound(_) => not_found(what),
        StoreError::Invalid(reason) => ApiError::bad_request("invalid_field", reason),
        StoreError::Rejected(reason) => ApiError::bad_request("invalid_rule", reason),
        e @ StoreError::OverLimit { .. } => ApiError::new(StatusCode::FORBIDDEN, "plan_limit", e.to_string()),
        StoreError::Conflict(thing) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", format!("{thing} already exists"))
        }
        other => ApiError::from(other),
    }
}

/// An optional nested object: `null` or absent is `None`, and an array is refused (serde would otherwise map it
/// onto the struct's fields in order).
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v @ serde_json::Value::Object(_) => serde_json::from_value(v).map(Some).map_err(D::Error::custom),
        _ => Err(D::Error::custom("must be an object")),
    }
}

/// For `PATCH` fields that can be cleared: absent = `None`, `null` = `Some(None)`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Latest expiry accepted: the year 3000, in ms since the epoch.
pub(crate) const MAX_EXPIRY_MS: i64 = 32_503_680_000_000;

/// An expiry in ms since the epoch. One in the past is allowed and means "already expired" (a link then goes to
/// its fallback; a key or token is created unusable), so a client clock never decides whether a request is valid.
fn expiry_ms(field: &'static str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(t) if !(0..=MAX_EXPIRY_MS).contains(&t) => Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be between 0 and {MAX_EXPIRY_MS} (ms since the epoch)"),
        )),
        other => Ok(other),
    }
}

/// A free-text name or description field.
fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be at most {max} bytes without control characters"),
        ));
    }
    Ok(())
}
