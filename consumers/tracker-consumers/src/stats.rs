//! The stats consumer: filtered events into the hot tier ([`tracker_store::hot`]).
//!
//! Each batch is one hot-tier transaction: the events as one columnar segment, the counts they add, and the
//! consumer's position in each partition the batch read; a batch read again (after a crash) starts from those
//! positions, so it is stored once. Each `event_id` reaches it once (the filter drops resends). Between batches it
//! merges small segments (one merge at a time) and prunes the hot tier to its retention (a pass an hour, one small
//! step at a time).
//!
//! A batch gathers the events waiting in every partition, up to [`BATCH`]. While it holds fewer than a quarter of
//! that it waits for more, up to `HOT_BATCH_LINGER_MS` from its first read: at low rates a partition holds an event
//! or two at a time, and each transaction writes its segment, positions and a count row per tenant, minute, type
//! and param value whatever the number of events (rows a hosted libSQL bills). Under load a read fills the batch
//! and nothing waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracker_protocol::{Auth, Event};
use tracker_store::hot::PruneAt;

use crate::{CancellationToken, IDLE, Pipeline, gather, now_ms, rest};

/// The stats consumer's group.
pub const GROUP: &str = "stats";

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the stats consumer until `stop` is cancelled.
pub async fn run(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let mut pruning: Option<PruneAt> = None;
    let mut pruned: Option<Instant> = None;
    while !stop.is_cancelled() {
        if pruning.is_none() && pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            (pruning, pruned) = (Some(PruneAt::default()), Some(Instant::now()));
        }
        // one small step of retention between batches while a pass is on
        if let Some(at) = pruning.take() {
            let now = now_ms();
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let events_before = now.saturating_sub(ms(pipeline.settings.hot_events_retention));
            let counts_before = now.saturating_sub(ms(pipeline.settings.hot_counts_retention));
            let max_bytes = pipeline.settings.hot_events_max_bytes;
            match pipeline.hot.prune_step(&at, events_before, max_bytes, counts_before).await {
                Ok((n, next)) => {
                    if n > 0 {
                        tracing::debug!(events = n, "hot tier pruned to its retention");
                    }
                    pruning = (next != PruneAt::Done).then_some(next);
                }
                // the next pass tries again
                Err(e) => tracing::warn!(error = %e, "hot tier: prune failed"),
            }
        }
        // and one merge of small segments into a larger one, when a level has enough of them
        if let Err(e) = pipeline.hot.merge_step().await {
            tracing::warn!(error = %e, "hot tier: merge failed");
        }
        match step(&pipeline, &stop).await {
            Ok(true) => {}
            Ok(false) => rest(IDLE, &stop).await,
            Err(e) => {
                tracing::warn!(error = %e, "stats: batch not stored; retrying");
                rest(Duration::from_secs(1), &stop).await;
            }
        }
    }
}

/// Stores one batch; `false` when nothing waited. Waits for more events while the batch is small (see the module's
/// doc), unless `stop` is cancelled.
pub async fn step(pipeline: &Pipeline, stop: &CancellationToken) -> Result<bool, String> {
    let read = gather(&*pipeline.filtered, &pipeline.hot, GROUP, pipeline.settings.hot_batch_linger, stop).await?;
    // the partitions read, each with the position after what was read
    let positions: Vec<(u32, u64)> = read.iter().map(|r| (r.partition, r.next)).collect();
    // imported history older than the hot tier's counts can answer nothing here (the archive holds it)
    let horizon =
        now_ms().saturating_sub(i64::try_from(pipeline.settings.hot_counts_retention.as_millis()).unwrap_or(i64::MAX));
    let events: Vec<Event> = read
        .into_iter()
        .flat_map(|r| r.events)
        .filter(|(_, e)| !(e.auth == Auth::Import && e.timestamp < horizon))
        .map(|(_, e)| e)
        .collect();
    if positions.is_empty() {
        return Ok(false);
    }
    if !events.is_empty() {
        pipeline.hot.apply_batch(GROUP, &positions, &events).await.map_err(|e| e.to_string())?;
    }
    for (partition, next) in positions {
        pipeline.filtered.commit_offset(GROUP, partition, next).await.map_err(|e| e.to_string())?;
    }
    Ok(true)
}
