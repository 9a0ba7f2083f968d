//! `/api/links`: tracking links (`tu_...` short links whose destination lives in the store) and signed links.
//! A change of destination, expiry or fallback purges the link from the node's cache and the edge's KV.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracker_protocol::links::{v1_short_url, v1_signed_url};
use tracker_protocol::{LinkKey, LinkKind, V2Link, validate_destination};
use tracker_store::{Link, LinkCount, LinkSpec};

use super::{
    Body, PageQuery, Principal, Query, check_text, expiry_ms, json, listing, not_found, nullable, purging, store_err,
};
use crate::http::ApiError;
use crate::http::Segment;
use crate::state::AppState;

#[derive(Debug, Serialize)]
struct LinkView {
    #[serde(flatten)]
    link: Link,
    /// The link signed with the tenant's current key (v2).
    url: Option<String>,
    /// Clicks recorded on the link (counted from the event log within about a second; before bot filtering).
    counts: LinkCount,
}

/// The tenant's current link key.
async fn current_key(state: &AppState, key_prefix: &str) -> Result<LinkKey, ApiError> {
    let keys = state.store.tenant_keys(key_prefix).await?.ok_or_else(|| not_found("tenant"))?;
    keys.keys.into_iter().next().ok_or_else(|| not_found("tenant key"))
}

fn short_url(base: &str, key_prefix: &str, key: &LinkKey, tu_id: &str) -> Option<String> {
    let link = V2Link {
        kind: LinkKind::Short,
        key_prefix,
        kid: &key.kid,
        target: tu_id,
        expires_at: None,
        ext: &[],
        params: &[],
    };
    link.signed_url(base, key.signing_secret.as_deref()?).ok()
}

fn view(link: Link, base: &str, key_prefix: &str, key: Option<&LinkKey>, counts: LinkCount) -> LinkView {
    let url = key.and_then(|k| short_url(base, key_prefix, k, &link.tu_id));
    LinkView { link, url, counts }
}

async fn counts_of(state: &AppState, key_prefix: &str, ids: &[&str]) -> Result<BTreeMap<String, LinkCount>, ApiError> {
    Ok(state.store.link_counts(key_prefix, ids).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    destination: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    fallback_url: Option<Option<String>>,
    /// ms since the epoch; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<i64>>,
}

impl LinkBody {
    fn spec(self) -> Result<LinkSpec, ApiError> {
        if let Some(Some(name)) = &self.name {
            check_text("name", name, 200)?;
        }
        let expires_at = match self.expires_at {
            Some(Some(t)) => Some(expiry_ms("expires_at", Some(t))?),
            other => other,
        };
        Ok(LinkSpec { name: self.name, destination: self.destination, fallback_url: self.fallback_url, expires_at })
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<LinkBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    if body.destination.is_none() {
        return Err(ApiError::bad_request("invalid_field", "destination is required"));
    }
    let now = state.clock.now_ms();
    let key = current_key(&state, &tenant.key_prefix).await?;
    let max = state.cfg.plan_of(tenant).max_links;
    let link = state
        .store
        .create_link_within(&tenant.key_prefix, body.spec()?, now, max)
        .await
        .map_err(store_err("tenant"))?;
    Ok(json(
        StatusCode::CREATED,
        &view(link, &principal.public_url, &tenant.key_prefix, Some(&key), LinkCount::default()),
    ))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (limit, after) = q.parts()?;
    let page = state.store.links_page(&tenant.key_prefix, after.as_deref(), limit).await?;
    let key = current_key(&state, &tenant.key_prefix).await?;
    let ids: Vec<&str> = page.items.iter().map(|l| l.tu_id.as_str()).collect();
    let counts = counts_of(&state, &tenant.key_prefix, &ids).await?;
    Ok(listing(page, |l| {
        let c = counts.get(&l.tu_id).copied().unwrap_or_default();
        view(l, &principal.public_url, &tenant.key_prefix, Some(&key), c)
    }))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(tu_id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let link = state.store.link(&tenant.key_prefix, &tu_id).await?.ok_or_else(|| not_found("link"))?;
    let key = current_key(&state, &tenant.key_prefix).await?;
    let c = counts_of(&state, &tenant.key_prefix, &[tu_id.as_str()]).await?.remove(&tu_id).unwrap_or_default();
    Ok(json(StatusCode::OK, &view(link, &principal.public_url, &tenant.key_prefix, Some(&key), c)))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(tu_id): Segment,
    Body(body): Body<LinkBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let now = state.clock.now_ms();
    let spec = body.spec()?;
    let link = state.store.update_link(&tenant.key_prefix, &tu_id, spec, now).await.map_err(store_err("link"))?;
    let key = current_key(&state, &tenant.key_prefix).await?;
    let c = counts_of(&state, &tenant.key_prefix, &[tu_id.as_str()]).await?.remove(&tu_id).unwrap_or_default();
    let res = json(StatusCode::OK, &view(link, &principal.public_url, &tenant.key_prefix, Some(&key), c));
    Ok(purging(res, vec![format!("short:{tu_id}")]))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(tu_id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    state.store.delete_link(&tenant.key_prefix, &tu_id).await.map_err(store_err("link"))?;
    Ok(purging(StatusCode::NO_CONTENT, vec![format!("short:{tu_id}")]))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// A click link to this destination...
    destination: Option<String>,
    /// ...or a link to one of the tenant's short links.
    tu_id: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    /// v2 only: ms since the epoch (rounded up to the second).
    expires_at: Option<i64>,
    /// v2 only: param names an ad network may append later unsigned.
    #[serde(default)]
    ext: Vec<String>,
    /// `v2` (default), `v2_encrypted` (clicks only) or `v1` (`seed`, its earlier name, still accepted).
    format: Option<String>,
    /// Tracking host the link points at (default: the API's public URL).
    base_url: Option<String>,
}

/// Params of a signed link become event params when it is clicked, so they follow the event rules; `ext` names
/// are param names too, not signed and not also given as params.
fn check_link_params(params: &BTreeMap<String, String>, ext: &[String]) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_param", m);
    let reserved = |k: &str| tracker_protocol::links::RESERVED_PARAMS.contains(&k);
    if params.len() > 64 || ext.len() > 20 {
        return Err(bad("at most 64 params and 20 ext names".into()));
    }
    for (k, v) in params {
        if !tracker_protocol::is_valid_name(k, 64) || reserved(k) {
            return Err(bad(format!("param name {k:?} must be 1 to 64 of [A-Za-z0-9_.:-] and not a link field")));
        }
        if v.len() > 1024 {
            return Err(bad(format!("param {k:?} is longer than 1024 bytes")));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in ext {
        if !tracker_protocol::is_valid_name(name, 64)
            || reserved(name)
            || params.contains_key(name)
            || !seen.insert(name)
        {
            return Err(bad(format!("ext name {name:?} must be a distinct param name that is not also signed")));
        }
    }
    Ok(())
}

pub async fn sign(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<SignBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let prefix = tenant.key_prefix.as_str();
    let format = match body.format.as_deref().unwrap_or("v2") {
        "seed" => "v1",
        other => other,
    };
    if !matches!(format, "v2" | "v2_encrypted" | "v1") {
        return Err(ApiError::bad_request("invalid_format", "format must be v2, v2_encrypted or v1"));
    }
    let base = match &body.base_url {
        Some(b) => base_url(b).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                "base_url must be an http(s) URL with a plain host, at most 256 bytes",
            )
        })?,
        None => principal.public_url.clone(),
    };
    let (kind, target) = match (&body.destination, &body.tu_id) {
        (Some(d), None) => {
            validate_destination(d)?;
            (LinkKind::Click, d.clone())
        }
        (None, Some(id)) => {
            state.store.link(prefix, id).await?.ok_or_else(|| not_found("link"))?;
            (LinkKind::Short, id.clone())
        }
        _ => return Err(ApiError::bad_request("invalid_field", "give exactly one of destination and tu_id")),
    };
    check_link_params(&body.params, &body.ext)?;
    if format == "v1" && (body.expires_at.is_some() || !body.ext.is_empty()) {
        return Err(ApiError::bad_request("invalid_field", "v1 links have no expires_at or ext; use format v2"));
    }
    // v2 expiries are whole seconds after the epoch (at least 1)
    let expires_at = expiry_ms("expires_at", body.expires_at)?.map(|ms| ((ms + 999) / 1000).max(1));
    let key = current_key(&state, prefix).await?;
    let secret = key.signing_secret.as_deref().ok_or_else(|| not_found("signing key"))?;
    let params: Vec<(&str, &str)> = body.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ext: Vec<&str> = body.ext.iter().map(String::as_str).collect();
    let link =
        V2Link { kind, key_prefix: prefix, kid: &key.kid, target: &target, expires_at, ext: &ext, params: &params };
    let url = match (format, kind) {
        ("v1", LinkKind::Click) => v1_signed_url(&base, secret, Some(prefix), &target, &params)?,
        ("v1", _) => v1_short_url(&base, secret, Some(prefix), &target, &params)?,
        ("v2_encrypted", LinkKind::Click) => {
            let aes = key.encryption_key.ok_or_else(|| not_found("encryption key"))?;
            link.encrypted_url(&base, &aes, rand::rng().random())?
        }
        ("v2_encrypted", _) => {
            return Err(ApiError::bad_request("invalid_format", "v2_encrypted links are for destinations, not tu_id"));
        }
        _ => link.signed_url(&base, secret)?,
    };
    Ok(json(StatusCode::OK, &serde_json::json!({ "url": url, "format": format, "kid": key.kid })))
}

/// A tracking host a signed link may point at: `http(s)://host[:port]` with a plain host name or address, then an
/// optional path of visible ASCII; without its trailing slashes.
fn base_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    tracker_protocol::origins::request_origin(Some(&format!("{scheme}://{authority}")), None)?;
    let plain = text.len() <= 256 && path.bytes().all(|c| c.is_ascii_graphic() && c != b'\\');
    plain.then(|| text.trim_end_matches('/').to_owned())
}
