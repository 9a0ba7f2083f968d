//! The Workers runtime glue (wasm32 only): `#[event(fetch)]` answers the tracking endpoints with the shared
//! service and queues the events; `#[event(queue)]` forwards queued messages to the core fleet and parks
//! dead letters in KV. Nothing here decides anything the core node decides differently.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracker_protocol::intake::{
    BATCH_ID_HEADER, CREDENTIAL_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_api, sign_batch, sign_lookup,
};
use tracker_protocol::service::{
    self, BEACON_PREFLIGHT_HEADERS, BatchFormat, Directory, PIXEL_GIF, PIXEL_HEADERS, PIXEL_REFUSED_HEADER,
    REDIRECT_HEADERS, RequestInfo, ShortLinkRecord, TenantRecord, TokenRecord, error_body,
};
use tracker_protocol::{Event, LinkKey, LinkKind, ProtocolError, truncate_field};
use worker::js_sys::{Function, Promise, Reflect};
use worker::wasm_bindgen::JsCast as _;
use worker::wasm_bindgen::closure::Closure;
use worker::{
    Context, Env, Fetch, Headers, Message, MessageBatch, MessageExt, Method, QueueContentType, RawMessageBuilder,
    Request, RequestInit, console_error, event, wasm_bindgen::JsValue,
};

use crate::api::{
    CORS_HEADERS, FORWARDED_HEADERS, LIVE_PREFLIGHT_HEADERS, MAX_API_BODY, PREFLIGHT_HEADERS, Refusals,
    credential_hash, forward_path, live_forward, origin, purge_keys, refusal,
};
use crate::cache::IsolateCache;
use crate::config::EdgeConfig;
use crate::limiter::Limiter;
use crate::pack::{batch_key, intake_body, invalid_message, pack, pick, send_groups};

const KV: &str = "TRACKER_KV";
const EVENTS_QUEUE: &str = "EVENTS";
const DLQ: &str = "DLQ";

/// What an isolate keeps between requests.
struct Isolate {
    config: Rc<EdgeConfig>,
    tenants: IsolateCache<TenantRecord>,
    links: IsolateCache<ShortLinkRecord>,
    tokens: IsolateCache<TokenRecord>,
    tenant_limits: Limiter,
    ip_limits: Limiter,
    /// Lookups that miss KV and go to the core, per client IP.
    miss_limits: Limiter,
    /// Platform API requests per client IP.
    api_ip_limits: Limiter,
    /// API credentials the core refused or rate-limited.
    api_refusals: Refusals,
}

thread_local! {
    static ISOLATE: RefCell<Option<Isolate>> = const { RefCell::new(None) };
}

fn now_ms() -> i64 {
    // the static Date.now(): no Date object per call
    worker::js_sys::Date::now() as i64
}

fn random10() -> [u8; 10] {
    let mut b = [0u8; 10];
    // the Workers runtime always provides crypto.getRandomValues
    let _ = getrandom::getrandom(&mut b);
    b
}

fn config(env: &Env) -> Result<Rc<EdgeConfig>, String> {
    if let Some(c) = ISOLATE.with(|i| i.borrow().as_ref().map(|i| i.config.clone())) {
        return Ok(c);
    }
    let cfg = Rc::new(EdgeConfig::from_lookup(|name| {
        env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
    })?);
    ISOLATE.with(|i| {
        *i.borrow_mut() = Some(Isolate {
            config: cfg.clone(),
            tenants: IsolateCache::new(cfg.cache_ttl_ms),
            links: IsolateCache::new(cfg.cache_ttl_ms),
            tokens: IsolateCache::new(cfg.cache_ttl_ms),
            tenant_limits: Limiter::new(cfg.tenant_rate),
            ip_limits: Limiter::new(cfg.ip_rate),
            miss_limits: Limiter::new(cfg.miss_rate),
            api_ip_limits: Limiter::new(cfg.api_ip_rate),
            api_refusals: Refusals::default(),
        })
    });
    Ok(cfg)
}

fn with_isolate<T>(f: impl FnOnce(&mut Isolate) -> T) -> Option<T> {
    ISOLATE.with(|i| i.borrow_mut().as_mut().map(f))
}

// ---------------------------------------------------------------------------------------------------------------
// Lookups: isolate cache, then KV, then the core's signed lookup API (which fills KV).

/// A record kind the edge looks up.
trait Record: Serialize + DeserializeOwned + 'static {
    const KV_PREFIX: &'static str;
    const CORE_PATH: &'static str;
    fn cache(isolate: &mut Isolate) -> &mut IsolateCache<Self>;
}

impl Record for TenantRecord {
    const KV_PREFIX: &'static str = "tenant:";
    const CORE_PATH: &'static str = "/internal/v1/tenants/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.tenants
    }
}

impl Record for ShortLinkRecord {
    const KV_PREFIX: &'static str = "short:";
    const CORE_PATH: &'static str = "/internal/v1/short-links/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.links
    }
}

impl Record for TokenRecord {
    const KV_PREFIX: &'static str = "token:";
    const CORE_PATH: &'static str = "/internal/v1/tokens/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.tokens
    }
}

struct EdgeDirectory<'a> {
    env: &'a Env,
    cfg: &'a EdgeConfig,
    /// The client, whose lookups that miss KV are limited: random ids must not become a flood at the core.
    ip: Option<&'a str>,
}

fn unavailable(what: &'static str) -> ProtocolError {
    ProtocolError::Unavailable { what }
}

impl EdgeDirectory<'_> {
    async fn lookup<R: Record>(&self, id: &str) -> Result<Option<Arc<R>>, ProtocolError> {
        let now = now_ms();
        if let Some(Some(hit)) = with_isolate(|i| R::cache(i).get(id, now)) {
            return Ok(hit);
        }
        let kv = self.env.kv(KV).map_err(|_| unavailable("Workers KV"))?;
        let key = format!("{}{id}", R::KV_PREFIX);
        if let Ok(Some(text)) = kv.get(&key).text().await
            && let Ok(record) = serde_json::from_str::<R>(&text)
        {
            let record = Some(Arc::new(record));
            with_isolate(|i| R::cache(i).put(id, record.clone(), now));
            return Ok(record);
        }
        let client = self.ip.unwrap_or("unknown");
        if let Some(Err(retry_after_secs)) = with_isolate(|i| i.miss_limits.check(client, 1.0, now)) {
            return Err(ProtocolError::RateLimited { retry_after_secs });
        }
        let found: Option<R> = self.ask_core(&format!("{}{id}", R::CORE_PATH)).await?;
        if let Some(record) = &found
            && let Ok(text) = serde_json::to_string(record)
            && let Ok(put) = kv.put(&key, text)
        {
            // best effort: a failed fill only costs another core lookup later
            let _ = put.expiration_ttl(self.cfg.kv_fill_ttl_secs).execute().await;
        }
        let found = found.map(Arc::new);
        with_isolate(|i| R::cache(i).put(id, found.clone(), now));
        Ok(found)
    }

    /// A signed GET to the core nodes in turn; `None` on 404.
    async fn ask_core<R: DeserializeOwned>(&self, path: &str) -> Result<Option<R>, ProtocolError> {
        let secret = self.cfg.shared_secret().ok_or(unavailable("the core lookup API (no EDGE_SHARED_SECRET)"))?;
        for base in &self.cfg.core_urls {
            let ts = now_ms();
            let Some(sig) = sign_lookup(secret, ts, path) else { continue };
            let headers = Headers::new();
            let _ = headers.set(SIGNATURE_HEADER, &sig);
            let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
            let mut init = RequestInit::new();
            init.with_method(Method::Get).with_headers(headers);
            let Ok(req) = Request::new_with_init(&format!("{base}{path}"), &init) else { continue };
            match Fetch::Request(req).send().await {
                Ok(mut res) if res.status_code() == 200 => {
                    return res.json::<R>().await.map(Some).map_err(|_| unavailable("the core lookup API"));
                }
                Ok(res) if res.status_code() == 404 => return Ok(None),
                Ok(res) => console_error!("core lookup {path} at {base} answered {}", res.status_code()),
                Err(e) => console_error!("core lookup {path} at {base} failed: {e}"),
            }
        }
        Err(unavailable("the core lookup API"))
    }
}

impl Directory for EdgeDirectory<'_> {
    fn tenant(&self, key_prefix: &str) -> impl Future<Output = Result<Option<Arc<TenantRecord>>, ProtocolError>> {
        self.lookup::<TenantRecord>(key_prefix)
    }

    fn short_link(&self, tu_id: &str) -> impl Future<Output = Result<Option<Arc<ShortLinkRecord>>, ProtocolError>> {
        self.lookup::<ShortLinkRecord>(tu_id)
    }

    async fn token(&self, token: &str) -> Result<Option<Arc<TokenRecord>>, ProtocolError> {
        if !service::is_ingest_token_shape(token) {
            return Ok(None);
        }
        // only the hash ever leaves the request: KV and the core are asked by SHA-256
        self.lookup::<TokenRecord>(&hex::encode(Sha256::digest(token.as_bytes()))).await
    }

    fn global_keys(&self) -> &[LinkKey] {
        &self.cfg.global_keys
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Responses.

/// Our answers are built as the runtime's own `Response`, headers given as one plain object (constant names and
/// values come from a per-isolate cache of JS strings), so an answer costs one constructor call.
type WebResponse = worker::web_sys::Response;

thread_local! {
    static JS_STRINGS: RefCell<HashMap<&'static str, JsValue>> = RefCell::new(HashMap::new());
}

fn js(s: &'static str) -> JsValue {
    JS_STRINGS.with(|m| m.borrow_mut().entry(s).or_insert_with(|| JsValue::from_str(s)).clone())
}

fn respond_with(
    status: u16,
    headers: &[(&'static str, &'static str)],
    dynamic: &[(&'static str, &str)],
    body: Option<Vec<u8>>,
) -> WebResponse {
    let h = worker::js_sys::Object::new();
    for (k, v) in headers {
        let _ = Reflect::set(&h, &js(k), &js(v));
    }
    for (k, v) in dynamic {
        let _ = Reflect::set(&h, &js(k), &JsValue::from_str(v));
    }
    let init = worker::web_sys::ResponseInit::new();
    init.set_status(status);
    init.set_headers(&h);
    let res = match body {
        Some(mut b) => WebResponse::new_with_opt_u8_array_and_init(Some(&mut b), &init),
        None => WebResponse::new_with_opt_str_and_init(None, &init),
    };
    res.or_else(|_| WebResponse::new()).unwrap_or_else(|_| unreachable_response())
}

/// The pixel, with why its event was refused: a page or an email always gets its image.
fn refused_pixel(code: &str) -> WebResponse {
    respond_with(200, &PIXEL_HEADERS, &[(PIXEL_REFUSED_HEADER, code)], Some(PIXEL_GIF.to_vec()))
}

fn respond(status: u16, headers: &[(&'static str, &'static str)], body: Option<Vec<u8>>) -> WebResponse {
    respond_with(status, headers, &[], body)
}

#[allow(clippy::unwrap_used)] // `new Response()` cannot fail in the Workers runtime
fn unreachable_response() -> WebResponse {
    WebResponse::new().unwrap()
}

fn json(status: u16, body: String) -> WebResponse {
    respond(status, &[("content-type", "application/json"), ("cache-control", "no-store")], Some(body.into_bytes()))
}

fn error(e: &ProtocolError) -> WebResponse {
    let status = e.http_status();
    let mut extra = e.retry_headers();
    if status == 503 && extra.is_empty() {
        extra.push(("retry-after", "1".to_owned()));
    }
    let headers = [("content-type", "application/json"), ("cache-control", "no-store")];
    let dynamic: Vec<(&'static str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    respond_with(status, &headers, &dynamic, Some(error_body(e).into_bytes()))
}

fn rate_limited(retry_after: u64) -> WebResponse {
    let message = "too many requests for this tenant or client; retry later";
    let body = serde_json::json!({ "error": { "code": "rate_limited", "message": message } });
    let retry = retry_after.to_string();
    respond_with(
        429,
        &[("content-type", "application/json")],
        &[("retry-after", &retry)],
        Some(body.to_string().into_bytes()),
    )
}

/// Per-tenant and per-tenant-and-IP limits, checked only after the request proved which tenant it is for.
fn check_rate(key_prefix: &str, ip: Option<&str>, cost: f64) -> Result<(), WebResponse> {
    let now = now_ms();
    let verdict = with_isolate(|i| {
        i.tenant_limits.check(key_prefix, cost, now)?;
        match ip {
            Some(ip) => i.ip_limits.check(&format!("{key_prefix}|{ip}"), 1.0, now),
            None => Ok(()),
        }
    });
    match verdict {
        Some(Err(retry)) => Err(rate_limited(retry)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Forwarding.

/// Puts events on the queue, packed into as few messages as fit.
async fn enqueue(env: &Env, events: &[Event], batch_key: Option<&str>) -> Result<(), String> {
    let queue = env.queue(EVENTS_QUEUE).map_err(|e| e.to_string())?;
    let messages = pack(events, batch_key).map_err(|e| e.to_string())?;
    // raw JS strings with the text content type: no serde_wasm_bindgen pass over the body
    let text =
        |m: &String| RawMessageBuilder::new(JsValue::from_str(m)).build_with_content_type(QueueContentType::Text);
    if let [one] = messages.as_slice() {
        // the common case (a click, a postback): one message, one plain send
        return queue.send_raw(text(one)).await.map_err(|e| e.to_string());
    }
    for group in send_groups(&messages) {
        let batch: Vec<_> = messages.get(group).unwrap_or_default().iter().map(text).collect();
        queue.send_raw_batch(batch).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Queues the count of a request's refused elements for the tenant's usage. A failure is logged: the client has
/// its answer (with the refusals) either way, and no event is lost.
async fn enqueue_invalid(env: &Env, key_prefix: &str, count: usize, batch_key: Option<&str>) {
    let message = invalid_message(key_prefix, count, batch_key);
    let raw = RawMessageBuilder::new(JsValue::from_str(&message)).build_with_content_type(QueueContentType::Text);
    let sent = match env.queue(EVENTS_QUEUE) {
        Ok(q) => q.send_raw(raw).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        console_error!("refused elements not metered ({key_prefix}: {count}): {e}");
    }
}

/// Queues events without delaying the response. If the queue refuses, the events go straight to the core; if that
/// fails too they are logged in full, never dropped silently.
fn enqueue_later(env: &Env, ctx: &Context, events: Vec<Event>) {
    let bodies = match pack(&events, None) {
        Ok(b) => b,
        Err(e) => return console_error!("UNDELIVERED EVENTS (cannot serialise: {e}): {events:?}"),
    };
    for body in bodies {
        let body = JsValue::from_str(&body);
        // the queue's own promise goes straight to waitUntil (no Rust future, closure or microtask per request);
        // if it rejects, the isolate's fallback delivers the body to the core
        let sent = env.queue(EVENTS_QUEUE).ok().and_then(|q| send_text(q.as_ref(), &body));
        let guarded = match sent {
            Some(promise) => {
                let handler: Function = JsValue::from(fallback().bind1(&JsValue::NULL, &body)).unchecked_into();
                promise.catch_with(&handler)
            }
            None => fallback().call2(&JsValue::NULL, &body, &JsValue::from_str("no EVENTS queue binding")).ok(),
        };
        if let Some(p) = guarded.and_then(|p| p.dyn_into::<Promise>().ok()) {
            let _ = ctx.as_ref().wait_until(&p);
        }
    }
}

/// `queue.send(body, {contentType: "text"})` through the raw binding; `None` if the call itself throws.
fn send_text(queue: &JsValue, body: &JsValue) -> Option<Promise> {
    thread_local! {
        static TEXT: JsValue = {
            let options = worker::js_sys::Object::new();
            let _ = Reflect::set(&options, &JsValue::from_str("contentType"), &JsValue::from_str("text"));
            options.into()
        };
    }
    let send: Function = Reflect::get(queue, &JsValue::from_str("send")).ok()?.dyn_into().ok()?;
    TEXT.with(|options| send.call2(queue, body, options)).ok()?.dyn_into().ok()
}

/// The isolate's `(body, error) => Promise` fallback for queue sends that fail: deliver straight to the core, and
/// log the events in full if that fails too (never dropped silently).
fn fallback() -> Function {
    thread_local! {
        static FALLBACK: Function = Closure::<dyn FnMut(JsValue, JsValue) -> Promise>::new(deliver_directly)
            .into_js_value()
            .unchecked_into();
    }
    FALLBACK.with(Function::clone)
}

fn deliver_directly(body: JsValue, error: JsValue) -> Promise {
    let body = body.as_string().unwrap_or_default();
    worker::js_sys::futures::future_to_promise(async move {
        console_error!("queue send failed ({error:?}); delivering directly to the core");
        let cfg = ISOLATE.with(|i| i.borrow().as_ref().map(|i| i.config.clone()));
        let id = format!("direct-{}", hex::encode(random10()));
        let delivered = match cfg {
            Some(cfg) => deliver(&cfg, &id, &body).await.is_ok(),
            None => false,
        };
        if !delivered {
            console_error!("UNDELIVERED EVENTS (queue and core both failed): {body}");
        }
        Ok(JsValue::UNDEFINED)
    })
}

trait CatchWith {
    fn catch_with(&self, handler: &Function) -> Option<JsValue>;
}

impl CatchWith for Promise {
    /// `promise.then(undefined, handler)` with a JS function (no Rust closure per call).
    fn catch_with(&self, handler: &Function) -> Option<JsValue> {
        let then: Function = Reflect::get(self, &JsValue::from_str("then")).ok()?.dyn_into().ok()?;
        then.call2(self, &JsValue::UNDEFINED, handler).ok()
    }
}

/// Sends one message body to the core fleet's intake, trying each node in turn. Returns the indices the core
/// refused permanently.
async fn deliver(cfg: &EdgeConfig, batch: &str, body: &str) -> Result<Vec<usize>, String> {
    let secret = cfg.shared_secret().ok_or("EDGE_SHARED_SECRET is not set")?;
    if cfg.core_urls.is_empty() {
        return Err("CORE_URLS is empty".into());
    }
    // spread messages over the nodes, fail over to the others
    let start = batch.bytes().map(usize::from).sum::<usize>() % cfg.core_urls.len();
    let mut last = String::new();
    for i in 0..cfg.core_urls.len() {
        let Some(base) = cfg.core_urls.get((start + i) % cfg.core_urls.len()) else { continue };
        let ts = now_ms();
        let sig = sign_batch(secret, ts, batch, body.as_bytes()).ok_or("cannot sign")?;
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set(SIGNATURE_HEADER, &sig);
        let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
        let _ = headers.set(BATCH_ID_HEADER, batch);
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(body)));
        let req =
            Request::new_with_init(&format!("{base}/internal/v1/edge/batches"), &init).map_err(|e| e.to_string())?;
        match Fetch::Request(req).send().await {
            Ok(mut res) if res.status_code() == 200 => {
                #[derive(serde::Deserialize)]
                struct Rejected {
                    index: usize,
                }
                #[derive(serde::Deserialize)]
                struct Answer {
                    rejected: Vec<Rejected>,
                }
                let answer: Answer = res.json().await.map_err(|e| e.to_string())?;
                return Ok(answer.rejected.into_iter().map(|r| r.index).collect());
            }
            Ok(res) => last = format!("{base} answered {}", res.status_code()),
            Err(e) => last = format!("{base}: {e}"),
        }
    }
    Err(last)
}

/// Sends text to the dead-letter queue; `false` if it could not.
async fn dead_letter(env: &Env, text: &str) -> bool {
    let message = RawMessageBuilder::new(JsValue::from_str(text)).build_with_content_type(QueueContentType::Text);
    match env.queue(DLQ) {
        Ok(q) => q.send_raw(message).await.is_ok(),
        Err(_) => false,
    }
}

/// Acknowledges a message whose outcome is safely stored somewhere, or hands it back to the queue.
fn settle(msg: &Message<String>, stored: bool) {
    if stored { msg.ack() } else { msg.retry() }
}

#[event(queue)]
pub async fn queue(batch: MessageBatch<String>, env: Env, _ctx: Context) -> worker::Result<()> {
    let cfg = config(&env).map_err(worker::Error::RustError)?;
    let parking = batch.queue() == cfg.dlq_name;
    let messages: Vec<Message<String>> = batch.messages()?;
    for msg in messages {
        let body = msg.body().clone();
        if parking {
            // dead letters are parked in KV (never expiring) for inspection and replay
            let key = format!("dlq:{:013}:{}", now_ms(), msg.id());
            let parked = match env.kv(KV) {
                Ok(kv) => match kv.put(&key, body) {
                    Ok(put) => put.execute().await.is_ok(),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            settle(&msg, parked);
            continue;
        }
        let Some((batch, forward)) = intake_body(&body, &msg.id()) else {
            // not an events envelope: nothing the core could take; dead-letter it as it is
            settle(&msg, dead_letter(&env, &body).await);
            continue;
        };
        match deliver(&cfg, &batch, &forward).await {
            Ok(rejected) if rejected.is_empty() => msg.ack(),
            Ok(rejected) => {
                // permanently refused by the core: dead-lettered with the reason, not dropped
                let events = pick(&body, &rejected);
                let events: Vec<_> =
                    events.iter().map(|e| serde_json::value::RawValue::from_string(e.clone()).ok()).collect();
                let letter = serde_json::json!({ "reason": "refused_by_core", "events": events });
                settle(&msg, dead_letter(&env, &letter.to_string()).await);
            }
            Err(e) => {
                console_error!("forwarding message {} failed on every core node ({e}); the queue retries it", msg.id());
                msg.retry();
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The endpoints.

/// The incoming request as the runtime hands it over. `worker::Request` is not used on purpose: converting to it
/// reads `request.cf`, which workerd materialises on access, and that alone cost more per request than our whole
/// handler (found with a V8 CPU profile of the Worker under load).
type RawRequest = worker::web_sys::Request;

/// `headers.get(name)` with the name from the isolate's JS string cache (no string copy into JS per call).
fn header_of(headers: &JsValue, name: &'static str) -> Option<String> {
    thread_local! {
        static GET: Option<Function> = worker::web_sys::Headers::new()
            .ok()
            .and_then(|h| Reflect::get(&h, &JsValue::from_str("get")).ok())
            .and_then(|f| f.dyn_into().ok());
    }
    GET.with(|get| get.as_ref()?.call1(headers, &js(name)).ok()?.as_string())
}

fn header(req: &RawRequest, name: &'static str) -> Option<String> {
    header_of(&req.headers(), name)
}

async fn body_bytes(req: &RawRequest) -> Option<Vec<u8>> {
    let buffer = worker::wasm_bindgen_futures::JsFuture::from(req.array_buffer().ok()?).await.ok()?;
    Some(worker::js_sys::Uint8Array::new(&buffer).to_vec())
}

fn request_info(req: &RawRequest, path: &str, max: usize) -> RequestInfo {
    let h: JsValue = req.headers().into();
    let header = |name: &'static str| {
        header_of(&h, name).map(|v| truncate_field(v.trim(), max).to_owned()).filter(|v| !v.is_empty())
    };
    RequestInfo {
        ip: header("cf-connecting-ip"),
        user_agent: header("user-agent"),
        referer: header("referer"),
        accept_language: header("accept-language"),
        host: header("host"),
        path: truncate_field(path, max).to_owned(),
    }
}

/// What `/batch` and `/ingest` read from the request: the token (from the path of a v1 route, or the bearer
/// header), the `Idempotency-Key` and the body.
async fn intake_parts(
    req: &RawRequest,
    path_token: Option<String>,
) -> Result<(Option<String>, Option<String>, Vec<u8>), ProtocolError> {
    let idem = idempotency(req)?;
    let body = body_bytes(req).await.ok_or(ProtocolError::InvalidBatch { reason: "unreadable body".into() })?;
    Ok((path_token.or_else(|| bearer(req)), idem, body))
}

fn idempotency(req: &RawRequest) -> Result<Option<String>, ProtocolError> {
    service::idempotency_key(header(req, "idempotency-key").as_deref())
}

fn bearer(req: &RawRequest) -> Option<String> {
    let v = header(req, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
}

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
        return json(200, serde_json::json!({ "status": "ok", "tier": "edge" }).to_string());
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
                    enqueue_later(env, ctx, vec![event]);
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
                        enqueue_later(env, ctx, vec![event]);
                        respond(200, &PIXEL_HEADERS, Some(PIXEL_GIF.to_vec()))
                    }
                }
                // a pixel sits in a page or an email: whatever the verdict, the visitor gets an image
                Err(e) if kind == LinkKind::Impression => refused_pixel(e.code()),
                Err(e) => error(&e),
            }
        }
        (Method::Post, "/batch") => {
            let (token, idem, body) = match intake_parts(&req, path_token).await {
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
            let (token, idem, body) = match intake_parts(&req, path_token).await {
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

// ---------------------------------------------------------------------------------------------------------------
// The platform API: authenticated, shielded and forwarded to the core's internal API (see `crate::api`).

fn api_error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> WebResponse {
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

async fn api(req: RawRequest, env: &Env, cfg: &EdgeConfig, url: &str, forward: &str) -> WebResponse {
    let method = req.method();
    if method == "OPTIONS" {
        return respond(204, &PREFLIGHT_HEADERS, None);
    }
    let now = now_ms();
    let ip = header(&req, "cf-connecting-ip").unwrap_or_else(|| "unknown".into());
    if let Some(Err(retry)) = with_isolate(|i| i.api_ip_limits.check(&ip, 1.0, now)) {
        return api_error(429, "rate_limited", "too many API requests from this address; retry later", Some(retry));
    }
    let public = forward == "/openapi.json";
    let hash = bearer(&req).as_deref().and_then(credential_hash);
    if !public {
        let Some(hash) = &hash else {
            return api_error(401, "missing_credentials", "send Authorization: Bearer <API key>", None);
        };
        match with_isolate(|i| i.api_refusals.get(hash, now)).flatten() {
            Some((429, secs)) => {
                return api_error(429, "rate_limited", "over this plan's API rate limit; retry later", Some(secs));
            }
            Some(_) => {
                return api_error(401, "invalid_credentials", "the credential is unknown, revoked or expired", None);
            }
            None => {}
        }
    }
    let declared: Option<usize> = header(&req, "content-length").and_then(|l| l.trim().parse().ok());
    if declared.is_some_and(|n| n > MAX_API_BODY) {
        return api_error(413, "body_too_large", "the body is larger than 1 MiB", None);
    }
    let body = match body_bytes(&req).await {
        Some(b) if b.len() <= MAX_API_BODY => b,
        Some(_) => return api_error(413, "body_too_large", "the body is larger than 1 MiB", None),
        None => return api_error(400, "unreadable_body", "the request body could not be read", None),
    };
    let Some(secret) = cfg.shared_secret() else {
        return api_error(503, "unavailable", "the edge has no EDGE_SHARED_SECRET to reach the core", Some(1));
    };
    let credential = hash.unwrap_or_default();
    let content_type = header(&req, "content-type");
    let idempotent = method == "GET" || method == "HEAD";
    let mut answer = None;
    for base in &cfg.core_urls {
        let ts = now_ms();
        let Some(sig) = sign_api(secret, ts, &method, forward, &credential, &body) else { continue };
        let headers = Headers::new();
        let _ = headers.set(SIGNATURE_HEADER, &sig);
        let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
        let _ = headers.set(CREDENTIAL_HEADER, &credential);
        let _ = headers.set("x-tracker-public-url", origin(url));
        if let Some(ct) = &content_type {
            let _ = headers.set("content-type", ct);
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
async fn live(req: RawRequest, cfg: &EdgeConfig, forward: &str, token: Option<String>) -> WebResponse {
    let method = req.method();
    if method == "OPTIONS" {
        return respond(204, &LIVE_PREFLIGHT_HEADERS, None);
    }
    if method != "GET" {
        return api_error(405, "method_not_allowed", "live streams are read with GET", None);
    }
    let now = now_ms();
    let ip = header(&req, "cf-connecting-ip").unwrap_or_else(|| "unknown".into());
    if let Some(Err(retry)) = with_isolate(|i| i.api_ip_limits.check(&ip, 1.0, now)) {
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
        let Some(sig) = sign_api(secret, ts, "GET", forward, &credential, &[]) else { continue };
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
const PURGE_HEADER: &str = "x-tracker-edge-purge";

/// `POST /internal/v1/purge` from the core (signed with the shared secret, within five minutes): deletes the
/// named records from KV and this isolate, so the next request reads them from the core again.
async fn purge(req: RawRequest, env: &Env, cfg: &EdgeConfig, method: Method) -> WebResponse {
    let refuse = |status: u16, code: &str, message: &str| {
        json(status, serde_json::json!({ "error": { "code": code, "message": message } }).to_string())
    };
    if method != Method::Post {
        return refuse(405, "method_not_allowed", "POST only");
    }
    let Some(secret) = cfg.shared_secret().map(<[u8]>::to_vec) else {
        return refuse(404, "not_found", "no such endpoint");
    };
    let ts: Option<i64> = header(&req, "x-tracker-timestamp").and_then(|t| t.parse().ok());
    let sig = header(&req, "x-tracker-signature").unwrap_or_default();
    let body = match body_bytes(&req).await {
        Some(b) if !b.is_empty() && b.len() <= 4096 => b,
        _ => return refuse(400, "invalid_body", "the body must be 1 to 4096 bytes of keys"),
    };
    let fresh = ts.is_some_and(|t| t.abs_diff(now_ms()) <= 300_000);
    if !fresh || !tracker_protocol::intake::verify_purge(&[secret], &sig, ts.unwrap_or(0), &body) {
        return refuse(401, "invalid_signature", "the purge is not signed by the core or is too old");
    }
    purge_hot_path(env, &String::from_utf8_lossy(&body)).await;
    respond(204, &[], None)
}

/// Deletes stale records from KV and this isolate before the change is acknowledged to the caller.
async fn purge_hot_path(env: &Env, header: &str) {
    let kv = env.kv(KV).ok();
    for (kind, id) in purge_keys(header) {
        with_isolate(|i| match kind {
            "tenant" => i.tenants.remove(id),
            "short" => i.links.remove(id),
            _ => i.tokens.remove(id),
        });
        if let Some(kv) = &kv
            && let Err(e) = kv.delete(&format!("{kind}:{id}")).await
        {
            console_error!("could not delete {kind}:{id} from KV: {e}");
        }
    }
}

fn with_cors(res: WebResponse) -> WebResponse {
    let _ = res.headers().set("access-control-allow-origin", "*");
    res
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
            enqueue_later(env, ctx, vec![click.event]);
            respond_with(307, &REDIRECT_HEADERS, &[("location", click.location.as_str())], None)
        }
        Err(e) => error(&e),
    }
}
