//! The archiver ([`tracker_archive`]) as a consumer: filtered events into the Delta tables, restarted after any
//! error (the tables hold its positions, so a restart neither loses nor repeats an event), and the tables'
//! maintenance (retention deletes, compaction, checkpoint, vacuum) on a schedule.
//!
//! Both run under leases in the metadata store, named after the archive's location:
//! * one process writes an archive at a time; others stand by. A writer that loses its lease (a long stall)
//!   stops; should it still commit, the archiver's fence (it checks the table's positions whenever someone else
//!   committed) stops whichever writer's positions went stale, so no event is written twice;
//! * one process maintains it at a time: two compactions of the same files would both commit and duplicate rows.
//!   Maintenance runs on a thread of its own, so compaction never holds up archiving.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracker_archive::{ArchiveSettings, Retention};

use crate::{CancellationToken, Pipeline, now_ms, rest};

/// How long a lease lasts without a renewal (another process takes over this long after a holder died).
const LEASE_MS: i64 = 60_000;
/// How often a holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How long a stop waits for a commit or a maintenance step before dropping it (as a crash would: safe).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A lease's name for this archive: `<job>:<location>`, with the host for a local directory (two machines'
/// local archives are two archives).
pub fn lease_name(job: &str, settings: &ArchiveSettings) -> String {
    let base = settings.base.as_str();
    if settings.base.scheme() == "file" {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        return format!("{job}:{}:{base}", host.trim());
    }
    format!("{job}:{base}")
}

fn holder() -> String {
    format!("{}-{}", std::process::id(), tracker_protocol::Uuid::now_v7())
}

/// A job run under a lease.
type Job<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// How a job under a lease ended.
enum Leased<T> {
    Done(T),
    /// Another process holds the lease.
    Busy,
    /// The lease was lost, or a stop outlasted the grace: the job was stopped or dropped.
    Stopped,
}

/// Runs `job` while holding `lease`, renewing it. `job_stop` asks the job to stop (at a stop, or when the
/// lease is lost); a job still running `STOP_GRACE` later is dropped.
async fn under_lease<T>(
    pipeline: &Pipeline,
    lease: &str,
    holder: &str,
    stop: &CancellationToken,
    job: impl FnOnce(CancellationToken) -> Job<T>,
) -> Result<Leased<T>, String> {
    let now = now_ms();
    if !pipeline.store.acquire_lease(lease, holder, now, now + LEASE_MS).await.map_err(|e| e.to_string())? {
        return Ok(Leased::Busy);
    }
    // the job is told to stop at a stop (a child token) or when the lease is lost
    let job_stop = stop.child_token();
    let mut job = job(job_stop.clone());
    let mut renewed = tokio::time::Instant::now();
    let mut retry_renewal = renewed + RENEW_EVERY;
    let ended = loop {
        tokio::select! {
            out = &mut job => break Leased::Done(out),
            () = job_stop.cancelled() => {
                match tokio::time::timeout(STOP_GRACE, &mut job).await {
                    Ok(out) => break Leased::Done(out),
                    Err(_) => {
                        tracing::warn!(lease, "stop: the archive job did not end in time and was dropped");
                        break Leased::Stopped;
                    }
                }
            }
            () = tokio::time::sleep_until(retry_renewal) => {
                let now = now_ms();
                match pipeline.store.acquire_lease(lease, holder, now, now + LEASE_MS).await {
                    Ok(true) => {
                        renewed = tokio::time::Instant::now();
                        retry_renewal = renewed + RENEW_EVERY;
                    }
                    Ok(false) => {
                        tracing::warn!(lease, "lease lost to another process: stopping");
                        job_stop.cancel();
                    }
                    // unreachable store: keep going while the lease surely holds, then stop
                    Err(e) if renewed.elapsed() < Duration::from_millis(LEASE_MS as u64 / 2) => {
                        tracing::warn!(lease, error = %e, "lease not renewed; retrying");
                        retry_renewal = tokio::time::Instant::now() + Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "lease could not be renewed: stopping");
                        job_stop.cancel();
                    }
                }
            }
        }
    };
    drop(job);
    let _ = pipeline.store.release_lease(lease, holder).await;
    Ok(ended)
}

/// Archives until `stop` is cancelled, restarting after errors, as the archive's single writer.
pub async fn archive(pipeline: Arc<Pipeline>, settings: ArchiveSettings, stop: CancellationToken) {
    let (lease, holder) = (lease_name("archive-writer", &settings), holder());
    let mut wait = Duration::from_secs(1);
    let mut standing_by: Option<Instant> = None;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let (log, s) = (pipeline.filtered.clone(), settings.clone());
        let job = |job_stop| -> Job<_> { Box::pin(tracker_archive::run(log, s, job_stop)) };
        match under_lease(&pipeline, &lease, &holder, &stop, job).await {
            Ok(Leased::Done(Ok(n))) => tracing::info!(events = n, "archiver stopped"),
            Ok(Leased::Done(Err(e))) => {
                if started.elapsed() > Duration::from_secs(300) {
                    wait = Duration::from_secs(1); // it had been working: not a persistent failure
                }
                tracing::warn!(error = %e, retry_in = ?wait, "archiver: restarting from the tables' positions");
                rest(wait, &stop).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            Ok(Leased::Stopped) => {}
            Ok(Leased::Busy) => {
                let since = *standing_by.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(600) {
                    tracing::warn!(
                        %lease,
                        "another process has been writing this archive for 10 minutes; if this node has an event \
                         log of its own (embedded), give it an ARCHIVE_URL of its own"
                    );
                    standing_by = Some(Instant::now());
                }
                rest(RENEW_EVERY, &stop).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "archiver: cannot reach the metadata store for its lease");
                rest(RENEW_EVERY, &stop).await;
            }
        }
        standing_by = None;
    }
}

/// Runs [`tracker_archive::maintain`] every `settings.maintenance.interval`, when no other process does.
pub async fn maintain(pipeline: Arc<Pipeline>, settings: ArchiveSettings, stop: CancellationToken) {
    let holder = holder();
    while !stop.is_cancelled() {
        rest(settings.maintenance.interval, &stop).await;
        if stop.is_cancelled() {
            break;
        }
        match maintain_once(&pipeline, &settings, &holder, &stop).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archive maintenance failed; retrying at the next interval"),
        }
    }
}

/// One maintenance run if no other process is running one; `Ok(false)` when another is.
pub async fn maintain_once(
    pipeline: &Pipeline,
    settings: &ArchiveSettings,
    holder: &str,
    stop: &CancellationToken,
) -> Result<bool, String> {
    let retention: Vec<Retention> = pipeline
        .store
        .list_tenants()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|t| {
            // the tenant's own limit, else its plan's
            let keep_days = pipeline.settings.plans.or_free(&t.plan).with_limits(&t.limits).retention_days?;
            Some(Retention { tenant: t.key_prefix, keep_days })
        })
        .collect();
    let s = settings.clone();
    // maintenance has no stopping point of its own: at a stop or a lost lease it is dropped (Delta commits are
    // atomic; VACUUM removes what a dropped step wrote)
    let job = move |job_stop: CancellationToken| -> Job<Option<Result<_, tracker_archive::ArchiveError>>> {
        Box::pin(async move {
            tokio::select! {
                r = tracker_archive::maintain(&s, &retention, now_ms()) => Some(r),
                () = job_stop.cancelled() => None,
            }
        })
    };
    match under_lease(pipeline, &lease_name("archive-maintenance", settings), holder, stop, job).await? {
        Leased::Done(Some(Ok(report))) => {
            tracing::info!(?report, "archive maintained");
            // what each tenant stores, as of this hour (a gauge in its usage)
            let mut usage = tracker_store::usage::UsageDelta::default();
            let now = now_ms();
            for (tenant, bytes) in &report.stored_bytes {
                usage.add(tenant, now, "stored_bytes", i64::try_from(*bytes).unwrap_or(i64::MAX));
            }
            pipeline.hot.add_usage(&usage).await.map_err(|e| e.to_string())?;
            Ok(true)
        }
        Leased::Done(Some(Err(e))) => Err(e.to_string()),
        Leased::Done(None) | Leased::Stopped | Leased::Busy => Ok(false),
    }
}
