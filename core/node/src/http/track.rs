//! The public tracking endpoints: clicks (`/t`, `/t/<tu_id>`), the browser beacon (`/t/auto`), postbacks (`/p`)
//! and impressions (`/i`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracker_protocol::event::ParamMap;
use tracker_protocol::links::parse_query;
use tracker_protocol::{Auth, Event, LinkKind, ProtocolError, Uuid, build_redirect, new_event_id, parse_link};
use tracker_store::GLOBAL_KEY_PREFIX;

use super::{RawBody, RequestMeta, bearer};
use crate::error::ApiError;
use crate::metrics::Endpoint;
use crate::state::{AppState, now_ms, random10};

/// A 1x1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn new_event(
    event_id: Uuid,
    event_type: String,
    now: i64,
    key_prefix: String,
    meta: &RequestMeta,
    params: BTreeMap<String, String>,
    auth: Auth,
) -> Event {
    Event {
        event_id,
        event_type,
        timestamp: now,
        received_at: now,
        key_prefix,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        referer: meta.referer.clone(),
        accept_language: meta.accept_language.clone(),
        request_path: Some(meta.path.clone()),
        request_host: meta.host.clone(),
        params,
        raw_payload: None,
        auth,
        historical: false,
    }
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(loc) => (
            StatusCode::TEMPORARY_REDIRECT,
            [
                (header::LOCATION, loc),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store, max-age=0")),
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
        )
            .into_response(),
        // build_redirect only produces visible ASCII, so this is unreachable in practice; still no panic
        Err(_) => {
            ApiError::from(ProtocolError::InvalidDestination { reason: "not a valid header value" }).into_response()
        }
    }
}

fn finish<T>(
    st: &AppState,
    endpoint: Endpoint,
    result: Result<T, ApiError>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(v) => {
            st.metrics.accepted(endpoint, 1);
            ok(v)
        }
        Err(e) => {
            st.metrics.rejected(endpoint, e.code);
            e.into_response()
        }
    }
}

pub async fn click(State(st): State<Arc<AppState>>, meta: RequestMeta, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let result = follow(&st, &meta, LinkKind::Click, None, q.as_deref().unwrap_or_default()).await;
    if result.is_ok() {
        st.metrics.redirect_served(started.elapsed());
    }
    finish(&st, Endpoint::Click, result, |loc| redirect(&loc))
}

pub async fn short(
    State(st): State<Arc<AppState>>,
    Path(tu_id): Path<String>,
    meta: RequestMeta,
    RawQuery(q): RawQuery,
) -> Response {
    let started = Instant::now();
    let result = follow(&st, &meta, LinkKind::Short, Some(&tu_id), q.as_deref().unwrap_or_default()).await;
    if result.is_ok() {
        st.metrics.redirect_served(started.elapsed());
    }
    finish(&st, Endpoint::Short, result, |loc| redirect(&loc))
}

/// Verifies a click, records it (durable within the commit window) and returns the redirect location.
async fn follow(
    st: &AppState,
    meta: &RequestMeta,
    kind: LinkKind,
    tu_id: Option<&str>,
    query: &str,
) -> Result<String, ApiError> {
    let parsed = parse_link(kind, tu_id, query, st.cfg.url_mode)?;
    let keys = st.keys_for(parsed.key_ref()).await?;
    let now = now_ms();
    let verified = parsed.verify(keys.as_slice(), now)?;
    let key_prefix = verified.key_prefix.unwrap_or_else(|| GLOBAL_KEY_PREFIX.to_owned());
    let mut params = verified.params;
    let destination = if kind == LinkKind::Short {
        let unknown =
            || ApiError::new(StatusCode::NOT_FOUND, "unknown_short_link", "no such short link for this tenant");
        // a link signed by one tenant never resolves another tenant's short link: same answer as "not found"
        let link = st.short_link(&verified.target).await?.filter(|l| l.key_prefix == key_prefix).ok_or_else(unknown)?;
        if link.expires_at.is_some_and(|e| now >= e) {
            return Err(ProtocolError::LinkExpired.into());
        }
        params.insert("tu_id".to_owned(), verified.target);
        link.destination.clone()
    } else {
        verified.target
    };
    let event_id = new_event_id(now, random10());
    let location = build_redirect(&destination, &event_id)?;
    let event = new_event(event_id, "click".into(), now, key_prefix, meta, params, Auth::Link);
    event.validate(&st.cfg.limits)?;
    st.emit(&event).await?;
    Ok(location)
}

pub async fn postback(
    State(st): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let event = signal(&st, &meta, &headers, LinkKind::Postback, q.as_deref().unwrap_or_default()).await?;
        // a postback is a server telling us about a conversion: answer only once it is durable
        st.store_durably(&event, None).await?;
        Ok(event)
    }
    .await;
    finish(&st, Endpoint::Postback, result, |e| {
        super::json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "event_id": e.event_id, "authenticated": e.auth.is_authenticated() }),
        )
    })
}

pub async fn impression(
    State(st): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let event = signal(&st, &meta, &headers, LinkKind::Impression, q.as_deref().unwrap_or_default()).await?;
        st.emit(&event).await
    }
    .await;
    finish(&st, Endpoint::Impression, result, |()| {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "image/gif"),
                (header::CACHE_CONTROL, "no-store, no-cache, must-revalidate, max-age=0"),
                (header::PRAGMA, "no-cache"),
                (header::EXPIRES, "0"),
            ],
            PIXEL,
        )
            .into_response()
    })
}

/// A postback or impression: a v2 signature over the params, an ingest token (`token=` or a bearer header), or
/// nothing (the seed's open postbacks, stored with `auth = none` so later stages can tell).
async fn signal(
    st: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    kind: LinkKind,
    query: &str,
) -> Result<Event, ApiError> {
    let mut pairs: BTreeMap<String, String> = parse_query(query)?.into_iter().collect();
    let now = now_ms();
    let (key_prefix, auth) = if pairs.contains_key("v") {
        let parsed = parse_link(kind, None, query, st.cfg.url_mode)?;
        let keys = st.keys_for(parsed.key_ref()).await?;
        let verified = parsed.verify(keys.as_slice(), now)?;
        pairs = verified.params;
        (verified.key_prefix.unwrap_or_default(), Auth::Signature)
    } else if let Some(token) = pairs.remove("token").or_else(|| bearer(headers).map(str::to_owned)) {
        let info = st.authenticate_token(&token).await?;
        if let Some(kp) = pairs.remove("key_prefix")
            && kp != info.key_prefix
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_mismatch",
                "key_prefix does not match the token's tenant",
            ));
        }
        (info.key_prefix.clone(), Auth::Token)
    } else {
        let kp = pairs.remove("key_prefix").ok_or_else(|| {
            ApiError::bad_request("missing_key_prefix", "key_prefix (or a token, or a v2 signature) is required")
        })?;
        if !tracker_protocol::is_valid_key_prefix(&kp) {
            return Err(ProtocolError::InvalidKeyPrefix.into());
        }
        st.tenant(&kp).await?;
        (kp, Auth::None)
    };
    let default_type = if kind == LinkKind::Postback { "postback" } else { "impression" };
    let event_type = pairs.remove("event_type").unwrap_or_else(|| default_type.to_owned());
    let event = new_event(new_event_id(now, random10()), event_type, now, key_prefix, meta, pairs, auth);
    event.validate(&st.cfg.limits)?;
    Ok(event)
}

/// What the browser beacon sends (as `text/plain` from `navigator.sendBeacon`, or JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BeaconInput {
    #[serde(alias = "key_prefix")]
    key: String,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    referrer: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    ad_click_id: Option<String>,
    #[serde(default)]
    params: Option<ParamMap>,
}

fn with_cors(mut res: Response) -> Response {
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

pub async fn beacon_preflight() -> Response {
    with_cors(
        (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
                (header::ACCESS_CONTROL_MAX_AGE, "86400"),
            ],
        )
            .into_response(),
    )
}

pub async fn beacon(State(st): State<Arc<AppState>>, meta: RequestMeta, body: Result<RawBody, ApiError>) -> Response {
    let result = async {
        let RawBody(body) = body?;
        let input: BeaconInput = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_beacon", format!("the beacon body is not valid: {e}")))?;
        if !tracker_protocol::is_valid_key_prefix(&input.key) {
            return Err(ProtocolError::InvalidKeyPrefix.into());
        }
        st.tenant(&input.key).await?;
        let mut params = input.params.map(|p| p.0).unwrap_or_default();
        for (k, v) in [("url", input.url), ("title", input.title), ("ad_click_id", input.ad_click_id)] {
            if let Some(v) = v {
                params.insert(k.to_owned(), v);
            }
        }
        let now = now_ms();
        let event_type = input.event_type.unwrap_or_else(|| "pageview".to_owned());
        let mut event = new_event(new_event_id(now, random10()), event_type, now, input.key, &meta, params, Auth::None);
        if let Some(r) = input.referrer.filter(|r| !r.is_empty()) {
            event.referer = Some(r);
        }
        event.validate(&st.cfg.limits)?;
        st.emit(&event).await
    }
    .await;
    with_cors(finish(&st, Endpoint::Beacon, result, |()| StatusCode::NO_CONTENT.into_response()))
}
