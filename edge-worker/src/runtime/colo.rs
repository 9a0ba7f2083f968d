//! The data center's cache of hot-path records, between each isolate's own cache and Workers KV. KV bills every
//! read ($0.50 per million) and an isolate's cache serves only the requests that isolate sees; the Workers Cache API
//! is free and shared by every isolate of a location, so a record is read from KV about once per location per
//! `KV_FILL_TTL_SECS` instead of once per isolate per `CACHE_TTL_MS`.
//!
//! It holds exactly what KV holds (the sealed `{at, record}` text, bound to its KV key) and only while that copy is
//! fresh (`at` + `KV_FILL_TTL_SECS`), so a record is never honoured longer than it is today; a purge from the core
//! deletes it in the location that receives the purge, and elsewhere it expires with its freshness. The cache is
//! keyed by a URL of no real host whose path is the KV key in hex (no id can alias another's entry). The Cache API
//! does nothing on `*.workers.dev` hostnames: there the lookups fall through to KV, as before.

use worker::{Cache, Response};

const ORIGIN: &str = "https://records.tracker-edge.invalid/";

fn url(key: &str) -> String {
    format!("{ORIGIN}{}", hex::encode(key))
}

/// The sealed text cached for KV key `key` in this location, if any.
pub(super) async fn get(key: &str) -> Option<String> {
    let mut res = Cache::default().get(url(key).as_str(), false).await.ok()??;
    res.text().await.ok()
}

/// Caches `sealed` (what KV holds under `key`) for `fresh_secs` (nothing under a second).
pub(super) async fn put(key: &str, sealed: &str, fresh_secs: u64) {
    if fresh_secs == 0 {
        return;
    }
    let Ok(mut res) = Response::ok(sealed) else { return };
    let _ = res.headers_mut().set("cache-control", &format!("max-age={fresh_secs}"));
    // best effort: a failed put costs one more KV read later
    let _ = Cache::default().put(url(key).as_str(), res).await;
}

pub(super) async fn delete(key: &str) {
    let _ = Cache::default().delete(url(key).as_str(), false).await;
}
