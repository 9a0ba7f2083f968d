//! `GET /dashboard/...`: the dashboard from Workers static assets (the `ASSETS` binding over `dashboard/dist`),
//! answered with the headers every core node gives it (`tracker_protocol::dashboard`).

use tracker_protocol::dashboard::{PREFIX, SECURITY_HEADERS, cache_control, file_of};
use worker::{Env, Headers, Method, Request, RequestInit, console_error};

use super::js::{RawRequest, WebResponse, header, respond};

/// The assets binding (`[assets]` in wrangler.toml).
const ASSETS: &str = "ASSETS";

pub(super) async fn dashboard(req: &RawRequest, env: &Env, path: &str) -> WebResponse {
    if path == "/dashboard" {
        return respond(308, &[("location", PREFIX), ("cache-control", "no-cache")], None);
    }
    let not_found = || respond(404, &[("content-type", "text/plain; charset=utf-8")], Some(b"no such file\n".to_vec()));
    let Some(file) = file_of(path) else { return not_found() };
    let Ok(assets) = env.assets(ASSETS) else {
        console_error!("the dashboard was requested but the Worker has no {ASSETS} binding");
        return not_found();
    };
    // the asset server answers conditional requests and negotiates compression itself
    let headers = Headers::new();
    for name in ["if-none-match", "accept-encoding"] {
        if let Some(v) = header(req, name) {
            let _ = headers.set(name, &v);
        }
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let Ok(asset_req) = Request::new_with_init(&format!("https://assets.invalid/{file}"), &init) else {
        return not_found();
    };
    let res = match assets.fetch_request(asset_req).await {
        Ok(res) => res,
        Err(e) => {
            console_error!("dashboard asset {file}: {e}");
            return not_found();
        }
    };
    if !matches!(res.status_code(), 200 | 304) {
        return not_found();
    }
    let raw: WebResponse = res.into();
    let out = WebResponse::new_with_opt_readable_stream_and_init(raw.body().as_ref(), &{
        let init = worker::web_sys::ResponseInit::new();
        init.set_status(raw.status());
        init.set_headers(&raw.headers());
        init
    });
    let Ok(out) = out else { return not_found() };
    let h = out.headers();
    for (name, value) in SECURITY_HEADERS {
        let _ = h.set(name, value);
    }
    let _ = h.set("cache-control", cache_control(file));
    out
}
