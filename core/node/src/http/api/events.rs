//! `/api/events...`: the event query routes. They are authenticated and scoped like every route; the data behind
//! them comes with the stats tier (hot) and the query functions (warm and cold). Until then they answer 501
//! with a message saying so, never made-up data.

use std::sync::Arc;

use axum::Extension;
use axum::http::StatusCode;

use super::Principal;
use crate::error::ApiError;

fn not_yet(p: &Principal, what: &str) -> ApiError {
    if let Err(e) = p.tenant("read") {
        return e;
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!("{what} is not served yet: it arrives with the stats tier; events are being recorded meanwhile"),
    )
}

pub async fn list(Extension(p): Extension<Arc<Principal>>) -> ApiError {
    not_yet(&p, "the event listing")
}

pub async fn stats(Extension(p): Extension<Arc<Principal>>) -> ApiError {
    not_yet(&p, "event statistics")
}

pub async fn matches(Extension(p): Extension<Arc<Principal>>) -> ApiError {
    not_yet(&p, "event matching")
}
