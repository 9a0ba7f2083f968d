//! `/api/beacon`: the tenant's browser beacon: where its script is, the tag to put on a site, and which sites
//! (origins) its events are accepted from. Events from other origins are answered like any other, then dropped by
//! the filter under `origin` (never kept, never billed), so another site cannot spend the tenant's allowance.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracker_protocol::{origins, script};

use super::{Body, Principal, json, purging, store_err};
use crate::http::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconSettings {
    /// Origins such as `https://shop.example` or `https://*.shop.example`; empty: every origin.
    allowed_origins: Vec<String>,
}

fn view(state: &AppState, key_prefix: &str, allowed: &[String]) -> serde_json::Value {
    let url = format!("{}/t.js?v={}", state.cfg.node.public_url, script::version());
    serde_json::json!({
        "allowed_origins": allowed,
        "script": {
            "url": url,
            "version": script::version(),
            "snippet": format!(r#"<script async src="{url}" data-key="{key_prefix}"></script>"#),
        },
    })
}

/// `GET /api/beacon`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    Ok(json(StatusCode::OK, &view(&state, &tenant.key_prefix, &tenant.beacon_origins)))
}

/// `PUT /api/beacon`: replaces the list of accepted origins.
pub async fn put(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<BeaconSettings>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    if body.allowed_origins.len() > origins::MAX_ALLOWED_ORIGINS {
        return Err(ApiError::bad_request(
            "invalid_origin",
            format!("at most {} allowed origins", origins::MAX_ALLOWED_ORIGINS),
        ));
    }
    let mut allowed = Vec::with_capacity(body.allowed_origins.len());
    for entry in &body.allowed_origins {
        let origin = origins::parse_allowed(entry)
            .map_err(|reason| ApiError::bad_request("invalid_origin", format!("{entry:?}: {reason}")))?;
        if !allowed.contains(&origin) {
            allowed.push(origin);
        }
    }
    let key_prefix = &tenant.key_prefix;
    state.store.set_beacon_origins(key_prefix, &allowed, state.clock.now_ms()).await.map_err(store_err("tenant"))?;
    // the tenant's record (which the tracking endpoints and the edge read) changed
    Ok(purging(json(StatusCode::OK, &view(&state, key_prefix, &allowed)), vec![format!("tenant:{key_prefix}")]))
}
