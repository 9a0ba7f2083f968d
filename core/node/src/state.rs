//! Shared state of a core node: configuration, the event log, the metadata store and its hot caches.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tracker_log::{EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Event, KeyRef, LinkKey, ProtocolError, partition_for};
use tracker_store::{ShortLink, Store, StoreError, TenantKeys, TokenInfo, hash_token};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn random10() -> [u8; 10] {
    rand::rng().random()
}

/// Entries kept before a cache is cleared wholesale (bounds memory against random lookups).
const MAX_CACHE_ENTRIES: usize = 100_000;

/// A cached answer (including "there is none") and when it was loaded.
type Cached<V> = (Option<Arc<V>>, Instant);

/// A read-through cache with a TTL for positive and negative answers.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    map: RwLock<HashMap<K, Cached<V>>>,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, map: RwLock::new(HashMap::new()) }
    }

    pub async fn get<F, Fut>(&self, key: &K, load: F) -> Result<Option<Arc<V>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
    {
        if let Ok(map) = self.map.read()
            && let Some((v, at)) = map.get(key)
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        let v = load().await?.map(Arc::new);
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(key.clone(), (v.clone(), Instant::now()));
        }
        Ok(v)
    }
}

/// Keys borrowed from the configuration or shared from the tenant cache.
#[derive(Debug)]
pub enum Keys<'a> {
    Global(&'a [LinkKey]),
    Tenant(Arc<TenantKeys>),
}

impl Keys<'_> {
    pub fn as_slice(&self) -> &[LinkKey] {
        match self {
            Keys::Global(k) => k,
            Keys::Tenant(t) => &t.keys,
        }
    }
}

#[derive(Debug)]
pub struct AppState {
    pub cfg: Config,
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub metrics: Metrics,
    tenants: TtlCache<String, TenantKeys>,
    short_links: TtlCache<String, ShortLink>,
    tokens: TtlCache<String, TokenInfo>,
    global_keys: Vec<LinkKey>,
}

impl AppState {
    pub fn new(cfg: Config, log: Arc<dyn EventLog>, store: Store) -> AppState {
        let global_keys = if cfg.hmac_secret.is_some() || cfg.encryption_key.is_some() {
            vec![LinkKey {
                kid: "global".into(),
                signing_secret: cfg.hmac_secret.clone(),
                encryption_key: cfg.encryption_key,
                retires_at_ms: None,
            }]
        } else {
            Vec::new()
        };
        let ttl = cfg.cache_ttl;
        AppState {
            cfg,
            log,
            store,
            metrics: Metrics::default(),
            tenants: TtlCache::new(ttl),
            short_links: TtlCache::new(ttl),
            tokens: TtlCache::new(ttl),
            global_keys,
        }
    }

    /// An active tenant, or the precise refusal.
    pub async fn tenant(&self, key_prefix: &str) -> Result<Arc<TenantKeys>, ApiError> {
        let found = self.tenants.get(&key_prefix.to_owned(), || self.store.tenant_keys(key_prefix)).await?;
        match found {
            Some(t) if t.tenant.is_active() => Ok(t),
            Some(_) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "tenant_suspended",
                format!("tenant {key_prefix:?} is suspended"),
            )),
            None => Err(ProtocolError::UnknownTenant { key_prefix: key_prefix.to_owned() }.into()),
        }
    }

    /// The keys that verify a link: the global ones or the tenant's (no copies of secrets on the hot path).
    pub async fn keys_for(&self, key: &KeyRef) -> Result<Keys<'_>, ApiError> {
        match key {
            KeyRef::Global => Ok(Keys::Global(&self.global_keys)),
            KeyRef::Tenant { key_prefix, .. } => Ok(Keys::Tenant(self.tenant(key_prefix).await?)),
        }
    }

    pub async fn short_link(&self, tu_id: &str) -> Result<Option<Arc<ShortLink>>, ApiError> {
        Ok(self.short_links.get(&tu_id.to_owned(), || self.store.short_link(tu_id)).await?)
    }

    /// The tenant an ingest token belongs to; refusals never say whether the token ever existed.
    pub async fn authenticate_token(&self, token: &str) -> Result<Arc<TokenInfo>, ApiError> {
        let hash = hash_token(token);
        let now = now_ms();
        let info = self.tokens.get(&hash, || self.store.lookup_ingest_token(token, now)).await?;
        info.ok_or_else(|| ApiError::unauthorized("the ingest token is invalid, expired or revoked"))
    }

    /// One event as a record set for its tenant's partition.
    fn single(&self, event: &Event) -> RecordSet {
        let mut b = RecordSetBuilder::with_capacity(512);
        b.push(event);
        RecordSet { partition: partition_for(&event.key_prefix, self.log.partitions()), count: 1, bytes: b.finish() }
    }

    /// Hands one event to the log without waiting for the disk (durable within the commit window).
    pub async fn emit(&self, event: &Event) -> Result<(), ApiError> {
        Ok(self.log.enqueue(vec![self.single(event)]).await?)
    }

    /// Appends one event and waits until it is durable; `true` if the idempotency key had been seen.
    pub async fn store_durably(&self, event: &Event, idempotency_key: Option<String>) -> Result<bool, ApiError> {
        Ok(self.log.append(vec![self.single(event)], idempotency_key).await?.duplicate)
    }
}
