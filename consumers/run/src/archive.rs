//! The archiver ([`tracker_archive`]) as a consumer: filtered events into the Delta tables, restarted after any
//! error (the tables hold its positions, so a restart neither loses nor repeats an event), and the tables'
//! maintenance (retention deletes, compaction, checkpoint, vacuum) on a schedule.
//!
//! One process writes the tables at a time (a lease in the metadata store; others stand by). Maintenance runs
//! on a thread of its own so compaction never holds up archiving, under a lease of its own, so that only one
//! process compacts at a time (two compactions of the same files would both commit and duplicate rows).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracker_archive::{ArchiveSettings, Retention};

use crate::{Pipeline, now_ms, rest, stopped};

/// The maintenance lease's name in the metadata store.
pub const LEASE: &str = "archive-maintenance";
/// How long a maintenance run may hold the lease (a holder that died mid-run is replaced after this).
const LEASE_MS: i64 = 6 * 3600 * 1000;

/// The single-writer lease's name: one archiver process writes the tables, others stand by.
pub const WRITER_LEASE: &str = "archive-writer";
/// How long the writer's lease lasts without a renewal (a standby takes over this long after a writer died).
const WRITER_LEASE_MS: i64 = 60_000;
/// How often the writer renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(15);

/// Archives until `stop` is set, restarting after errors, as the single writer of the tables: Delta commits are
/// serialized per table anyway, and one archiver keeps its positions exact without reading them back before
/// each commit. Other processes wait as standbys. If a writer loses its lease (a long stall), it stops, and
/// Delta's conflict check on the partitions' application transactions refuses any commit it still makes after
/// the new writer's, so no event is written twice.
pub async fn archive(p: Arc<Pipeline>, settings: ArchiveSettings, stop: Arc<AtomicBool>) {
    let holder = format!("{}-{}", std::process::id(), tracker_protocol::Uuid::now_v7());
    let mut wait = Duration::from_secs(1);
    while !stopped(&stop) {
        let now = now_ms();
        match p.store.acquire_lease(WRITER_LEASE, &holder, now, now + WRITER_LEASE_MS).await {
            Ok(true) => {}
            Ok(false) => {
                rest(RENEW_EVERY, &stop).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "archiver: cannot reach the metadata store for its lease");
                rest(RENEW_EVERY, &stop).await;
                continue;
            }
        }
        let run_stop = Arc::new(AtomicBool::new(false));
        let run = tracker_archive::run(p.filtered.clone(), settings.clone(), run_stop.clone());
        tokio::pin!(run);
        let mut renewed = Instant::now();
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stopped(&stop) {
                        run_stop.store(true, Ordering::Release);
                    } else if renewed.elapsed() >= RENEW_EVERY {
                        let now = now_ms();
                        match p.store.acquire_lease(WRITER_LEASE, &holder, now, now + WRITER_LEASE_MS).await {
                            Ok(true) => renewed = Instant::now(),
                            Ok(false) => {
                                tracing::warn!("archiver: lost its lease to another process; standing by");
                                run_stop.store(true, Ordering::Release);
                            }
                            // the lease lasts a while: try again next time
                            Err(e) => tracing::warn!(error = %e, "archiver: lease not renewed"),
                        }
                    }
                }
            }
        };
        match result {
            Ok(n) => {
                tracing::info!(events = n, "archiver stopped");
                wait = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "archiver: commit failed; restarting from the tables' positions");
                rest(wait, &stop).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
    let _ = p.store.release_lease(WRITER_LEASE, &holder).await;
}

/// Runs [`tracker_archive::maintain`] every `settings.maintenance.interval` while holding the lease.
pub async fn maintain(p: Arc<Pipeline>, settings: ArchiveSettings, stop: Arc<AtomicBool>) {
    let holder = format!("{}-{}", std::process::id(), tracker_protocol::Uuid::now_v7());
    while !stopped(&stop) {
        rest(settings.maintenance.interval, &stop).await;
        if stopped(&stop) {
            break;
        }
        if let Err(e) = maintain_once(&p, &settings, &holder).await {
            tracing::warn!(error = %e, "archive maintenance failed; retrying at the next interval");
        }
    }
}

/// One maintenance run if the lease is free; `Ok(false)` when another process holds it.
pub async fn maintain_once(p: &Pipeline, settings: &ArchiveSettings, holder: &str) -> Result<bool, String> {
    let now = now_ms();
    if !p.store.acquire_lease(LEASE, holder, now, now + LEASE_MS).await.map_err(|e| e.to_string())? {
        return Ok(false);
    }
    let result = async {
        let retention: Vec<Retention> = p
            .store
            .list_tenants()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|t| t.limits.retention_days.map(|keep_days| Retention { tenant: t.key_prefix, keep_days }))
            .collect();
        let report = tracker_archive::maintain(settings, &retention, now).await.map_err(|e| e.to_string())?;
        tracing::info!(?report, "archive maintained");
        Ok(true)
    }
    .await;
    let _ = p.store.release_lease(LEASE, holder).await;
    result
}
