//! What an isolate keeps between requests (its configuration, caches and rate limiters), and the lookups of
//! tenants, short links and tokens: isolate cache, then the location's cache of KV's copy (`colo`), then Workers KV,
//! then the core's signed lookup API (which fills KV and the location's cache).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracker_protocol::client_ip::rate_key;
use tracker_protocol::intake::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_lookup};
use tracker_protocol::service::{self, Directory, ShortLinkRecord, TenantRecord, TokenRecord};
use tracker_protocol::{LinkKey, ProtocolError};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, console_error};

use super::js::{WebResponse, now_ms, respond_with};
use crate::api::Refusals;
use crate::cache::IsolateCache;
use crate::config::EdgeConfig;
use crate::limiter::Limiter;

/// The Workers KV namespace of the hot-path records (and parked dead letters).
pub(super) const KV: &str = "TRACKER_KV";

/// What an isolate keeps between requests.
pub(super) struct Isolate {
    pub(super) config: Rc<EdgeConfig>,
    pub(super) tenants: IsolateCache<TenantRecord>,
    pub(super) links: IsolateCache<ShortLinkRecord>,
    pub(super) tokens: IsolateCache<TokenRecord>,
    pub(super) tenant_limits: Limiter,
    pub(super) ip_limits: Limiter,
    /// Lookups that miss KV and go to the core, per client IP.
    pub(super) miss_limits: Limiter,
    /// Platform API requests per client IP.
    pub(super) api_ip_limits: Limiter,
    /// API credentials the core refused or rate-limited.
    pub(super) api_refusals: Refusals,
    /// Messages parked and kept in KV, and when they were counted (`queue::dead_letters`).
    pub(super) dead_letters: Option<(crate::dlq::DeadLetters, i64)>,
}

thread_local! {
    pub(super) static ISOLATE: RefCell<Option<Isolate>> = const { RefCell::new(None) };
}

pub(super) fn config(env: &Env) -> Result<Rc<EdgeConfig>, String> {
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
            dead_letters: None,
        })
    });
    Ok(cfg)
}

pub(super) fn with_isolate<T>(f: impl FnOnce(&mut Isolate) -> T) -> Option<T> {
    ISOLATE.with(|i| i.borrow_mut().as_mut().map(f))
}

/// A record kind the edge looks up.
pub(super) trait Record: Serialize + DeserializeOwned + 'static {
    const KV_PREFIX: &'static str;
    const CORE_PATH: &'static str;
    /// Whether a stale copy is served while the core cannot be reached: tenants and short links (redirects go on
    /// through a core outage), not ingest tokens (a revoked token must not outlive its freshness).
    const SERVE_STALE: bool;
    fn cache(isolate: &mut Isolate) -> &mut IsolateCache<Self>;
}

impl Record for TenantRecord {
    const SERVE_STALE: bool = true;
    const KV_PREFIX: &'static str = "tenant:";
    const CORE_PATH: &'static str = "/internal/v1/tenants/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.tenants
    }
}

impl Record for ShortLinkRecord {
    const SERVE_STALE: bool = true;
    const KV_PREFIX: &'static str = "short:";
    const CORE_PATH: &'static str = "/internal/v1/short-links/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.links
    }
}

impl Record for TokenRecord {
    const SERVE_STALE: bool = false;
    const KV_PREFIX: &'static str = "token:";
    const CORE_PATH: &'static str = "/internal/v1/tokens/";
    fn cache(i: &mut Isolate) -> &mut IsolateCache<Self> {
        &mut i.tokens
    }
}

/// How long KV keeps a tenant or short link record the Worker may serve stale (a week of core outage).
const STALE_KEEP_SECS: u64 = 7 * 24 * 3600;

/// A record as the Worker keeps it in KV: with when it was read from the core.
#[derive(Serialize, serde::Deserialize)]
#[serde(bound(deserialize = "R: DeserializeOwned"))]
struct Stored<R> {
    at: i64,
    record: R,
}

/// The same, borrowed for writing.
#[derive(Serialize)]
struct StoredRef<'a, R> {
    at: i64,
    record: &'a R,
}

pub(super) struct EdgeDirectory<'a> {
    pub(super) env: &'a Env,
    pub(super) cfg: &'a EdgeConfig,
    /// The client, whose lookups that miss KV are limited: random ids must not become a flood at the core.
    pub(super) ip: Option<&'a str>,
}

pub(super) fn unavailable(what: &'static str) -> ProtocolError {
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
        // sealed under a key derived from EDGE_SHARED_SECRET and bound to its KV key: anything else is a miss
        let sealing = self.cfg.shared_secret().and_then(tracker_protocol::intake::kv_sealing_key);
        let open = |text: &str| -> Option<Stored<R>> {
            let plain = tracker_protocol::intake::open_kv(sealing.as_ref()?, &key, text)?;
            serde_json::from_slice(&plain).ok()
        };
        let fill_ms = i64::try_from(self.cfg.kv_fill_ttl_secs).unwrap_or(i64::MAX).saturating_mul(1000);
        // seconds a copy read from the core at `at` is still fresh
        let fresh_secs = |at: i64| u64::try_from(at.saturating_add(fill_ms).saturating_sub(now) / 1000).unwrap_or(0);
        // this location's copy of KV's (free), then KV's
        if let Some(stored) = super::colo::get(&key).await.as_deref().and_then(open)
            && now - stored.at < fill_ms
        {
            let record = Some(Arc::new(stored.record));
            with_isolate(|i| R::cache(i).put(id, record.clone(), now));
            return Ok(record);
        }
        let mut stale = None;
        if let Ok(Some(text)) = kv.get(&key).text().await
            && let Some(stored) = open(&text)
        {
            let at = stored.at;
            let record = Some(Arc::new(stored.record));
            if now - at < fill_ms {
                super::colo::put(&key, &text, fresh_secs(at)).await;
                with_isolate(|i| R::cache(i).put(id, record.clone(), now));
                return Ok(record);
            }
            stale = record.filter(|_| R::SERVE_STALE);
        }
        let serve_stale = |stale: Option<Arc<R>>, why: &str| {
            console_error!("serving {key} as it was: {why}");
            with_isolate(|i| R::cache(i).put(id, stale.clone(), now));
            Ok(stale)
        };
        let client = self.ip.unwrap_or("unknown");
        if let Some(Err(retry_after_secs)) = with_isolate(|i| i.miss_limits.check(&rate_key(client), 1.0, now)) {
            if stale.is_some() {
                return serve_stale(stale, "this client's lookups are over their rate");
            }
            return Err(ProtocolError::RateLimited { retry_after_secs });
        }
        let found: Option<R> = match self.ask_core(&format!("{}{id}", R::CORE_PATH)).await {
            Ok(found) => found,
            Err(e) if stale.is_some() => return serve_stale(stale, &format!("the core cannot be reached ({e})")),
            Err(e) => return Err(e),
        };
        if let Some(record) = &found
            && let Some(sealing) = sealing
            && let Ok(text) = serde_json::to_vec(&StoredRef { at: now, record })
            && let Some(sealed) = tracker_protocol::intake::seal_kv(&sealing, &key, &text, super::js::random12())
        {
            super::colo::put(&key, &sealed, self.cfg.kv_fill_ttl_secs).await;
            // fresh for KV_FILL_TTL_SECS; records served stale through a core outage are kept a week (a change made
            // meanwhile purges them); KV keeps nothing less than 60 s
            let keep = if R::SERVE_STALE { STALE_KEEP_SECS } else { self.cfg.kv_fill_ttl_secs.max(60) };
            // best effort: a failed fill only costs another core lookup later
            if let Ok(put) = kv.put(&key, sealed) {
                let _ = put.expiration_ttl(keep).execute().await;
            }
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

pub(super) fn rate_limited(retry_after: u64) -> WebResponse {
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
pub(super) fn check_rate(key_prefix: &str, ip: Option<&str>, cost: f64) -> Result<(), WebResponse> {
    let now = now_ms();
    let verdict = with_isolate(|i| {
        i.tenant_limits.check(key_prefix, cost, now)?;
        match ip {
            Some(ip) => i.ip_limits.check(&format!("{key_prefix}|{}", rate_key(ip)), 1.0, now),
            None => Ok(()),
        }
    });
    match verdict {
        Some(Err(retry)) => Err(rate_limited(retry)),
        _ => Ok(()),
    }
}
