//! The platform API at the edge: authenticated, shielded (rate limits, remembered refusals, body limits) and
//! forwarded to the core's internal API signed with the service credential (see `crate::api`); live event streams
//! passed through as they stream; and the core's signed purges of hot-path records.

use tracker_protocol::ProtocolError;
use tracker_protocol::client_ip::rate_key;
use tracker_protocol::intake::{CREDENTIAL_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_api};
use tracker_protocol::session::{CSRF_HEADER, SESSION_CREDENTIAL_PREFIX};
use worker::js_sys::Reflect;
use worker::wasm_bindgen::JsValue;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, console_error};

use super::isolate::{KV, with_isolate};
use super::js::unreachable_response;
use super::js::{
    RawRequest, WebResponse, bearer, body_bytes, body_bytes_capped, header, js, json, now_ms, respond, respond_with,
};
use crate::api::{
    CORS_HEADERS, FORWARDED_HEADERS, LIVE_PREFLIGHT_HEADERS, MAX_API_BODY, PREFLIGHT_HEADERS, credential_hash, origin,
    presented_credential, purge_keys, refusal,
};
use crate::config::EdgeConfig;

pub(super) fn api_error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> WebResponse {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let retry = retry_after.map(|r| r.to_string());
    let mut dynamic: Vec<(&'static str, &str)> = retry.iter().map(|r| ("retry-after", r.as_str())).collect();
    if status == 401 {
        dynamic.push(("www-authenticate", "Bearer realm=\"tracker\""));
    }
    let mut headers = vec![("content-type", "application/json"), ("cache-control", "no-store")];
    headers.extend_from_slice(&CORS_HEADERS);
    respond_with(status, &headers, &dynamic, Some(body.into_bytes()))
}

pub(super) async fn api(req: RawRequest, env: &Env, cfg: &EdgeConfig, url: &str, forward: &str) -> WebResponse {
    let method = req.method();
    if method == "OPTIONS" {
        return respond(204, &PREFLIGHT_HEADERS, None);
    }
    let now = now_ms();
    let ip = header(&req, "cf-connecting-ip").unwrap_or_else(|| "unknown".into());
    if let Some(Err(retry)) = with_isolate(|i| i.api_ip_limits.check(&rate_key(&ip), 1.0, now)) {
        return api_error(429, "rate_limited", "too many API requests from this address; retry later", Some(retry));
    }
    // the OpenAPI document and the tool definitions made from it need no credential
    let public = matches!(forward.split('?').next(), Some("/openapi.json" | "/tools"));
    // signing in to the dashboard: the credential is in the body, read below (the path, whatever the query)
    let sign_in = method == "POST" && forward.split('?').next() == Some("/session");
    let mut hash = None;
    if !public && !sign_in {
        let Ok(presented) = presented_credential(bearer(&req).as_deref(), header(&req, "cookie").as_deref()) else {
            return api_error(401, "invalid_session", "more than one session cookie: sign in again", None);
        };
        let Some(presented) = presented else {
            return api_error(
                401,
                "missing_credentials",
                "send Authorization: Bearer <API key> (or sign in to the dashboard)",
                None,
            );
        };
        match with_isolate(|i| i.api_refusals.get(&presented, now)).flatten() {
            Some((429, secs)) => {
                return api_error(429, "rate_limited", "over this plan's API rate limit; retry later", Some(secs));
            }
            Some(_) if presented.starts_with(SESSION_CREDENTIAL_PREFIX) => {
                return api_error(401, "invalid_session", "the dashboard session is unknown, ended or expired", None);
            }
            Some(_) => {
                return api_error(401, "invalid_credentials", "the credential is unknown, revoked or expired", None);
            }
            None => {}
        }
        hash = Some(presented);
    }
    // counted as it streams in, like the intake's: a chunked body declares no length to refuse it by
    let mut body = match body_bytes_capped(&req, MAX_API_BODY).await {
        Ok(b) => b,
        Err(ProtocolError::BodyTooLarge { .. }) => {
            return api_error(413, "body_too_large", "the body is larger than 1 MiB", None);
        }
        Err(_) => return api_error(400, "unreadable_body", "the request body could not be read", None),
    };
    if sign_in {
        let content_type = header(&req, "content-type");
        match tracker_protocol::session::sign_in(
            content_type.as_deref(),
            header(&req, "sec-fetch-site").as_deref(),
            &body,
        ) {
            // the credential leaves the edge as its hash, in place of the body
            Ok(credential) => hash = credential_hash(&credential),
            Err(refusal) => return api_error(refusal.status(), refusal.code(), refusal.message(), None),
        }
        body.clear();
    }
    let csrf = header(&req, CSRF_HEADER);
    let Some(secret) = cfg.shared_secret() else {
        return api_error(503, "unavailable", "the edge has no EDGE_SHARED_SECRET to reach the core", Some(1));
    };
    let credential = hash.unwrap_or_default();
    let content_type = header(&req, "content-type");
    let mcp_headers: Vec<(&str, String)> = if forward == "/mcp" {
        ["accept", "mcp-protocol-version"].into_iter().filter_map(|n| header(&req, n).map(|v| (n, v))).collect()
    } else {
        Vec::new()
    };
    let idempotent = method == "GET" || method == "HEAD";
    let mut answer = None;
    let public_url = origin(url);
    // what the signature covers besides method, path, credential and body: the headers that change the answer
    let signed = |name: &str| match name {
        "content-type" => content_type.as_deref(),
        "x-tracker-public-url" => Some(public_url),
        n if n == CSRF_HEADER => csrf.as_deref(),
        _ => None,
    };
    for base in &cfg.core_urls {
        let ts = now_ms();
        let Some(sig) = sign_api(secret, ts, &method, forward, &credential, signed, &body) else { continue };
        let headers = Headers::new();
        let _ = headers.set(SIGNATURE_HEADER, &sig);
        let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
        let _ = headers.set(CREDENTIAL_HEADER, &credential);
        let _ = headers.set("x-tracker-public-url", public_url);
        if let Some(token) = &csrf {
            let _ = headers.set(CSRF_HEADER, token);
        }
        if let Some(ct) = &content_type {
            let _ = headers.set("content-type", ct);
        }
        // MCP's content negotiation and protocol version; they change the answer's framing, not who may ask
        for (name, value) in &mcp_headers {
            let _ = headers.set(name, value);
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(method.clone())).with_headers(headers);
        if !body.is_empty() {
            init.with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
        }
        let Ok(outgoing) = Request::new_with_init(&format!("{base}/internal/v1/api{forward}"), &init) else {
            continue;
        };
        match Fetch::Request(outgoing).send().await {
            Ok(res) => {
                answer = Some(res);
                break;
            }
            // a change is tried on one node only: it may have been applied before the connection failed
            Err(e) if !idempotent => {
                console_error!("platform API {method} {forward} at {base} failed: {e}");
                break;
            }
            Err(e) => console_error!("platform API {method} {forward} at {base} failed: {e}"),
        }
    }
    let Some(mut res) = answer else {
        return api_error(503, "unavailable", "no core node answered; retry later", Some(1));
    };
    let status = res.status_code();
    let res_headers = res.headers();
    let get = |name: &str| res_headers.get(name).ok().flatten();
    if let Some(purge) = get(PURGE_HEADER) {
        purge_hot_path(env, &purge).await;
    }
    let copied: Vec<(&'static str, String)> =
        FORWARDED_HEADERS.iter().filter_map(|name| get(name).map(|v| (*name, v))).collect();
    let dynamic: Vec<(&'static str, &str)> = copied.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let retry = get("retry-after").and_then(|r| r.parse().ok());
    let bytes = res.bytes().await.unwrap_or_default();
    if !public && !credential.is_empty() {
        let remembered = refusal(status, &bytes);
        with_isolate(|i| i.api_refusals.record(&credential, remembered, retry, now_ms()));
    }
    respond_with(status, &CORS_HEADERS, &dynamic, (!bytes.is_empty()).then_some(bytes))
}

/// `GET /sse/events`: a live event stream from a core node, passed through as it streams. The credential is the
/// bearer token or `?access_token=` (browsers' `EventSource` cannot set headers); like every API call, only its
/// hash reaches the core, inside the edge's signature.
pub(super) async fn live(req: RawRequest, cfg: &EdgeConfig, forward: &str, token: Option<String>) -> WebResponse {
    let method = req.method();
    if method == "OPTIONS" {
        return respond(204, &LIVE_PREFLIGHT_HEADERS, None);
    }
    if method != "GET" {
        return api_error(405, "method_not_allowed", "live streams are read with GET", None);
    }
    let now = now_ms();
    let ip = header(&req, "cf-connecting-ip").unwrap_or_else(|| "unknown".into());
    if let Some(Err(retry)) = with_isolate(|i| i.api_ip_limits.check(&rate_key(&ip), 1.0, now)) {
        return api_error(429, "rate_limited", "too many API requests from this address; retry later", Some(retry));
    }
    let Some(credential) = bearer(&req).or(token).as_deref().and_then(credential_hash) else {
        return api_error(
            401,
            "missing_credentials",
            "send Authorization: Bearer <key> or ?access_token=<token>",
            None,
        );
    };
    match with_isolate(|i| i.api_refusals.get(&credential, now)).flatten() {
        Some((429, secs)) => {
            return api_error(429, "rate_limited", "over this plan's API rate limit; retry later", Some(secs));
        }
        Some(_) => return api_error(401, "invalid_credentials", "the credential is unknown, revoked or expired", None),
        None => {}
    }
    let Some(secret) = cfg.shared_secret() else {
        return api_error(503, "unavailable", "the edge has no EDGE_SHARED_SECRET to reach the core", Some(1));
    };
    let last_event_id = header(&req, "last-event-id");
    for base in &cfg.core_urls {
        let ts = now_ms();
        let Some(sig) = sign_api(secret, ts, "GET", forward, &credential, |_| None, &[]) else { continue };
        let headers = Headers::new();
        let _ = headers.set(SIGNATURE_HEADER, &sig);
        let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
        let _ = headers.set(CREDENTIAL_HEADER, &credential);
        if let Some(id) = &last_event_id {
            let _ = headers.set("last-event-id", id);
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let Ok(outgoing) = Request::new_with_init(&format!("{base}/internal/v1/sse{forward}"), &init) else {
            continue;
        };
        let mut res = match Fetch::Request(outgoing).send().await {
            Ok(res) => res,
            Err(e) => {
                console_error!("live stream at {base} failed: {e}");
                continue;
            }
        };
        let status = res.status_code();
        let res_headers = res.headers();
        let get = |name: &str| res_headers.get(name).ok().flatten();
        let copied: Vec<(&'static str, String)> =
            FORWARDED_HEADERS.iter().filter_map(|name| get(name).map(|v| (*name, v))).collect();
        let dynamic: Vec<(&'static str, &str)> = copied.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if status != 200 {
            // a refusal: a small JSON answer, remembered like the API's
            let retry = get("retry-after").and_then(|r| r.parse().ok());
            let bytes = res.bytes().await.unwrap_or_default();
            let remembered = refusal(status, &bytes);
            with_isolate(|i| i.api_refusals.record(&credential, remembered, retry, now_ms()));
            return respond_with(status, &CORS_HEADERS, &dynamic, (!bytes.is_empty()).then_some(bytes));
        }
        let h = worker::js_sys::Object::new();
        for (k, v) in dynamic.iter().copied().chain(CORS_HEADERS) {
            let _ = Reflect::set(&h, &js(k), &JsValue::from_str(v));
        }
        let raw: WebResponse = res.into();
        let init = worker::web_sys::ResponseInit::new();
        init.set_status(200);
        init.set_headers(&h);
        // the body streams through as the core writes it
        return WebResponse::new_with_opt_readable_stream_and_init(raw.body().as_ref(), &init)
            .unwrap_or_else(|_| unreachable_response());
    }
    api_error(503, "unavailable", "no core node answered; retry later", Some(1))
}

/// The core's response header naming hot-path records a change made stale.
pub(super) const PURGE_HEADER: &str = "x-tracker-edge-purge";

/// `POST /internal/v1/purge` from the core (signed with the shared secret, within five minutes): deletes the
/// named records from KV and this isolate, so the next request reads them from the core again.
pub(super) async fn purge(req: RawRequest, env: &Env, cfg: &EdgeConfig, method: Method) -> WebResponse {
    let body = match signed_by_core(&req, cfg, method, "purge", tracker_protocol::intake::verify_purge).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    purge_hot_path(env, &String::from_utf8_lossy(&body)).await;
    respond(204, &[], None)
}

/// `POST /internal/v1/dlq/replay` (signed by the core, `tracker-core edge replay`): replays parked messages now and
/// answers what it did.
pub(super) async fn dlq_replay(req: RawRequest, env: &Env, cfg: &EdgeConfig, method: Method) -> WebResponse {
    if let Err(refused) = signed_by_core(&req, cfg, method, "replay", tracker_protocol::intake::verify_dlq_replay).await
    {
        return refused;
    }
    match super::queue::replay(env, cfg).await {
        Ok(report) => json(200, serde_json::json!(report).to_string()),
        Err(e) => {
            console_error!("replay of parked messages failed: {e}");
            let body =
                serde_json::json!({ "error": { "code": "unavailable", "message": "Workers KV is unavailable" } });
            json(503, body.to_string())
        }
    }
}

/// A signature check of `tracker_protocol::intake`: secrets, header, timestamp, body.
type Verify = fn(&[Vec<u8>], &str, i64, &[u8]) -> bool;

/// The body of a `POST` from the core signed with `verify` (the batch scheme over its own subject), within five
/// minutes; or the answer refusing it.
async fn signed_by_core(
    req: &RawRequest,
    cfg: &EdgeConfig,
    method: Method,
    what: &str,
    verify: Verify,
) -> Result<Vec<u8>, WebResponse> {
    let refuse = |status: u16, code: &str, message: String| {
        json(status, serde_json::json!({ "error": { "code": code, "message": message } }).to_string())
    };
    if method != Method::Post {
        return Err(refuse(405, "method_not_allowed", "POST only".into()));
    }
    let Some(secret) = cfg.shared_secret().map(<[u8]>::to_vec) else {
        return Err(refuse(404, "not_found", "no such endpoint".into()));
    };
    let ts: Option<i64> = header(req, "x-tracker-timestamp").and_then(|t| t.parse().ok());
    let sig = header(req, "x-tracker-signature").unwrap_or_default();
    let body = match body_bytes(req).await {
        Some(b) if !b.is_empty() && b.len() <= 4096 => b,
        _ => return Err(refuse(400, "invalid_body", "the body must be 1 to 4096 bytes".into())),
    };
    let fresh = ts.is_some_and(|t| t.abs_diff(now_ms()) <= 300_000);
    if !fresh || !verify(&[secret], &sig, ts.unwrap_or(0), &body) {
        return Err(refuse(401, "invalid_signature", format!("the {what} is not signed by the core or is too old")));
    }
    Ok(body)
}

/// Deletes stale records from KV and this isolate before the change is acknowledged to the caller.
pub(super) async fn purge_hot_path(env: &Env, header: &str) {
    let kv = env.kv(KV).ok();
    for (kind, id) in purge_keys(header) {
        with_isolate(|i| match kind {
            "tenant" => i.tenants.remove(id),
            "short" => i.links.remove(id),
            _ => i.tokens.remove(id),
        });
        let key = format!("{kind}:{id}");
        super::colo::delete(&key).await;
        if let Some(kv) = &kv
            && let Err(e) = kv.delete(&key).await
        {
            console_error!("could not delete {key} from KV: {e}");
        }
    }
}
