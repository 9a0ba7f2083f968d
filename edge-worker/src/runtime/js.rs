//! The raw JavaScript glue: responses built as the runtime's own `Response`, request headers and bodies read
//! through the isolate's cached JS strings and functions, the clock and randomness of the Workers runtime, and the
//! promise plumbing the queue's fallback needs. Nothing here knows an endpoint.

use std::cell::RefCell;
use std::collections::HashMap;

use tracker_protocol::service::{PIXEL_GIF, PIXEL_HEADERS, PIXEL_REFUSED_HEADER, RequestInfo, error_body};
use tracker_protocol::{ProtocolError, truncate_field};
use worker::js_sys::{Function, Promise, Reflect};
use worker::wasm_bindgen::JsCast as _;
use worker::wasm_bindgen::JsValue;

/// Our answers are built as the runtime's own `Response`, headers given as one plain object (constant names and
/// values come from a per-isolate cache of JS strings), so an answer costs one constructor call.
pub(super) type WebResponse = worker::web_sys::Response;

thread_local! {
    static JS_STRINGS: RefCell<HashMap<&'static str, JsValue>> = RefCell::new(HashMap::new());
}

pub(super) fn js(s: &'static str) -> JsValue {
    JS_STRINGS.with(|m| m.borrow_mut().entry(s).or_insert_with(|| JsValue::from_str(s)).clone())
}

pub(super) fn respond_with(
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
pub(super) fn refused_pixel(code: &str) -> WebResponse {
    respond_with(200, &PIXEL_HEADERS, &[(PIXEL_REFUSED_HEADER, code)], Some(PIXEL_GIF.to_vec()))
}

pub(super) fn respond(status: u16, headers: &[(&'static str, &'static str)], body: Option<Vec<u8>>) -> WebResponse {
    respond_with(status, headers, &[], body)
}

#[allow(clippy::unwrap_used)] // `new Response()` cannot fail in the Workers runtime
pub(super) fn unreachable_response() -> WebResponse {
    WebResponse::new().unwrap()
}

pub(super) fn json(status: u16, body: String) -> WebResponse {
    respond(status, &[("content-type", "application/json"), ("cache-control", "no-store")], Some(body.into_bytes()))
}

pub(super) fn error(e: &ProtocolError) -> WebResponse {
    let status = e.http_status();
    let mut extra = e.retry_headers();
    if status == 503 && extra.is_empty() {
        extra.push(("retry-after", "1".to_owned()));
    }
    let headers = [("content-type", "application/json"), ("cache-control", "no-store")];
    let dynamic: Vec<(&'static str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    respond_with(status, &headers, &dynamic, Some(error_body(e).into_bytes()))
}

pub(super) fn now_ms() -> i64 {
    // the static Date.now(): no Date object per call
    worker::js_sys::Date::now() as i64
}

/// A fresh nonce (sealing KV values).
pub(super) fn random12() -> [u8; 12] {
    let mut b = [0u8; 12];
    let _ = getrandom::getrandom(&mut b);
    b
}

pub(super) fn random10() -> [u8; 10] {
    let mut b = [0u8; 10];
    // the Workers runtime always provides crypto.getRandomValues
    let _ = getrandom::getrandom(&mut b);
    b
}

/// The incoming request as the runtime hands it over. `worker::Request` is not used on purpose: converting to it
/// reads `request.cf`, which workerd materialises on access, and that alone cost more per request than our whole
/// handler (found with a V8 CPU profile of the Worker under load).
pub(super) type RawRequest = worker::web_sys::Request;

/// `headers.get(name)` with the name from the isolate's JS string cache (no string copy into JS per call).
pub(super) fn header_of(headers: &JsValue, name: &'static str) -> Option<String> {
    thread_local! {
        static GET: Option<Function> = worker::web_sys::Headers::new()
            .ok()
            .and_then(|h| Reflect::get(&h, &JsValue::from_str("get")).ok())
            .and_then(|f| f.dyn_into().ok());
    }
    GET.with(|get| get.as_ref()?.call1(headers, &js(name)).ok()?.as_string())
}

pub(super) fn header(req: &RawRequest, name: &'static str) -> Option<String> {
    header_of(&req.headers(), name)
}

/// The body, read chunk by chunk and given up as soon as it passes `limit` bytes (a chunked body declares no length
/// to refuse it by, and one isolate serves many requests: none may hold more than its limit).
pub(super) async fn body_bytes_capped(req: &RawRequest, limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let too_large = ProtocolError::BodyTooLarge { max: limit };
    let declared: Option<usize> = header(req, "content-length").and_then(|l| l.trim().parse().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    let unreadable = || ProtocolError::InvalidBatch { reason: "the body could not be read".into() };
    let Some(stream) = req.body() else { return Ok(Vec::new()) };
    let reader: worker::web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut out = Vec::new();
    loop {
        let chunk = worker::wasm_bindgen_futures::JsFuture::from(reader.read()).await.map_err(|_| unreadable())?;
        if Reflect::get(&chunk, &js("done")).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(out);
        }
        let bytes = worker::js_sys::Uint8Array::new(&Reflect::get(&chunk, &js("value")).map_err(|_| unreadable())?);
        if out.len().saturating_add(bytes.length() as usize) > limit {
            // what was read is dropped with this request; the rest is left to the runtime (cancelling the stream
            // here can reset the connection before the client has read the answer)
            return Err(too_large);
        }
        out.extend_from_slice(&bytes.to_vec());
    }
}

pub(super) async fn body_bytes(req: &RawRequest) -> Option<Vec<u8>> {
    let buffer = worker::wasm_bindgen_futures::JsFuture::from(req.array_buffer().ok()?).await.ok()?;
    Some(worker::js_sys::Uint8Array::new(&buffer).to_vec())
}

pub(super) fn request_info(req: &RawRequest, path: &str, max: usize) -> RequestInfo {
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
        origin: header("origin"),
    }
}

pub(super) fn bearer(req: &RawRequest) -> Option<String> {
    let v = header(req, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
}

pub(super) fn with_cors(res: WebResponse) -> WebResponse {
    let _ = res.headers().set("access-control-allow-origin", "*");
    res
}

/// `queue.send(body, {contentType: "text"})` through the raw binding; `None` if the call itself throws.
pub(super) fn send_text(queue: &JsValue, body: &JsValue) -> Option<Promise> {
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

pub(super) trait CatchWith {
    fn catch_with(&self, handler: &Function) -> Option<JsValue>;
}

impl CatchWith for Promise {
    /// `promise.then(undefined, handler)` with a JS function (no Rust closure per call).
    fn catch_with(&self, handler: &Function) -> Option<JsValue> {
        let then: Function = Reflect::get(self, &JsValue::from_str("then")).ok()?.dyn_into().ok()?;
        then.call2(self, &JsValue::UNDEFINED, handler).ok()
    }
}
