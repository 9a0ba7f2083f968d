//! HTTP errors: one JSON shape, `{"error": {"code": "...", "message": "..."}}`, with a precise 4xx for every bad
//! input and 503 when the node cannot make an event durable.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracker_log::LogError;
use tracker_protocol::ProtocolError;
use tracker_store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Headers the answer carries besides the body (`Retry-After`, `RateLimit`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError { headers: e.retry_headers(), ..ApiError::new(status, e.code(), e.to_string()) }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        tracing::error!(error = %e, "event log refused a write");
        // the log's own words (paths, broker addresses) stay in the node's log
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", "events could not be stored; retry later")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "metadata store failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "metadata_unavailable", "the metadata store is unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, value);
            }
        }
        res
    }
}
