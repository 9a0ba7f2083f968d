//! `/api/keys` and `/api/tokens`: a tenant's API keys and ingest tokens (the `admin` scope). Secrets are shown
//! once at creation and stored as SHA-256 hashes; revocation is immediate for API keys (every request is
//! checked against the store) and reaches the edge's token caches through a purge.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracker_store::{ApiKey, SCOPES};

use super::{Body, PageQuery, Principal, Query, check_text, expiry_ms, json, listing, not_found, purging, store_err};
use crate::http::ApiError;
use crate::http::Segment;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
    /// Default `["read"]`.
    scopes: Option<Vec<String>>,
    /// ms since the epoch.
    expires_at: Option<i64>,
}

impl NewKeyBody {
    pub async fn create(self, state: &AppState, key_prefix: &str) -> Result<(String, ApiKey), ApiError> {
        check_text("name", &self.name, 200)?;
        if self.name.is_empty() {
            return Err(ApiError::bad_request("invalid_field", "name must not be empty"));
        }
        let scopes = self.scopes.unwrap_or_else(|| vec!["read".into()]);
        if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
            return Err(ApiError::bad_request(
                "invalid_scopes",
                "scopes must be a non-empty list of read, write, admin, stream",
            ));
        }
        let now = state.clock.now_ms();
        let expires_at = expiry_ms("expires_at", self.expires_at)?;
        state.store.create_api_key(key_prefix, &self.name, &scopes, expires_at, now).await.map_err(store_err("tenant"))
    }
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<NewKeyBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("admin")?;
    let (secret, key) = body.create(&state, &tenant.key_prefix).await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "key": key, "secret": secret })))
}

pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let (limit, after) = q.parts()?;
    Ok(listing(state.store.api_keys_page(&tenant.key_prefix, after.as_deref(), limit).await?, |k| k))
}

pub async fn get_key(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let key = state.store.api_key(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("API key"))?;
    Ok(json(StatusCode::OK, &key))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let key = state
        .store
        .revoke_api_key(&tenant.key_prefix, &id, state.clock.now_ms())
        .await
        .map_err(store_err("API key"))?;
    Ok(json(StatusCode::OK, &key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: Option<String>,
    /// ms since the epoch.
    expires_at: Option<i64>,
}

pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<NewToken>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("admin")?;
    let name = body.name.unwrap_or_else(|| "default".into());
    check_text("name", &name, 200)?;
    let now = state.clock.now_ms();
    let expires_at = expiry_ms("expires_at", body.expires_at)?;
    let (secret, id) = state
        .store
        .create_ingest_token(&tenant.key_prefix, &name, expires_at, now)
        .await
        .map_err(store_err("tenant"))?;
    let token = state.store.ingest_token(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("token"))?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "token": token, "secret": secret })))
}

pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let (limit, after) = q.parts()?;
    Ok(listing(state.store.ingest_tokens_page(&tenant.key_prefix, after.as_deref(), limit).await?, |t| t))
}

pub async fn get_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let token = state.store.ingest_token(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("token"))?;
    Ok(json(StatusCode::OK, &token))
}

pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_even_if_suspended("admin")?;
    let token = state
        .store
        .revoke_ingest_token(&tenant.key_prefix, &id, state.clock.now_ms())
        .await
        .map_err(store_err("token"))?;
    let purge = vec![format!("token:{}", token.token_hash)];
    Ok(purging(json(StatusCode::OK, &token), purge))
}
