//! `/api/intake`: what the tenant accepts without a credential. Its key prefix is public (every link and beacon tag
//! shows it), so anyone can send it open postbacks, impression pixels and beacon events, and each one kept is
//! billed. A tenant can refuse open postbacks outright and give the rest a monthly budget of their own, past which
//! the filter drops them as `unauthenticated_budget` (never billed) while authenticated ingestion goes on.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracker_protocol::quota::{month_start, next_month_start};
use tracker_protocol::service::IntakeSettings;

use super::{Body, Principal, json, purging, store_err};
use crate::http::ApiError;
use crate::state::AppState;

/// The largest budget (a plan's allowance is a `u64` too; this keeps the number exact in JSON).
const MAX_BUDGET: u64 = 1 << 53;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntake {
    open_postbacks: bool,
    #[serde(default)]
    unauthenticated_monthly_events: Option<u64>,
}

async fn view(state: &AppState, key_prefix: &str, intake: &IntakeSettings) -> Result<serde_json::Value, ApiError> {
    let now = state.clock.now_ms();
    let (from, to) = (month_start(now), next_month_start(now));
    let hot = &state.outputs.hot;
    let kept = hot.usage_total(key_prefix, "unauthenticated", from, to).await.map_err(super::events::hot_err)?;
    let dropped =
        hot.usage_total(key_prefix, "dropped_unauthenticated", from, to).await.map_err(super::events::hot_err)?;
    Ok(serde_json::json!({
        "open_postbacks": intake.open_postbacks,
        "unauthenticated_monthly_events": intake.unauthenticated_monthly_events,
        "this_month": {
            "period": tracker_protocol::quota::month_name(from),
            "unauthenticated_kept": kept,
            "unauthenticated_dropped": dropped,
        },
    }))
}

/// `GET /api/intake`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    Ok(json(StatusCode::OK, &view(&state, &tenant.key_prefix, &tenant.intake).await?))
}

/// `PUT /api/intake`: replaces both settings.
pub async fn put(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<UpdateIntake>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    if body.unauthenticated_monthly_events.is_some_and(|n| n > MAX_BUDGET) {
        return Err(ApiError::bad_request(
            "invalid_budget",
            format!("unauthenticated_monthly_events is at most {MAX_BUDGET} (or null: no budget of its own)"),
        ));
    }
    let intake = IntakeSettings {
        open_postbacks: body.open_postbacks,
        unauthenticated_monthly_events: body.unauthenticated_monthly_events,
    };
    let key_prefix = &tenant.key_prefix;
    state.store.set_intake(key_prefix, &intake, state.clock.now_ms()).await.map_err(store_err("tenant"))?;
    // the tenant's record (which the tracking endpoints and the edge read) changed
    Ok(purging(json(StatusCode::OK, &view(&state, key_prefix, &intake).await?), vec![format!("tenant:{key_prefix}")]))
}
