//! The Workers runtime (wasm32 only): `#[event(fetch)]` routes each request (the tracking endpoints answered with
//! the shared service, events queued; the platform API and live streams to `proxy`), and `#[event(queue)]`
//! (`queue`) forwards queued messages to the core fleet; the dashboard comes from Workers static assets
//! (`assets`). Nothing here decides anything the core node decides differently. `js` is the raw JavaScript glue;
//! `isolate` what an isolate keeps and the record lookups.

mod assets;
mod coalesce;
mod colo;
mod isolate;
mod js;
mod proxy;
mod queue;

use tracker_protocol::service::{
    self, BEACON_PREFLIGHT_HEADERS, BatchFormat, PIXEL_GIF, PIXEL_HEADERS, REDIRECT_HEADERS, RequestInfo,
};
use tracker_protocol::{LinkKind, ProtocolError};
use worker::{Context, Env, Method, console_error, event};

use crate::api::{forward_path, live_forward};
use crate::config::EdgeConfig;
use crate::pack::batch_key;
use coalesce::enqueue_soon;
use isolate::{EdgeDirectory, check_rate, config, unavailable};
use js::{RawRequest, WebResponse, bearer, body_bytes, body_bytes_capped, error, header, json, now_ms, random10};
use js::{refused_pixel, request_info, respond, respond_with, with_cors};
use proxy::{api, live, purge};
use queue::{enqueue, enqueue_invalid};

#[event(fetch)]
pub async fn fetch(req: RawRequest, env: Env, ctx: Context) -> worker::Result<WebResponse> {
    let cfg = match config(&env) {
        Ok(c) => c,
        Err(e) => {
            console_error!("bad Worker configuration: {e}");
            return Ok(json(
                500,
                serde_json::json!({ "error": { "code": "misconfigured", "message": e } }).to_string(),
            ));
        }
    };
    Ok(handle(req, &env, &ctx, &cfg).await)
}

async fn handle(req: RawRequest, env: &Env, ctx: &Context, cfg: &EdgeConfig) -> WebResponse {
    let url = req.url();
    let (path, query) = crate::config::split_url(&url);
    let (path, query) = (path.to_owned(), query.to_owned());
    let method = match req.method().as_str() {
        "GET" | "HEAD" => Method::Get,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Put,
    };
    if method == Method::Get && path == "/health" {
        let dead_letters = queue::dead_letters(env).await;
        let health = serde_json::json!({ "status": "ok", "tier": "edge", "dead_letters": dead_letters });
        return json(200, health.to_string());
    }
    if method == Method::Get && path == "/metrics" {
        let text = queue::dead_letters(env).await.prometheus() + &coalesce::Coalesced::prometheus();
        let headers = [("content-type", "text/plain; version=0.0.4; charset=utf-8"), ("cache-control", "no-store")];
        return respond(200, &headers, Some(text.into_bytes()));
    }
    if path == tracker_protocol::intake::DLQ_REPLAY_PATH {
        return proxy::dlq_replay(req, env, cfg, method).await;
    }
    if method == Method::Get && (path == "/dashboard" || path.starts_with(tracker_protocol::dashboard::PREFIX)) {
        return assets::dashboard(&req, env, &path).await;
    }
    if let Some(forward) = forward_path(&path, &query) {
        return api(req, env, cfg, &url, &forward).await;
    }
    if path == tracker_protocol::intake::PURGE_PATH {
        return purge(req, env, cfg, method).await;
    }
    if let Some((forward, token)) = live_forward(&path, &query) {
        return live(req, cfg, &forward, token).await;
    }
    // the replaced system's clients configured with a base URL that carries their token: the token is the
    // credential, and the path events record is one without it
    let (endpoint, path_token, recorded) = match crate::v1::route(&path) {
        Some((token, route)) => (route.endpoint(), Some(token.to_owned()), route.recorded_path()),
        None => (path.as_str(), None, path.as_str()),
    };
    let info = request_info(&req, recorded, cfg.service.limits.max_field_len);
    let dir = EdgeDirectory { env, cfg, ip: info.ip.as_deref() };
    let svc = &cfg.service;
    let now = now_ms();
    match (method, endpoint) {
        (Method::Get, "/t.js") => {
            let answer = tracker_protocol::script::answer(Some(&query), header(&req, "if-none-match").as_deref());
            let headers: Vec<(&'static str, &str)> = answer.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = (!answer.body.is_empty()).then(|| answer.body.as_bytes().to_vec());
            respond_with(answer.status, &[], &headers, body)
        }
        (Method::Get, "/t") => click(&dir, env, ctx, &info, None, &query).await,
        (Method::Get, p) if p.starts_with("/t/") && p != "/t/auto" => {
            let id = p.trim_start_matches("/t/").to_owned();
            click(&dir, env, ctx, &info, Some(&id), &query).await
        }
        (Method::Options, "/t/auto") => respond(204, &BEACON_PREFLIGHT_HEADERS, None),
        (Method::Post, "/t/auto") => {
            let cors = [("access-control-allow-origin", "*")];
            let too_large =
                || ProtocolError::InvalidBeacon { reason: "the body is missing or larger than 64 KiB".into() };
            let declared: Option<usize> = header(&req, "content-length").and_then(|l| l.trim().parse().ok());
            if declared.is_some_and(|n| n > service::MAX_BEACON_BYTES) {
                return with_cors(error(&too_large()));
            }
            let body = match body_bytes(&req).await {
                Some(b) if b.len() <= service::MAX_BEACON_BYTES => b,
                _ => return with_cors(error(&too_large())),
            };
            match service::beacon(&dir, svc, &info, &body, now, random10()).await {
                Ok(event) => {
                    if let Err(r) = check_rate(&event.key_prefix, info.ip.as_deref(), 1.0) {
                        return with_cors(r);
                    }
                    enqueue_soon(env, ctx, cfg.coalesce_ms, event);
                    respond(204, &cors, None)
                }
                Err(e) => with_cors(error(&e)),
            }
        }
        (Method::Get, "/p" | "/i") => {
            let kind = if endpoint == "/p" { LinkKind::Postback } else { LinkKind::Impression };
            let token = path_token.clone().or_else(|| bearer(&req));
            match service::signal(&dir, svc, &info, kind, &query, token.as_deref(), now, random10()).await {
                Ok(event) => {
                    if let Err(r) = check_rate(&event.key_prefix, info.ip.as_deref(), 1.0) {
                        return if kind == LinkKind::Impression { refused_pixel("rate_limited") } else { r };
                    }
                    if kind == LinkKind::Postback {
                        // a conversion is acknowledged once it is in the queue (durable), never before
                        let authenticated = event.auth.is_authenticated();
                        let id = event.event_id;
                        let answer =
                            serde_json::json!({ "status": "ok", "event_id": id, "authenticated": authenticated });
                        match enqueue(env, std::slice::from_ref(&event), None).await {
                            Ok(()) => json(200, answer.to_string()),
                            Err(_) => error(&unavailable("the event queue")),
                        }
                    } else {
                        enqueue_soon(env, ctx, cfg.coalesce_ms, event);
                        respond(200, &PIXEL_HEADERS, Some(PIXEL_GIF.to_vec()))
                    }
                }
                // a pixel sits in a page or an email: whatever the verdict, the visitor gets an image
                Err(e) if kind == LinkKind::Impression => refused_pixel(e.code()),
                Err(e) => error(&e),
            }
        }
        (Method::Post, "/batch") => {
            let (token, idem, body) = match intake_parts(&dir, &req, path_token, service::max_batch_body(svc)).await {
                Ok(parts) => parts,
                Err(e) => return error(&e),
            };
            let format = if endpoint == path { BatchFormat::Ours } else { BatchFormat::V1 };
            let batch = match service::batch(&dir, svc, &info, token.as_deref(), &body, format, now, random10).await {
                Ok(b) => b,
                Err(e) => return error(&e),
            };
            let key = idem.map(|k| batch_key(&batch.key_prefix, &k));
            if batch.events.is_empty() {
                enqueue_invalid(env, &batch.key_prefix, batch.rejected.len(), key.as_deref()).await;
                let e = ProtocolError::NoValidEvents;
                let error = serde_json::json!({ "code": e.code(), "message": e.to_string() });
                let body = serde_json::json!({ "error": error, "accepted": 0, "rejected": batch.rejected });
                return json(422, body.to_string());
            }
            if let Err(r) = check_rate(&batch.key_prefix, None, batch.events.len() as f64) {
                return r;
            }
            // with an Idempotency-Key, a retried request is stored once: the core dedups by the derived batch ids
            match enqueue(env, &batch.events, key.as_deref()).await {
                Ok(()) => {
                    if !batch.rejected.is_empty() {
                        enqueue_invalid(env, &batch.key_prefix, batch.rejected.len(), key.as_deref()).await;
                    }
                    let answer = serde_json::json!({ "accepted": batch.events.len(), "rejected": batch.rejected });
                    json(200, answer.to_string())
                }
                Err(_) => error(&unavailable("the event queue")),
            }
        }
        (Method::Post, "/ingest") => {
            let (token, idem, body) = match intake_parts(&dir, &req, path_token, service::max_ingest_body(svc)).await {
                Ok(parts) => parts,
                Err(e) => return error(&e),
            };
            match service::ingest(&dir, svc, &info, token.as_deref(), &body, now, random10()).await {
                Ok(event) => {
                    if let Err(r) = check_rate(&event.key_prefix, None, 1.0) {
                        return r;
                    }
                    let key = idem.map(|k| batch_key(&event.key_prefix, &format!("ingest\0{k}")));
                    match enqueue(env, std::slice::from_ref(&event), key.as_deref()).await {
                        Ok(()) => {
                            json(200, serde_json::json!({ "event_id": event.event_id, "accepted": 1 }).to_string())
                        }
                        Err(_) => error(&unavailable("the event queue")),
                    }
                }
                Err(e) => error(&e),
            }
        }
        (_, "/health" | "/t" | "/t/auto" | "/p" | "/i" | "/batch" | "/ingest") => json(
            405,
            serde_json::json!({
                "error": { "code": "method_not_allowed", "message": "this endpoint does not accept that method" }
            })
            .to_string(),
        ),
        _ => json(
            404,
            serde_json::json!({ "error": { "code": "not_found", "message": "no such endpoint" } }).to_string(),
        ),
    }
}

/// What `/batch` and `/ingest` read from the request: the token (from the path of a v1 route, or the bearer
/// header), the `Idempotency-Key` and the body.
/// The credential, `Idempotency-Key` and body of `/batch` or `/ingest`: the credential is checked before a byte of
/// the body is read, and the body is read only up to `limit`.
async fn intake_parts(
    dir: &EdgeDirectory<'_>,
    req: &RawRequest,
    path_token: Option<String>,
    limit: usize,
) -> Result<(Option<String>, Option<String>, Vec<u8>), ProtocolError> {
    let idem = idempotency(req)?;
    let token = path_token.or_else(|| bearer(req));
    service::authenticate(dir, token.as_deref()).await?;
    let body = body_bytes_capped(req, limit).await?;
    Ok((token, idem, body))
}

fn idempotency(req: &RawRequest) -> Result<Option<String>, ProtocolError> {
    service::idempotency_key(header(req, "idempotency-key").as_deref())
}

async fn click(
    dir: &EdgeDirectory<'_>,
    env: &Env,
    ctx: &Context,
    info: &RequestInfo,
    tu_id: Option<&str>,
    query: &str,
) -> WebResponse {
    match service::click(dir, &dir.cfg.service, info, tu_id, query, now_ms(), random10()).await {
        Ok(click) => {
            if let Err(r) = check_rate(&click.event.key_prefix, info.ip.as_deref(), 1.0) {
                return r;
            }
            // the redirect never waits for the queue
            enqueue_soon(env, ctx, dir.cfg.coalesce_ms, click.event);
            respond_with(307, &REDIRECT_HEADERS, &[("location", click.location.as_str())], None)
        }
        Err(e) => error(&e),
    }
}
