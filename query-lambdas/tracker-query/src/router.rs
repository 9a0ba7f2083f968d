//! The query functions' one router, `POST /v1/query`, and the engines behind it.
//!
//! The same [`router`] runs as an AWS Lambda function (behind its function URL, through `lambda_http`) and as a
//! local HTTP server (`tracker-query-lambda` without a Lambda runtime around it); the core node calls
//! [`Engines::answer`] in-process when no `QUERY_URL` is set, which is the embedded default.
//!
//! A request is `{"tenant": "<key prefix>", "tier": "warm" | "cold", "query": {...}}`, signed by the platform API
//! after it has authenticated the tenant: `X-Tracker-Timestamp` and `X-Tracker-Signature` over the body with a
//! `QUERY_SECRET` (see [`tracker_protocol::intake::sign_query`]), within a five-minute window. Nothing unsigned
//! is answered, because the body names the tenant.
//!
//! Every failure is an answer with a reason: `400 invalid_query`, `400 tier_cannot_answer`, `401 unauthorized`,
//! `413 answer_too_large` (over Lambda's 6 MB response limit), `504 query_timeout`, `503 query_failed`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracker_protocol::settings::{Section, var};

use crate::{Query, QueryError};
#[cfg(feature = "engines")]
pub use engines::{Engines, router};

/// The query functions' own variables (`tracker-query-lambda`; with [`tracker_archive::SETTINGS`]): the one
/// declaration of their defaults, rendered in `query-lambdas/README.md` (a test keeps them equal).
pub const SETTINGS: Section = Section {
    title: "Query functions",
    variables: &[
        var(
            "QUERY_SECRET",
            "",
            "required: comma-separated secrets (at least 16 bytes each) the platform API signs requests with \
             (several during a rotation)",
        ),
        var("QUERY_TIMEOUT_SECS", "25", "longest a query may run (1 to 900)"),
        var("QUERY_LISTEN", "127.0.0.1:8090", "the local server's address (not used under Lambda)"),
    ],
};

/// The archived tiers the query functions answer (the hot tier is the core node's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Polars over the hourly rollups: series and breakdowns without params, up to 90 days.
    Warm,
    /// DataFusion over every archived event.
    Cold,
}

/// Largest answer: AWS Lambda refuses responses over 6 MB, so nothing bigger is produced on any path.
pub const MAX_ANSWER_BYTES: usize = 6_000_000 - 64 * 1024;

/// Why an answer was not given, with the HTTP status and code it is on the wire.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, code, message: message.into() }
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<QueryError> for Refusal {
    fn from(e: QueryError) -> Refusal {
        match e {
            QueryError::Invalid(reason) => Refusal::new(StatusCode::BAD_REQUEST, "invalid_query", reason),
            QueryError::Unsupported(reason) => Refusal::new(StatusCode::BAD_REQUEST, "tier_cannot_answer", reason),
            other => {
                tracing::error!(error = %other, "query failed");
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "query_failed", "the query failed: try again later")
            }
        }
    }
}

/// A request to the query functions.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub tenant: String,
    pub tier: Tier,
    pub query: Query,
}

/// The engines themselves and the router in front of them (the `engines` feature).
#[cfg(feature = "engines")]
mod engines {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::{Value, json};
    use tracker_archive::ArchiveSettings;
    use tracker_protocol::intake::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_query};

    use super::{MAX_ANSWER_BYTES, QueryRequest, Refusal, Tier};
    use crate::warm::Warm;
    use crate::{Archive, Query};

    /// Largest request body.
    const MAX_REQUEST_BYTES: usize = 64 * 1024;
    /// How far a signed request's timestamp may be from now.
    const SIGNATURE_WINDOW_MS: u64 = 5 * 60 * 1000;

    /// The warm and cold engines over one archive, built once (per Lambda cold start, or per node).
    #[derive(Debug)]
    pub struct Engines {
        cold: Archive,
        warm: Warm,
        timeout: Duration,
    }

    impl Engines {
        pub fn new(settings: ArchiveSettings, timeout: Duration) -> Engines {
            Engines { cold: Archive::new(settings.clone()), warm: Warm::new(settings), timeout }
        }

        /// Answers `query` for `tenant` on `tier`, within the time limit and the answer size limit.
        pub async fn answer(&self, tenant: &str, tier: Tier, query: &Query) -> Result<Value, Refusal> {
            let work = async {
                match tier {
                    Tier::Warm => self.warm.answer(tenant, query).await,
                    Tier::Cold => self.cold.answer(tenant, query).await,
                }
            };
            let answer = match tokio::time::timeout(self.timeout, work).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(Refusal::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "query_timeout",
                        format!(
                            "the query ran longer than {} s: narrow the range or the filters",
                            self.timeout.as_secs()
                        ),
                    ));
                }
            };
            let size = serde_json::to_vec(&answer).map_or(0, |b| b.len());
            if size > MAX_ANSWER_BYTES {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "answer_too_large",
                    format!(
                        "the answer would be {size} bytes (at most {MAX_ANSWER_BYTES}): \
                         lower limit or top, or use a longer interval"
                    ),
                ));
            }
            Ok(answer)
        }
    }

    struct Shared {
        engines: Arc<Engines>,
        secrets: Vec<Vec<u8>>,
    }

    /// `POST /v1/query` and `GET /health` over `engines`, accepting requests signed with any of `secrets`.
    pub fn router(engines: Arc<Engines>, secrets: Vec<Vec<u8>>) -> Router {
        let shared = Arc::new(Shared { engines, secrets });
        Router::new()
            .route("/v1/query", post(query))
            .route("/health", get(|| async { axum::Json(json!({ "status": "ok" })) }))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(shared)
    }

    fn now_ms() -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }

    async fn query(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, Refusal> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let unauthorized = |m: &str| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let timestamp: i64 = header(TIMESTAMP_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| unauthorized("X-Tracker-Timestamp is missing or not ms since the epoch"))?;
        if now_ms().abs_diff(timestamp) > SIGNATURE_WINDOW_MS {
            return Err(unauthorized("X-Tracker-Timestamp is more than five minutes from now"));
        }
        let signature = header(SIGNATURE_HEADER).ok_or_else(|| unauthorized("X-Tracker-Signature is missing"))?;
        if !verify_query(&shared.secrets, signature, timestamp, &body) {
            return Err(unauthorized("the signature does not match the body under any QUERY_SECRET"));
        }
        let request: QueryRequest = serde_json::from_slice(&body)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "invalid_query", format!("the request: {e}")))?;
        let answer = shared.engines.answer(&request.tenant, request.tier, &request.query).await?;
        Ok(axum::Json(answer).into_response())
    }
}

#[cfg(test)]
mod declared {
    /// `query-lambdas/README.md` shows the declared variables, rendered.
    #[test]
    fn the_readme_shows_the_declared_variables() {
        let readme = include_str!("../../README.md");
        let table = tracker_protocol::settings::markdown(&[super::SETTINGS]);
        assert!(readme.contains(&table), "query-lambdas/README.md should show:\n{table}");
    }
}
