//! `/api/tenants`: the admin credential creates, lists, changes, suspends tenants and rotates their link keys.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tracker_store::{ApiKey, GLOBAL_KEY_PREFIX, Tenant, TenantLimits, TenantUpdate};

use super::keys::NewKeyBody;
use super::{Body, PageQuery, Principal, Query, check_text, json, listing, not_found, purging, store_err};
use crate::http::ApiError;
use crate::http::Segment;
use crate::state::AppState;

/// Longest grace period for old link keys after a rotation.
const MAX_GRACE_SECS: u64 = 90 * 24 * 3600;

#[derive(Debug, Serialize)]
pub struct TenantView {
    key_prefix: String,
    name: String,
    plan: String,
    status: String,
    limits: TenantLimits,
    created_at: i64,
    updated_at: Option<i64>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            key_prefix: t.key_prefix,
            name: t.name,
            plan: t.plan,
            status: t.status,
            limits: t.limits,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

fn check_plan(plans: &tracker_store::Plans, plan: &str) -> Result<(), ApiError> {
    if plans.get(plan).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = plans.names().collect();
    Err(ApiError::bad_request("invalid_plan", format!("plan must be one of {}", names.join(", "))))
}

fn check_limits(limits: &TenantLimits) -> Result<(), ApiError> {
    if limits.api_requests_per_minute.is_some_and(|n| n == 0 || n > 1_000_000) {
        return Err(ApiError::bad_request("invalid_limits", "api_requests_per_minute must be 1 to 1000000"));
    }
    if limits.events_per_second.is_some_and(|n| n == 0 || n > 1_000_000) {
        return Err(ApiError::bad_request("invalid_limits", "events_per_second must be 1 to 1000000"));
    }
    if limits.retention_days.is_some_and(|n| n == 0 || n > 36_500) {
        return Err(ApiError::bad_request("invalid_limits", "retention_days must be 1 to 36500"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    key_prefix: Option<String>,
    plan: Option<String>,
    #[serde(default, deserialize_with = "super::object")]
    limits: Option<TenantLimits>,
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<CreateTenant>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    check_text("name", &body.name, 200)?;
    if body.name.is_empty() {
        return Err(ApiError::bad_request("invalid_field", "name must not be empty"));
    }
    if let Some(plan) = &body.plan {
        check_plan(state.cfg.plans(), plan)?;
    }
    if let Some(limits) = &body.limits {
        check_limits(limits)?;
    }
    let now = state.clock.now_ms();
    let plan = body.plan.as_deref().unwrap_or("free");
    let limits = body.limits.unwrap_or_default();
    let key = state.store.create_tenant_on(&body.name, body.key_prefix.as_deref(), plan, &limits, now).await.map_err(
        |e| match e {
            tracker_store::StoreError::Invalid(reason) => ApiError::bad_request("invalid_key_prefix", reason),
            other => store_err("tenant")(other),
        },
    )?;
    let tenant = state.store.tenant(&key.key_prefix).await?.ok_or_else(|| not_found("tenant"))?;
    // if this fails the tenant exists without an API key; POST /api/tenants/{key_prefix}/api-keys issues one
    let admin_scopes = ["read", "write", "admin"].map(String::from);
    let (secret, api_key) = state
        .store
        .create_api_key(&key.key_prefix, "initial admin key", &admin_scopes, None, now)
        .await
        .map_err(store_err("tenant"))?;
    let body = serde_json::json!({
        "tenant": TenantView::from(tenant),
        "signing_key": { "kid": key.kid, "signing_secret": key.signing_secret, "encryption_key": key.encryption_key },
        "api_key": { "key": api_key, "secret": secret },
    });
    Ok(purging(json(StatusCode::CREATED, &body), vec![format!("tenant:{}", key.key_prefix)]))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let (limit, after) = q.parts()?;
    let page = state.store.tenants_page(after.as_deref(), limit).await?;
    Ok(listing(page, TenantView::from))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(key_prefix): Segment,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let found = state.store.tenant_keys(&key_prefix).await?.ok_or_else(|| not_found("tenant"))?;
    let keys: Vec<_> =
        found.keys.iter().map(|k| serde_json::json!({ "kid": k.kid, "retires_at": k.retires_at_ms })).collect();
    let mut body = serde_json::to_value(TenantView::from(found.tenant)).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert("keys".into(), keys.into());
    }
    Ok(json(StatusCode::OK, &body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    name: Option<String>,
    plan: Option<String>,
    status: Option<String>,
    #[serde(default, deserialize_with = "super::object")]
    limits: Option<TenantLimits>,
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(key_prefix): Segment,
    Body(body): Body<UpdateTenant>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    if let Some(name) = &body.name {
        check_text("name", name, 200)?;
    }
    if let Some(plan) = &body.plan {
        check_plan(state.cfg.plans(), plan)?;
    }
    if let Some(status) = &body.status
        && !matches!(status.as_str(), "active" | "suspended")
    {
        return Err(ApiError::bad_request("invalid_status", "status must be active or suspended"));
    }
    if let Some(limits) = &body.limits {
        check_limits(limits)?;
    }
    let update = TenantUpdate { name: body.name, plan: body.plan, status: body.status, limits: body.limits };
    let tenant =
        state.store.update_tenant(&key_prefix, update, state.clock.now_ms()).await.map_err(store_err("tenant"))?;
    Ok(purging(json(StatusCode::OK, &TenantView::from(tenant)), vec![format!("tenant:{key_prefix}")]))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long links signed with the older keys keep working (default 7 days).
    grace_seconds: Option<u64>,
}

pub async fn rotate(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(key_prefix): Segment,
    Body(body): Body<Rotate>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let grace = body.grace_seconds.unwrap_or(7 * 24 * 3600);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::bad_request("invalid_grace", "grace_seconds must be at most 7776000 (90 days)"));
    }
    if key_prefix == GLOBAL_KEY_PREFIX {
        return Err(not_found("tenant"));
    }
    let now = state.clock.now_ms();
    let grace_ms = i64::try_from(grace * 1000).unwrap_or(i64::MAX);
    let key = state.store.rotate_keys(&key_prefix, grace_ms, now).await.map_err(store_err("tenant"))?;
    let body = serde_json::json!({
        "kid": key.kid,
        "signing_secret": key.signing_secret,
        "encryption_key": key.encryption_key,
        "previous_keys_retire_at": now.saturating_add(grace_ms),
    });
    Ok(purging(json(StatusCode::OK, &body), vec![format!("tenant:{key_prefix}")]))
}

/// `POST /api/tenants/{key_prefix}/api-keys`: the operator issues a key for a tenant (for example when the
/// tenant lost its last admin key).
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(key_prefix): Segment,
    Body(body): Body<NewKeyBody>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let (secret, key): (String, ApiKey) = body.create(&state, &key_prefix).await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "key": key, "secret": secret })))
}
