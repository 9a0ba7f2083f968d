//! Shared state of a core node: configuration, the event log, the metadata store and its hot caches. The state is
//! the [`Directory`] of the shared tracking service.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tracker_log::{EventLog, LogError, RecordSet};
use tracker_protocol::quota::{QuotaState, month_start};
use tracker_protocol::service::{
    Directory, GLOBAL_KEY_PREFIX, ServiceConfig, ShortLinkRecord, TenantRecord, TokenRecord,
};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Event, LinkKey, ProtocolError, Secret, partition_for};
use tracker_store::{Store, StoreError, hash_token};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// The system clock in ms since the epoch: for what is compared with other machines' clocks (the edge's and the
/// query functions' signatures) and for the operator's commands. Everything else the node decides by time reads
/// [`AppState::clock`].
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The node's time: the system clock, plus however far it was moved on with [`Clock::advance`], so that tests of
/// expiries and grace periods (keys, links, plans) move time instead of waiting for it. Never goes backwards.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    ahead_ms: Arc<AtomicI64>,
}

impl Clock {
    /// ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) `by` into the future.
    pub fn advance(&self, by: Duration) {
        self.ahead_ms.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

pub fn random10() -> [u8; 10] {
    rand::rng().random()
}

const CACHE_LOOKUPS: &str = "tracker_cache_lookups_total";

/// Entries a cache holds; beyond, the least useful are evicted (quick_cache's S3-FIFO).
const MAX_CACHE_ENTRIES: usize = 100_000;

/// A cached answer (including "there is none") and when it was loaded.
type Cached<V> = (Option<Arc<V>>, Instant);

/// A read-through cache with a TTL for positive and negative answers, counting its hits and misses
/// (`tracker_cache_lookups_total{cache, result}`). A bounded `quick_cache` (already linked by the embedded log, so
/// no new crate): hits take a shard's read lock only, and concurrent misses of one key share a single load, so an
/// entry expiring under load costs the store one query, not one per waiting request.
pub struct TtlCache<K, V> {
    ttl: Duration,
    cache: quick_cache::sync::Cache<K, Cached<V>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl<K: Eq + Hash + Clone, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache").field("ttl", &self.ttl).field("entries", &self.cache.len()).finish()
    }
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    /// Its counters go to the process's recorder: build it after that is installed (`AppState::new` does).
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        let lookups = |result: &'static str| metrics::counter!(CACHE_LOOKUPS, "cache" => name, "result" => result);
        let cache = quick_cache::sync::Cache::new(MAX_CACHE_ENTRIES);
        TtlCache { ttl, cache, hits: lookups("hit"), misses: lookups("miss") }
    }

    pub async fn get<F, Fut>(&self, key: &K, load: F) -> Result<Option<Arc<V>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
    {
        let fresh = |at: &Instant| at.elapsed() < self.ttl;
        if let Some((v, at)) = self.cache.get(key)
            && fresh(&at)
        {
            self.hits.increment(1);
            return Ok(v);
        }
        // missing or stale: load it, or wait for the caller already loading it
        use quick_cache::sync::{EntryAction, EntryResult};
        let guard = match self
            .cache
            .entry_async(key, |_, (v, at)| match fresh(at) {
                true => EntryAction::Retain(v.clone()),
                false => EntryAction::ReplaceWithGuard,
            })
            .await
        {
            EntryResult::Retained(v) => {
                self.hits.increment(1);
                return Ok(v);
            }
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => Some(guard),
            // not returned for these actions without a timeout; load without sharing it
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        };
        self.misses.increment(1);
        // an error drops the guard unfilled: the next waiter loads instead
        let v = load().await?.map(Arc::new);
        if let Some(guard) = guard {
            let _ = guard.insert((v.clone(), Instant::now()));
        }
        Ok(v)
    }

    /// Forgets `key`, so the next read asks the store (after a change made through the API).
    pub fn invalidate(&self, key: &K) {
        self.cache.remove(key);
    }
}

fn unavailable(e: StoreError) -> ProtocolError {
    tracing::error!(error = %e, "metadata store failed");
    ProtocolError::Unavailable { what: "the metadata store" }
}

/// The consumers' outputs the node serves.
#[derive(Debug, Clone)]
pub struct ConsumerOutputs {
    /// Events the filter kept.
    pub filtered: Arc<dyn EventLog>,
    pub hot: tracker_store::hot::HotStore,
}

#[derive(Debug)]
pub struct AppState {
    pub cfg: Config,
    /// The filtered events and the hot tier (what `/api/events*` and `/sse/events` read).
    pub outputs: ConsumerOutputs,
    /// Live event streams (`/sse/events`).
    pub live: Arc<crate::live::Hub>,
    pub service: ServiceConfig,
    pub log: Arc<dyn EventLog>,
    pub store: Store,
    pub metrics: Metrics,
    /// Platform API rate limits, per tenant (and one for the admin credential).
    pub api_limits: RateLimiter,
    /// Webhook deliveries (with the address guard unless `WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_client: reqwest::Client,
    /// The warm and cold tiers `/api/query` asks.
    pub queries: crate::query::ArchiveTiers,
    /// The stream consumers this process runs (in-process, and the link counter): `/health` names dead ones.
    pub consumers: Arc<tracker_consumers::Liveness>,
    /// The link counter's consumer group: `link-counts@<node id>`, the id kept in `DATA_DIR/node-id`.
    pub link_counter: String,
    /// The node's own tasks (live tails and streams, Iggy reconnection and spool draining), waited for on shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// The node's time (tests move it on).
    pub clock: Clock,
    /// The platform API as tools for AI assistants (`/mcp`, `/api/tools`), made from the OpenAPI document.
    pub tools: Arc<tracker_mcp::Catalog>,
    tenants: TtlCache<String, TenantRecord>,
    short_links: TtlCache<String, ShortLinkRecord>,
    tokens: TtlCache<String, TokenRecord>,
    global_keys: Vec<LinkKey>,
}

impl AppState {
    pub fn new(
        cfg: Config,
        log: Arc<dyn EventLog>,
        store: Store,
        outputs: ConsumerOutputs,
        tasks: tokio_util::task::TaskTracker,
    ) -> Result<AppState, String> {
        // the process's metrics recorder, before anything registers a metric
        crate::metrics::recorder();
        let global_keys = if cfg.links.hmac_secret.is_some() || cfg.links.encryption_key.is_some() {
            vec![LinkKey {
                kid: "global".into(),
                signing_secret: cfg.links.hmac_secret.clone().map(Secret::into_inner),
                encryption_key: cfg.links.encryption_key.clone().map(Secret::into_inner),
                retires_at_ms: None,
            }]
        } else {
            Vec::new()
        };
        let ttl = cfg.links.cache_ttl;
        let service = ServiceConfig {
            v1_mode: cfg.links.url_mode,
            limits: cfg.links.limits.clone(),
            max_batch_size: cfg.links.max_batch_size,
        };
        let webhook_client = crate::webhook::client(cfg.webhook_allow_private)?;
        let queries = crate::query::ArchiveTiers::from_config(&cfg)?;
        let document = crate::http::api::openapi::render(cfg.plans());
        let tools = Arc::new(tracker_mcp::Catalog::from_openapi(&document).map_err(|e| e.to_string())?);
        Ok(AppState {
            tools,
            queries,
            consumers: Arc::default(),
            link_counter: tracker_consumers::link_counts::consumer_name(&cfg.data_dir)
                .map_err(|e| format!("{}: {e}", cfg.data_dir.join("node-id").display()))?,
            outputs,
            live: Arc::new(crate::live::Hub::new(
                cfg.node.sse_backlog,
                (cfg.node.sse_max_streams, cfg.node.sse_max_streams_per_tenant),
                tasks.clone(),
            )),
            tasks,
            clock: Clock::default(),
            webhook_client,
            cfg,
            service,
            log,
            store,
            metrics: Metrics::default(),
            api_limits: RateLimiter::default(),
            tenants: TtlCache::new("tenants", ttl),
            short_links: TtlCache::new("short_links", ttl),
            tokens: TtlCache::new("tokens", ttl),
            global_keys,
        })
    }

    /// Drops cached hot-path records after a change (`tenant:<key_prefix>`, `short:<tu_id>`, `token:<sha256>`,
    /// the same keys the edge uses in Workers KV).
    pub fn invalidate(&self, key: &str) {
        match key.split_once(':') {
            Some(("tenant", id)) => self.tenants.invalidate(&id.to_owned()),
            Some(("short", id)) => self.short_links.invalidate(&id.to_owned()),
            Some(("token", id)) => self.tokens.invalidate(&id.to_owned()),
            _ => {}
        }
    }

    /// Whether `tenant` is over its hard cap this month: its plan drops events past the allowance and the filter
    /// has kept that many. Fails open (with an error logged): an unreadable hot tier never breaks a link.
    pub async fn quota_state(&self, tenant: &tracker_store::Tenant, now: i64) -> Option<QuotaState> {
        let plan = self.cfg.plan_of(tenant);
        if !plan.hard_cap() {
            return None;
        }
        match self.outputs.hot.quota_kept(&tenant.key_prefix, month_start(now)).await {
            Ok(kept) => plan.block(kept, now),
            Err(e) => {
                tracing::error!(error = %e, tenant = %tenant.key_prefix, "hot tier unreadable: quota not checked");
                None
            }
        }
    }

    /// A tenant as the tracking endpoints (and the edge) need it, with its quota state. For
    /// [`GLOBAL_KEY_PREFIX`], the tenant the operator assigned events that name none (its keys left out: global
    /// links verify with the global secret).
    pub async fn tenant_record(&self, key_prefix: &str) -> Result<Option<TenantRecord>, StoreError> {
        if key_prefix == GLOBAL_KEY_PREFIX {
            let Some(assigned) = self.store.global_tenant().await? else { return Ok(None) };
            return Ok(Box::pin(self.tenant_record(&assigned)).await?.map(|t| TenantRecord { keys: Vec::new(), ..t }));
        }
        let Some(keys) = self.store.tenant_keys(key_prefix).await? else { return Ok(None) };
        let quota = self.quota_state(&keys.tenant, self.clock.now_ms()).await;
        Ok(Some(TenantRecord { quota, ..keys.record() }))
    }

    /// The tenant of a token given as its SHA-256 (the edge's lookups).
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<Arc<TokenRecord>>, ProtocolError> {
        let now = self.clock.now_ms();
        self.tokens.get(&hash.to_owned(), || self.store.lookup_ingest_token_hash(hash, now)).await.map_err(unavailable)
    }

    /// One event as a record set for its tenant's partition.
    fn single(&self, event: &Event) -> RecordSet {
        let mut b = RecordSetBuilder::with_capacity(512);
        b.push(event);
        let partition = partition_for(&event.key_prefix, self.log.partitions());
        RecordSet { partition, count: 1, tags: b.tags(), bytes: b.finish() }
    }

    /// Hands one event to the log without waiting for the disk (durable within the commit window).
    pub async fn emit(&self, event: &Event) -> Result<(), LogError> {
        self.log.enqueue(vec![self.single(event)]).await
    }

    /// Appends one event and waits until it is durable; `true` if the idempotency key had been seen.
    pub async fn store_durably(&self, event: &Event, idempotency_key: Option<String>) -> Result<bool, LogError> {
        Ok(self.log.append(vec![self.single(event)], idempotency_key).await?.duplicate)
    }
}

impl Directory for AppState {
    async fn tenant(&self, key_prefix: &str) -> Result<Option<Arc<TenantRecord>>, ProtocolError> {
        let load = || self.tenant_record(key_prefix);
        self.tenants.get(&key_prefix.to_owned(), load).await.map_err(unavailable)
    }

    async fn short_link(&self, tu_id: &str) -> Result<Option<Arc<ShortLinkRecord>>, ProtocolError> {
        self.short_links.get(&tu_id.to_owned(), || self.store.short_link(tu_id)).await.map_err(unavailable)
    }

    async fn token(&self, token: &str) -> Result<Option<Arc<TokenRecord>>, ProtocolError> {
        if !tracker_protocol::service::is_ingest_token_shape(token) {
            return Ok(None);
        }
        self.token_by_hash(&hash_token(token)).await
    }

    fn global_keys(&self) -> &[LinkKey] {
        &self.global_keys
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load_and_answers_last_the_ttl() {
        let cache = Arc::new(TtlCache::<String, u32>::new("test", Duration::from_millis(300)));
        let loads = Arc::new(AtomicU32::new(0));
        let get = |answer: Option<u32>| {
            let (cache, loads) = (cache.clone(), loads.clone());
            async move {
                let load = || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(answer)
                };
                cache.get(&"acme".to_owned(), load).await.unwrap().map(|v| *v)
            }
        };
        let waiting: Vec<_> = (0..16).map(|_| tokio::spawn(get(Some(7)))).collect();
        for w in waiting {
            assert_eq!(w.await.unwrap(), Some(7));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "sixteen concurrent misses, one load");
        assert_eq!(get(Some(8)).await, Some(7), "cached");
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(get(None).await, None, "expired: loaded again, and \"there is none\" is an answer");
        assert_eq!(get(Some(9)).await, None, "the negative answer is cached too");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        cache.invalidate(&"acme".to_owned());
        assert_eq!(get(Some(9)).await, Some(9), "forgotten: loaded at once");
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }
}
