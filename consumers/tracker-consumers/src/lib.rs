//! # The stream consumers
//!
//! Each reads the event log through a consumer group ([`tracker_log::EventLog::poll_group`]), processes a batch,
//! makes its output durable together with its own position, and only then commits the group's offset in the log:
//!
//! | consumer | reads | writes (atomically with its position) |
//! |---|---|---|
//! | [`filter`] | raw events | drop ledger and decisions (hot tier), then the kept events to the filtered log |
//! | [`stats`] | filtered events | recent events, counts per minute, type, link and param value (hot tier) |
//! | [`webhooks`] | filtered events | deliveries to matching endpoints (metadata store), sent by a dispatcher |
//! | [`archive`] | filtered events | the Delta tables `events` and `rollups` (positions in each commit); maintenance |
//!
//! The position kept with the output is the authority: after a crash the log may hand out events again from its
//! older committed offset, and the consumer skips what its output already holds. So a crash at any point loses
//! nothing and counts nothing twice.
//!
//! In the embedded default the node runs them in-process (each on a thread of its own); in production each runs as
//! its own process (`tracker-consumer <name>`) against Iggy, as many instances as the partitions allow.

#[cfg(feature = "archive")]
pub mod archive;
pub mod delivery;
pub mod filter;
pub mod link_counts;
pub mod stats;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
use tracker_log::EventLog;
use tracker_protocol::settings::{self, Section, SettingError, Unit, var};
use tracker_store::Store;
use tracker_store::hot::HotStore;

/// Turns transparent huge pages off for this process, first thing in `main` of a process on mimalloc.
///
/// mimalloc asks the kernel for huge pages on its arenas, and the consumers allocate and free a batch's events over
/// and over: each freed range it hands back and touches again is a fresh 2 MiB page to zero. In the drain benchmark
/// that zeroing took 8% of the CPU, and the peak RSS fell from 322-379 MB to 250-271 MB without it.
pub fn small_pages() {
    // best effort: a kernel without the switch keeps its default
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "transparent huge pages left on");
    }
}

/// Most events one batch reads.
pub const BATCH: usize = 4096;
/// Pause when nothing waits (bounds how long an idle consumer takes to see a new event).
pub const IDLE: Duration = Duration::from_millis(50);

/// What the consumers can be told (the node maps its configuration onto this).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Unauthenticated events per tenant and client IP per minute the filter keeps (0 = no limit).
    pub filter_ip_per_minute: u32,
    /// How long the filter uses a tenant's rules before reading them again.
    pub rules_ttl: Duration,
    /// How long the hot tier keeps events (listings, param filters, match).
    pub hot_events_retention: Duration,
    /// Most bytes the hot tier's event segments take: past it, the oldest go first, before their time.
    pub hot_events_max_bytes: u64,
    /// How long the hot tier keeps counts and the drop ledger.
    pub hot_counts_retention: Duration,
    /// How long the filter remembers the ids it kept, to drop a resend (at least `hot_events_retention`, see
    /// [`Settings::dedup_window`]).
    pub dedup_window: Duration,
    /// How long the stats consumer waits for more partitions' events while its batch holds fewer than a quarter of
    /// [`BATCH`] (see [`stats`]).
    pub hot_batch_linger: Duration,
    /// The same for the filter (see [`filter`]): what it waits, webhooks, live views and the hot tier wait too.
    pub filter_batch_linger: Duration,
    pub webhooks: webhooks::WebhookSettings,
    /// The archive's location and batching; `None` runs no archiver.
    pub archive: Option<tracker_archive::ArchiveSettings>,
    /// The plans tenants are on (allowances, hard caps, ingestion rates, retention).
    pub plans: tracker_store::Plans,
    /// The edge Worker to tell when a tenant reaches its allowance (`None`: the edge learns it when its KV copy
    /// of the tenant expires).
    pub edge: Option<EdgePush>,
}

/// Where the core pushes purges of hot-path records to the edge (`EDGE_URLS`), and the secrets it may sign them
/// with (`EDGE_SHARED_SECRETS`: during a rotation the Worker knows one of them, so a refused signature is retried
/// with the next).
#[derive(Clone)]
pub struct EdgePush {
    pub urls: Vec<String>,
    pub secrets: Vec<Vec<u8>>,
    /// The purges in flight (shared by every clone), which [`EdgePush::settle`] waits for.
    pub tasks: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for EdgePush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePush").field("urls", &self.urls).field("secrets", &"<redacted>").finish()
    }
}

impl EdgePush {
    /// Tells every edge URL, in a task of its own (so a slow or unreachable Worker holds nothing up), that
    /// `keys` (`tenant:<p>`, ...) changed: the Worker deletes them from KV and its isolate. Best effort (a
    /// failure is logged): the KV entries expire on their own anyway.
    pub fn purge(&self, keys: String) {
        let this = self.clone();
        self.tasks.spawn(async move { this.send(&keys).await });
    }

    /// Waits for the purges in flight (each request has its own timeout), taking no new ones: on shutdown.
    pub async fn settle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Asks every edge URL to replay the events it parked while the core was away, now: each Worker's report
    /// (`replayed`, `refused`, `core_unavailable`, `left`), or why it could not be had.
    pub async fn replay(&self) -> Vec<(String, Result<serde_json::Value, String>)> {
        // a replay sends up to a few hundred batches to the core before it answers
        let client = match reqwest::Client::builder().timeout(Duration::from_secs(300)).build() {
            Ok(c) => c,
            Err(e) => return self.urls.iter().map(|u| (u.clone(), Err(e.to_string()))).collect(),
        };
        let body = b"{}";
        let mut reports = Vec::new();
        for base in &self.urls {
            let url = format!("{}{}", base.trim_end_matches('/'), tracker_protocol::intake::DLQ_REPLAY_PATH);
            let mut report = Err("no EDGE_SHARED_SECRETS".to_owned());
            // the Worker may hold any of the secrets (a rotation): the next is tried on a 401
            for secret in &self.secrets {
                let ts = now_ms();
                let Some(sig) = tracker_protocol::intake::sign_dlq_replay(secret, ts, body) else { break };
                let sent = client
                    .post(&url)
                    .header("x-tracker-timestamp", ts.to_string())
                    .header("x-tracker-signature", sig)
                    .body(&body[..])
                    .send()
                    .await;
                report = match sent {
                    Ok(res) if res.status().is_success() => res.json().await.map_err(|e| e.to_string()),
                    Ok(res) => Err(format!("answered {}", res.status())),
                    Err(e) => Err(e.to_string()),
                };
                if !matches!(&report, Err(e) if e.contains("401")) {
                    break;
                }
            }
            reports.push((base.clone(), report));
        }
        reports
    }

    /// Tells every edge URL now, waiting for the answers (the CLI, which exits right after).
    pub async fn send(&self, keys: &str) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
        let Ok(client) = client else { return };
        for base in &self.urls {
            let url = format!("{}{}", base.trim_end_matches('/'), tracker_protocol::intake::PURGE_PATH);
            for (i, secret) in self.secrets.iter().enumerate() {
                let ts = now_ms();
                let Some(sig) = tracker_protocol::intake::sign_purge(secret, ts, keys.as_bytes()) else { break };
                let sent = client
                    .post(&url)
                    .header("x-tracker-timestamp", ts.to_string())
                    .header("x-tracker-signature", sig)
                    .body(keys.to_owned())
                    .send()
                    .await;
                match sent {
                    Ok(res) if res.status().is_success() => {
                        tracing::info!(%url, keys, "edge purged");
                        break;
                    }
                    // the Worker may hold another of the secrets (a rotation): try the next
                    Ok(res) if res.status() == reqwest::StatusCode::UNAUTHORIZED && i + 1 < self.secrets.len() => {}
                    Ok(res) => {
                        tracing::warn!(%url, keys, status = %res.status(), "edge purge refused");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%url, keys, error = %e, "edge purge failed");
                        break;
                    }
                }
            }
        }
    }
}

/// The filter's and the hot tier's variables: the one declaration of their defaults (the README's table is
/// rendered from it).
pub const SETTINGS: Section = Section {
    title: "Filter and hot tier",
    variables: &[
        var(
            "FILTER_IP_EVENTS_PER_MINUTE",
            "600",
            "unauthenticated events per tenant and client IP per minute kept (0 = no limit)",
        ),
        var("FILTER_RULES_RELOAD_MS", "2000", "how long the filter uses a tenant's rules before reading them again"),
        var("HOT_RETENTION_HOURS", "72", "how long the hot tier keeps events (listings, param filters, match)"),
        var(
            "HOT_EVENTS_MAX_MB",
            "4096",
            "most disk the hot tier's events take (compressed segments); past it the oldest go first",
        ),
        var("HOT_COUNTS_RETENTION_DAYS", "35", "how long the hot tier keeps counts per minute and the drop ledger"),
        var(
            "DEDUP_WINDOW_HOURS",
            "168",
            "how long the filter remembers the event ids it kept: a resend within it is dropped as `duplicate`, \
             in every tier (at least HOT_RETENTION_HOURS)",
        ),
        var(
            "FILTER_BATCH_LINGER_MS",
            "100",
            "how long the filter waits for more events while a batch is small (fewer, larger writes to the hot \
             tier at low rates; webhooks, live views and the hot tier see an event up to this later)",
        ),
        var(
            "HOT_BATCH_LINGER_MS",
            "250",
            "how long the stats consumer waits for more events while a batch is small (fewer, larger writes to the \
             hot tier at low rates; the hot tier's answers lag by up to this)",
        ),
    ],
};

impl Settings {
    /// Reads what [`SETTINGS`] and [`webhooks::SETTINGS`] declare (which `src` must include); the archive, the
    /// plans and the edge are the caller's to set.
    pub fn from_settings<F: Fn(&str) -> Option<String>>(src: &settings::Settings<'_, F>) -> Result<Self, SettingError> {
        Ok(Settings {
            filter_ip_per_minute: src.value("FILTER_IP_EVENTS_PER_MINUTE")?,
            rules_ttl: src.duration("FILTER_RULES_RELOAD_MS", Unit::Millis)?,
            hot_events_retention: src.duration("HOT_RETENTION_HOURS", Unit::Hours)?,
            hot_events_max_bytes: src.number::<u64>("HOT_EVENTS_MAX_MB", 1..=u64::MAX >> 20)? << 20,
            hot_counts_retention: src.duration("HOT_COUNTS_RETENTION_DAYS", Unit::Days)?,
            dedup_window: src.duration("DEDUP_WINDOW_HOURS", Unit::Hours)?,
            hot_batch_linger: src.duration("HOT_BATCH_LINGER_MS", Unit::Millis)?,
            filter_batch_linger: src.duration("FILTER_BATCH_LINGER_MS", Unit::Millis)?,
            webhooks: webhooks::WebhookSettings::from_settings(src)?,
            archive: None,
            plans: tracker_store::Plans::default(),
            edge: None,
        })
    }
}

impl Settings {
    /// How long the filter remembers kept ids: `dedup_window`, and never less than the hot tier keeps events.
    pub fn dedup_window(&self) -> Duration {
        self.dedup_window.max(self.hot_events_retention)
    }
}

impl Default for Settings {
    /// The declared defaults, without an archive or an edge.
    fn default() -> Self {
        let declared = settings::Settings::new(&[SETTINGS, webhooks::SETTINGS], |_: &str| None);
        Self::from_settings(&declared).expect("the declared defaults are valid (tested)")
    }
}

/// Everything the consumers read and write.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Raw events, as accepted.
    pub raw: Arc<dyn EventLog>,
    /// Events the filter kept.
    pub filtered: Arc<dyn EventLog>,
    /// Metadata: tenants, rules, webhook endpoints and deliveries.
    pub store: Store,
    pub hot: HotStore,
    pub settings: Settings,
}

/// Which consumers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Filter,
    Stats,
    Webhooks,
    #[cfg(feature = "archive")]
    Archive,
}

/// Every consumer this build has.
#[cfg(feature = "archive")]
pub const ALL: &[Which] = &[Which::Filter, Which::Stats, Which::Webhooks, Which::Archive];
/// Every consumer this build has: without the `archive` feature, the archiver runs in a process built with it.
#[cfg(not(feature = "archive"))]
pub const ALL: &[Which] = &[Which::Filter, Which::Stats, Which::Webhooks];

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Filter => "filter",
            Which::Stats => "stats",
            Which::Webhooks => "webhooks",
            #[cfg(feature = "archive")]
            Which::Archive => "archive",
        }
    }
}

/// Which consumers died: a consumer's task that ended before the stop (a panic, or a bug that returned) is named
/// here, and the node's `/health` answers 503 with it, so an orchestrator restarts the process instead of
/// serving on while events pile up unfiltered.
#[derive(Debug)]
pub struct Liveness {
    dead: tokio::sync::watch::Sender<Vec<&'static str>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { dead: tokio::sync::watch::Sender::new(Vec::new()) }
    }
}

impl Liveness {
    /// The consumers that died, in the order they did.
    pub fn dead(&self) -> Vec<&'static str> {
        self.dead.borrow().clone()
    }

    /// Records that `consumer` ended before it was told to stop.
    pub fn died(&self, consumer: &'static str) {
        tracing::error!(consumer, "a consumer stopped before the process did: /health now answers 503");
        self.dead.send_modify(|d| d.push(consumer));
    }

    /// Resolves once a consumer has died.
    pub async fn first_death(&self) {
        let _ = self.dead.subscribe().wait_for(|d| !d.is_empty()).await;
    }
}

impl std::str::FromStr for Which {
    type Err = String;
    fn from_str(s: &str) -> Result<Which, String> {
        match s {
            "filter" => Ok(Which::Filter),
            "stats" => Ok(Which::Stats),
            "webhooks" => Ok(Which::Webhooks),
            #[cfg(feature = "archive")]
            "archive" => Ok(Which::Archive),
            #[cfg(not(feature = "archive"))]
            "archive" => Err("this build has no archiver (built without the `archive` feature)".into()),
            other => Err(format!("unknown consumer {other:?}: filter, stats, webhooks or archive")),
        }
    }
}

/// Runs the chosen consumers until `stop` is cancelled, and returns once every one of them has ended; each stops
/// between batches (its output and position are always consistent, so stopping anywhere is safe). A consumer
/// that ends before the stop is recorded in `liveness`.
pub async fn run(pipeline: Arc<Pipeline>, which: Vec<Which>, stop: CancellationToken, liveness: Arc<Liveness>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for w in &which {
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        // each on a thread of its own: the filter and the stats consumer overlap on two cores
        let handle = match w {
            Which::Filter => tasks.spawn_blocking(move || on_own_runtime(1, filter::run(pipeline, stop))),
            Which::Stats => tasks.spawn_blocking(move || on_own_runtime(1, stats::run(pipeline, stop))),
            Which::Webhooks => tasks.spawn_blocking(move || on_own_runtime(1, webhooks::run(pipeline, stop))),
            #[cfg(feature = "archive")]
            Which::Archive => {
                let Some(settings) = pipeline.settings.archive.clone() else {
                    tracing::warn!("no archive configured: the archiver does not run");
                    continue;
                };
                // Parquet encoding and compaction are CPU work: each gets a thread, off the other consumers'
                let (maintained, maintenance_settings, maintenance_stop) =
                    (pipeline.clone(), settings.clone(), stop.clone());
                let maintenance = tasks.spawn_blocking(move || {
                    on_own_runtime(1, archive::maintain(maintained, maintenance_settings, maintenance_stop))
                });
                names.insert(maintenance.id(), "archive-maintenance");
                // reading and committing overlap on two threads
                tasks.spawn_blocking(move || on_own_runtime(2, archive::archive(pipeline, settings, stop)))
            }
        };
        names.insert(handle.id(), w.name());
    }
    while let Some(ended) = tasks.join_next_with_id().await {
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let name = names.get(&id).copied().unwrap_or("consumer");
        if let Err(e) = ended {
            tracing::error!(consumer = name, error = %e, "consumer panicked");
        }
        if !stop.is_cancelled() {
            liveness.died(name);
        }
    }
}

/// Runs the consumers off the request-serving workers, as the node does in the embedded default: a thread that
/// starts each consumer on a thread of its own (a single-threaded runtime each) and watches them.
pub fn spawn(
    pipeline: Arc<Pipeline>,
    which: Vec<Which>,
    stop: CancellationToken,
    liveness: Arc<Liveness>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("consumers".into())
        .spawn(move || runtime.block_on(run(pipeline, which, stop, liveness)))
}

fn on_own_runtime(threads: usize, task: impl std::future::Future<Output = ()>) {
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(task),
        Err(e) => tracing::error!(error = %e, "no runtime for a consumer thread"),
    }
}

/// What a batch read from one partition: its events after the consumer's position in the hot tier, and the position
/// after what was read.
#[derive(Debug)]
pub(crate) struct Read {
    pub partition: u32,
    pub next: u64,
    pub events: Vec<(u64, tracker_protocol::Event)>,
}

/// How often a small batch looks for more events while it waits.
const LINGER_POLL: Duration = Duration::from_millis(50);

/// Reads the next batch of `group` from `log`: what waits in every partition after the group's position in the hot
/// tier, up to [`BATCH`] events. While it holds fewer than a quarter of that it waits for more, up to `linger` from
/// its first read, unless `stop` is cancelled: at low rates a partition holds an event or two at a time, and each
/// transaction writes rows per partition and tenant whatever the number of events. Empty when nothing waited; a
/// partition whose events the group had all consumed (the log's offset lagged the group's own) is read with none.
pub(crate) async fn gather(
    log: &dyn EventLog,
    hot: &HotStore,
    group: &str,
    linger: Duration,
    stop: &CancellationToken,
) -> Result<Vec<Read>, String> {
    let first_read = std::time::Instant::now();
    let mut read: Vec<Read> = Vec::new();
    let mut total = 0;
    while total < BATCH {
        let held: Vec<u32> = read.iter().map(|r| r.partition).collect();
        let room = BATCH - total;
        let polled =
            log.poll_group_besides(group, room, tracker_log::Filter::ALL, &held).await.map_err(|e| e.to_string())?;
        let Some((partition, polled)) = polled else {
            let waited = first_read.elapsed();
            if total == 0 || total >= BATCH / 4 || waited >= linger || stop.is_cancelled() {
                break;
            }
            rest(LINGER_POLL.min(linger - waited), stop).await;
            continue;
        };
        let done = hot.offset(group, partition).await.map_err(|e| e.to_string())?;
        let polled = tracker_log::resume_at(log, partition, polled, done, room).await.map_err(|e| e.to_string())?;
        let events: Vec<_> = polled.events.into_iter().filter(|(o, _)| *o >= done).collect();
        total += events.len();
        read.push(Read { partition, next: polled.next_offset.max(done), events });
    }
    Ok(read)
}

/// Sleeps `d`, waking at once when `stop` is cancelled.
pub async fn rest(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = stop.cancelled() => {}
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
