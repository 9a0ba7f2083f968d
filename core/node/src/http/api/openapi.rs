//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the platform API. The document is written by hand;
//! tests keep it true (its operations are exactly [`super::ROUTES`], and the responses the end-to-end tests see
//! match its schemas), and `make api-fuzz` runs schemathesis against a live node with it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> Response {
    let mut res = DOCUMENT.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}
