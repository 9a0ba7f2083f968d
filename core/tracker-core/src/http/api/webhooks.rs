//! `/api/webhooks`: endpoints that receive signed deliveries of a tenant's events, with a test delivery.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracker_protocol::is_valid_name;
use tracker_store::WebhookSpec;

use super::{Body, PageQuery, Principal, Query, check_text, json, listing, not_found, store_err};
use crate::http::ApiError;
use crate::http::{Segment, Segments};
use crate::state::{AppState, random10};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    url: Option<String>,
    description: Option<String>,
    /// Event types delivered (empty: all).
    event_types: Option<Vec<String>>,
    /// Params an event must carry with exactly these values (empty: no condition).
    param_filters: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
}

impl WebhookBody {
    fn spec(self, allow_private: bool) -> Result<WebhookSpec, ApiError> {
        if let Some(url) = &self.url {
            crate::webhook::check_url(url, allow_private).map_err(|r| ApiError::bad_request("invalid_url", r))?;
        }
        if let Some(d) = &self.description {
            check_text("description", d, 500)?;
        }
        if let Some(types) = &self.event_types
            && (types.len() > 50 || types.iter().any(|t| !is_valid_name(t, 64)))
        {
            return Err(ApiError::bad_request(
                "invalid_field",
                "event_types must be at most 50 names of 1 to 64 characters from [A-Za-z0-9_.:-]",
            ));
        }
        if let Some(filters) = &self.param_filters
            && (filters.len() > 20 || filters.iter().any(|(k, v)| !is_valid_name(k, 64) || v.len() > 1024))
        {
            return Err(ApiError::bad_request(
                "invalid_field",
                "param_filters must be at most 20 params with names from [A-Za-z0-9_.:-] and values up to 1024 bytes",
            ));
        }
        Ok(WebhookSpec {
            url: self.url,
            description: self.description,
            event_types: self.event_types,
            param_filters: self.param_filters,
            enabled: self.enabled,
        })
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<WebhookBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    if body.url.is_none() {
        return Err(ApiError::bad_request("invalid_field", "url is required"));
    }
    let spec = body.spec(state.cfg.webhook_allow_private)?;
    let (hook, secret) = state
        .store
        .create_webhook_within(&tenant.key_prefix, spec, state.clock.now_ms(), state.cfg.plan_of(tenant).max_webhooks)
        .await
        .map_err(store_err("tenant"))?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "webhook": hook, "secret": secret })))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (limit, after) = q.parts()?;
    Ok(listing(state.store.webhooks_page(&tenant.key_prefix, after.as_deref(), limit).await?, |w| w))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let hook = state.store.webhook(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("webhook"))?;
    Ok(json(StatusCode::OK, &hook))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
    Body(body): Body<WebhookBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let spec = body.spec(state.cfg.webhook_allow_private)?;
    let hook = state
        .store
        .update_webhook(&tenant.key_prefix, &id, spec, state.clock.now_ms())
        .await
        .map_err(store_err("webhook"))?;
    Ok(json(StatusCode::OK, &hook))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    state.store.delete_webhook(&tenant.key_prefix, &id).await.map_err(store_err("webhook"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/webhooks/{id}/test`: one signed `webhook.test` delivery, now, and what the endpoint answered.
pub async fn test(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let hook = state.store.webhook(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("webhook"))?;
    let secret = state.store.webhook_secret(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("webhook"))?;
    let now = state.clock.now_ms();
    let delivery_id = format!("dlv_{}", hex::encode(random10()));
    let body = serde_json::json!({
        "id": delivery_id,
        "type": "webhook.test",
        "created_at": now,
        "data": { "webhook_id": hook.webhook_id, "key_prefix": tenant.key_prefix },
    });
    let delivery = crate::webhook::Delivery {
        url: &hook.url,
        secret: &secret,
        event_type: "webhook.test",
        delivery_id: &delivery_id,
        body: body.to_string().into_bytes(),
    };
    let attempt =
        crate::webhook::deliver(&state.webhook_client, delivery, state.cfg.webhook_allow_private, now / 1000).await;
    Ok(json(StatusCode::OK, &attempt))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead` (the dead-letter list).
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/webhooks/{id}/deliveries`: the endpoint's delivery log, newest first; `?status=dead` is its
/// dead-letter list.
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (limit, cursor) = PageQuery { limit: q.limit, cursor: q.cursor }.parts()?;
    if let Some(s) = q.status.as_deref()
        && !tracker_store::DELIVERY_STATUSES.contains(&s)
    {
        return Err(ApiError::bad_request("invalid_status", "status must be pending, delivered or dead"));
    }
    state.store.webhook(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("webhook"))?;
    let page = state
        .store
        .deliveries_page(&tenant.key_prefix, &id, q.status.as_deref(), cursor.as_deref(), limit)
        .await
        .map_err(store_err("webhook"))?;
    Ok(listing(page, |d| d))
}

/// `POST /api/webhooks/{id}/deliveries/{delivery_id}/redeliver`: queues a delivery again now, with a fresh set
/// of attempts (from the dead letters, or any entry of the log).
pub async fn redeliver(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segments(id, delivery_id): Segments,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let hook = state.store.webhook(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("webhook"))?;
    if !hook.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the endpoint is disabled: enable it (PATCH enabled=true) before redelivering",
        ));
    }
    let d = state
        .store
        .redeliver(&tenant.key_prefix, &id, &delivery_id, state.clock.now_ms())
        .await
        .map_err(store_err("delivery"))?;
    Ok(json(StatusCode::OK, &d))
}
