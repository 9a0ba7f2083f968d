//! `POST /api/query`: the body (`{"query", "tier"}`) and the answer over HTTP; the routing to the tiers is
//! `crate::query`'s.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracker_query::Query;

use crate::http::ApiError;
use crate::http::api::events::hot_err;
use crate::http::api::{Body, Principal, json_response};
use crate::query::{Choice, QueryError};
use crate::state::AppState;

/// The body of `POST /api/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    query: Query,
    #[serde(default)]
    tier: Choice,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let message = e.to_string();
        match e {
            QueryError::Invalid(_) => ApiError::bad_request("invalid_query", message),
            QueryError::CannotAnswer(_) => ApiError::bad_request("tier_cannot_answer", message),
            QueryError::TierUnavailable(_) => ApiError::bad_request("tier_unavailable", message),
            QueryError::NotInPlan(_) => ApiError::new(StatusCode::FORBIDDEN, "tier_not_in_plan", message),
            QueryError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "answer_too_large", message),
            QueryError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "query_timeout", message),
            QueryError::Failed(_) => {
                // an engine's or an object store's words (paths, addresses) stay in the log
                tracing::error!(error = %message, "a query failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "query_failed", "the query failed; retry later")
            }
            QueryError::Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "query_unavailable", message),
            QueryError::Hot(e) => hot_err(e),
        }
    }
}

/// `POST /api/query`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<QueryBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let answer = crate::query::answer(&state, tenant, body.tier, body.query).await?;
    Ok(json_response(StatusCode::OK, &answer))
}
