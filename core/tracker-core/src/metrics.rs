//! Prometheus metrics in text format. Counters are atomics indexed by fixed enums on the hot path; rejection codes
//! (rare) go through a small map.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracker_log::LogStatus;

pub const EVENTS_ACCEPTED: &str = "tracker_events_accepted_total";
pub const REQUESTS_REJECTED: &str = "tracker_requests_rejected_total";
pub const REDIRECT_SECONDS: &str = "tracker_redirect_duration_seconds";
pub const EDGE_BATCHES: &str = "tracker_edge_batches_total";

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

/// Upper bounds of the redirect latency histogram, in microseconds.
const BUCKETS_US: [u64; 10] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000];

#[derive(Debug, Default)]
pub struct Metrics {
    accepted: [AtomicU64; 8],
    rejected: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    redirect_buckets: [AtomicU64; BUCKETS_US.len()],
    redirect_count: AtomicU64,
    edge_batches: AtomicU64,
    redirect_sum_us: AtomicU64,
}

impl Metrics {
    pub fn accepted(&self, endpoint: Endpoint, n: u64) {
        if let Some(c) = self.accepted.get(endpoint as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn rejected(&self, endpoint: Endpoint, code: &'static str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry((endpoint.label(), code)).or_default() += 1;
        }
    }

    /// One signed batch from the edge stored (one queue message).
    pub fn edge_batch(&self) {
        self.edge_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn redirect_served(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.redirect_count.fetch_add(1, Ordering::Relaxed);
        self.redirect_sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b)
            && let Some(c) = self.redirect_buckets.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, log: &LogStatus) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP {EVENTS_ACCEPTED} Events handed to the event log, by endpoint.");
        let _ = writeln!(out, "# TYPE {EVENTS_ACCEPTED} counter");
        for e in Endpoint::ALL {
            let v = self.accepted.get(e as usize).map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(out, "{EVENTS_ACCEPTED}{{endpoint=\"{}\"}} {v}", e.label());
        }
        let _ = writeln!(out, "# HELP {REQUESTS_REJECTED} Requests or events refused, by endpoint and error code.");
        let _ = writeln!(out, "# TYPE {REQUESTS_REJECTED} counter");
        if let Ok(m) = self.rejected.lock() {
            for ((endpoint, code), v) in m.iter() {
                let _ = writeln!(out, "{REQUESTS_REJECTED}{{endpoint=\"{endpoint}\",code=\"{code}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# HELP {REDIRECT_SECONDS} Server time to answer a click redirect.");
        let _ = writeln!(out, "# TYPE {REDIRECT_SECONDS} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS_US.iter().zip(&self.redirect_buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{REDIRECT_SECONDS}_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1e6);
        }
        let count = self.redirect_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{REDIRECT_SECONDS}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{REDIRECT_SECONDS}_sum {}", self.redirect_sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{REDIRECT_SECONDS}_count {count}");
        let gauges: [(&str, &str, &str, u64); 10] = [
            (
                EDGE_BATCHES,
                "counter",
                "Signed batches (queue messages) received from the edge.",
                self.edge_batches.load(Ordering::Relaxed),
            ),
            ("tracker_log_healthy", "gauge", "1 when the event log accepts writes.", u64::from(log.healthy)),
            ("tracker_log_queued_appends", "gauge", "Appends waiting for the log writer.", log.queued),
            ("tracker_log_appended_events_total", "counter", "Events written to the log.", log.appended_events),
            ("tracker_log_fsyncs_total", "counter", "Group commits made durable.", log.fsyncs),
            ("tracker_log_last_fsync_microseconds", "gauge", "Duration of the last fsync.", log.last_fsync_micros),
            (
                "tracker_log_duplicate_appends_total",
                "counter",
                "Appends answered from an idempotency key.",
                log.duplicates,
            ),
            ("tracker_log_stored_bytes", "gauge", "Bytes of record sets held by the log.", log.stored_bytes),
            (
                "tracker_log_spooled_events",
                "gauge",
                "Events accepted into the local spool that have not reached the primary log yet.",
                log.spooled_events,
            ),
            (
                "tracker_log_retention_deleted_total",
                "counter",
                "Record sets deleted by retention.",
                log.retention_deleted_record_sets,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}
