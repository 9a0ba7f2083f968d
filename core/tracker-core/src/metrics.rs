//! Metrics. Every crate records through the `metrics` facade (`metrics::counter!` and friends); the process
//! installs one Prometheus recorder ([`recorder`]) and `GET /metrics` renders it, after setting what is read at
//! scrape time: the event logs' state and each consumer group's lag per partition. A process's metrics are its
//! node's (tests that run several nodes in one process share them).
//!
//! The hot path does no lookup: the node's own counters are registered once ([`Metrics`]) and kept as handles.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracker_log::{EventLog, LogStatus};

pub const EVENTS_ACCEPTED: &str = "tracker_events_accepted_total";
pub const REQUESTS_REJECTED: &str = "tracker_requests_rejected_total";
pub const REDIRECT_SECONDS: &str = "tracker_redirect_duration_seconds";
pub const EDGE_BATCHES: &str = "tracker_edge_batches_total";
pub const CONSUMER_LAG: &str = "tracker_consumer_lag_events";

/// Upper bounds of the redirect latency histogram, in seconds.
const REDIRECT_BUCKETS: [f64; 10] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25];

/// The endpoints that accept events (metric label `endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Click,
    Short,
    Beacon,
    Postback,
    Impression,
    Batch,
    Ingest,
    Edge,
}

impl Endpoint {
    const ALL: [Endpoint; 8] = [
        Endpoint::Click,
        Endpoint::Short,
        Endpoint::Beacon,
        Endpoint::Postback,
        Endpoint::Impression,
        Endpoint::Batch,
        Endpoint::Ingest,
        Endpoint::Edge,
    ];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Click => "click",
            Endpoint::Short => "short",
            Endpoint::Beacon => "beacon",
            Endpoint::Postback => "postback",
            Endpoint::Impression => "impression",
            Endpoint::Batch => "batch",
            Endpoint::Ingest => "ingest",
            Endpoint::Edge => "edge",
        }
    }
}

/// The process's recorder, installed as the facade's global one on first use (a recorder another library set
/// first is left in place: then `/metrics` shows only what is set at scrape time).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REDIRECT_SECONDS.into()), &REDIRECT_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows only the scrape-time gauges");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(EVENTS_ACCEPTED, "Events handed to the event log, by endpoint.");
    metrics::describe_counter!(REQUESTS_REJECTED, "Requests or events refused, by endpoint and error code.");
    metrics::describe_histogram!(REDIRECT_SECONDS, metrics::Unit::Seconds, "Server time to answer a click redirect.");
    metrics::describe_counter!(EDGE_BATCHES, "Signed batches (queue messages) received from the edge.");
    metrics::describe_gauge!(CONSUMER_LAG, "Events in a log partition that a consumer group has not committed yet.");
    metrics::describe_gauge!("tracker_live_streams", "Open live event streams (/sse/events).");
    metrics::describe_counter!("tracker_cache_lookups_total", "Hot-path record lookups, by cache and hit or miss.");
    metrics::describe_counter!("tracker_webhook_attempts_total", "Webhook delivery attempts, by outcome.");
    metrics::describe_counter!(
        "tracker_webhook_endpoints_disabled_total",
        "Webhook endpoints disabled after repeated failures."
    );
}

/// Drains the recorded histogram samples into their buckets every few seconds, whether or not anyone scrapes:
/// samples wait in memory until then.
pub async fn keep_recorder() {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        recorder().run_upkeep();
    }
}

/// The node's own counters, registered once.
#[derive(Debug)]
pub struct Metrics {
    accepted: [Counter; 8],
    redirect: Histogram,
    edge_batches: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        recorder();
        Metrics {
            accepted: Endpoint::ALL.map(|e| counter!(EVENTS_ACCEPTED, "endpoint" => e.label())),
            redirect: histogram!(REDIRECT_SECONDS),
            edge_batches: counter!(EDGE_BATCHES),
        }
    }
}

impl Metrics {
    pub fn accepted(&self, endpoint: Endpoint, n: u64) {
        if let Some(c) = self.accepted.get(endpoint as usize) {
            c.increment(n);
        }
    }

    /// A refusal (rare: the labels are looked up).
    pub fn rejected(&self, endpoint: Endpoint, code: &'static str) {
        counter!(REQUESTS_REJECTED, "endpoint" => endpoint.label(), "code" => code).increment(1);
    }

    /// One signed batch from the edge stored (one queue message).
    pub fn edge_batch(&self) {
        self.edge_batches.increment(1);
    }

    pub fn redirect_served(&self, took: Duration) {
        self.redirect.record(took.as_secs_f64());
    }
}

/// A log and the consumer groups that read it.
pub type Readers<'a> = (&'a dyn EventLog, &'a [&'a str]);

/// The Prometheus text: the log's state (`log`) and the lag of each group of `readers`, set now, with everything
/// recorded through the facade.
pub async fn render(log: &LogStatus, readers: &[Readers<'_>]) -> String {
    // one scrape at a time: the scrape-time gauges are the process's, and must be the scraping node's when shown
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = SCRAPE.lock().await;
    let log_gauges: [(&str, &str, u64); 9] = [
        ("tracker_log_healthy", "1 when the event log accepts writes.", u64::from(log.healthy)),
        ("tracker_log_queued_appends", "Appends waiting for the log writer.", log.queued),
        ("tracker_log_appended_events_total", "Events written to the log.", log.appended_events),
        ("tracker_log_fsyncs_total", "Group commits made durable.", log.fsyncs),
        ("tracker_log_last_fsync_microseconds", "Duration of the last fsync.", log.last_fsync_micros),
        ("tracker_log_duplicate_appends_total", "Appends answered from an idempotency key.", log.duplicates),
        ("tracker_log_stored_bytes", "Bytes of record sets held by the log.", log.stored_bytes),
        (
            "tracker_log_spooled_events",
            "Events accepted into the local spool that have not reached the primary log yet.",
            log.spooled_events,
        ),
        ("tracker_log_retention_deleted_total", "Record sets deleted by retention.", log.retention_deleted_record_sets),
    ];
    for (name, help, value) in log_gauges {
        metrics::describe_gauge!(name, help);
        gauge!(name).set(value as f64);
    }
    for (log, groups) in readers {
        for partition in 0..log.partitions() {
            let Ok(end) = log.end_offset(partition).await else { continue };
            for group in *groups {
                let committed = log.committed_offset(group, partition).await.ok().flatten().unwrap_or(0);
                let lag = end.saturating_sub(committed) as f64;
                gauge!(CONSUMER_LAG, "group" => group.to_string(), "partition" => partition.to_string()).set(lag);
            }
        }
    }
    recorder().render()
}
