//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the platform API. The document is written by hand (the
//! node fills in the names of the plans it is configured with);
//! tests keep it true (its operations are exactly [`super::ROUTES`], and the responses the end-to-end tests see
//! match its schemas), and `make api-fuzz` runs schemathesis against a live node with it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document as this node serves it: the plans a tenant can be on are the ones configured here.
pub fn render(plans: &tracker_store::Plans) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(DOCUMENT) else { return DOCUMENT.to_owned() };
    if let Some(plan) = doc.pointer_mut("/components/schemas/Plan").and_then(serde_json::Value::as_object_mut) {
        plan.remove("pattern");
        plan.insert("enum".into(), plans.names().collect::<Vec<_>>().into());
    }
    doc.to_string()
}

pub async fn document(State(state): State<Arc<AppState>>) -> Response {
    let mut res = render(state.cfg.plans()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}
