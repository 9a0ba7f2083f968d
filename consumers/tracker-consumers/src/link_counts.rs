//! Click counts per tracking link, for `GET /api/links`: a consumer of the node's event log that counts the clicks
//! on short links and stores the counts in libSQL together with its offsets, in one transaction per batch, so a
//! crash or restart never loses or double-counts a click (exactly once without idempotency bookkeeping).
//!
//! Counted: `click` events recorded by the short-link endpoint (`/t/<tu_id>`, `auth = link`); events a tenant
//! ingests itself, or a `tu_id` param on some other link, cannot inflate them. These are raw counts (before bot
//! and rule filtering, which come with the filter consumer). Each node counts its own log under its own consumer
//! name, so nodes sharing one metadata database add up without overlap. The node runs it beside its other
//! consumers (always in-process: it counts that node's own log).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use tracker_log::{EventLog, Filter};
use tracker_protocol::{Auth, wire};
use tracker_store::{LinkCount, Store};

use crate::Liveness;

/// Most events read from one partition per transaction.
const BATCH: usize = 10_000;
/// Pause when every partition is caught up (also the longest a click waits to be counted when the node is idle).
const IDLE: Duration = Duration::from_millis(200);

/// The node's consumer name: `link-counts@<node id>`, the id kept in `DATA_DIR/node-id` (created once).
pub fn consumer_name(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    let id = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let id = tracker_protocol::Uuid::now_v7().simple().to_string();
            std::fs::write(&path, &id)?;
            id
        }
    };
    Ok(format!("link-counts@{id}"))
}

/// Only record sets tagged as holding short-link clicks are read at all (sets of other clicks, pixels, postbacks
/// or batches never are), and in them only the events that pass this test are decoded.
///
/// Whether an encoded event may be a short-link click: its request path (`/t/tu_...`) appears in it. Most events
/// do not, and are skipped without being decoded; the ones that do are checked exactly after decoding.
fn names_a_short_link(raw: &[u8]) -> bool {
    memchr::memmem::find(raw, SHORT_PATH).is_some()
}

const SHORT_PATH: &[u8] = b"/t/tu_";

/// How often an offset is committed when its batches held no clicks (re-scanning that stretch after a restart
/// counts nothing, so the commit only saves the scan).
const QUIET_COMMIT: Duration = Duration::from_secs(5);

/// Where the consumer is in one partition.
#[derive(Debug, Clone, Copy)]
struct Position {
    next: u64,
    committed_at: Instant,
}

/// Counts one batch of `partition`; returns how many events it scanned.
async fn step(
    log: &dyn EventLog,
    store: &Store,
    consumer: &str,
    partition: u32,
    at: &mut Option<Position>,
) -> Result<usize, String> {
    let from = match at {
        Some(p) => p.next,
        None => store.consumer_offset(consumer, partition).await.map_err(|e| e.to_string())?,
    };
    let filter = Filter { tags: wire::TAG_SHORT_LINK, keep: names_a_short_link };
    let polled = log.poll_where(partition, from, BATCH, filter).await.map_err(|e| e.to_string())?;
    if polled.next_offset <= from {
        return Ok(0);
    }
    let scanned = usize::try_from(polled.next_offset - from).unwrap_or(usize::MAX);
    let mut counts: BTreeMap<(String, String), LinkCount> = BTreeMap::new();
    for (_, e) in &polled.events {
        if e.event_type != "click" || e.auth != Auth::Link {
            continue;
        }
        let Some(tu_id) = e.params.get("tu_id") else { continue };
        // only a click on the short link itself (`/t/<tu_id>`): a click link cannot claim one through its params
        if e.request_path.as_deref().and_then(|p| p.strip_prefix("/t/")) != Some(tu_id.as_str()) {
            continue;
        }
        let c = counts.entry((e.key_prefix.clone(), tu_id.clone())).or_default();
        c.clicks += 1;
        c.last_click_at = Some(c.last_click_at.unwrap_or(0).max(e.timestamp));
    }
    let counts: Vec<_> = counts.into_iter().map(|((k, t), c)| (k, t, c)).collect();
    let quiet = at.is_some_and(|p| p.committed_at.elapsed() < QUIET_COMMIT);
    if counts.is_empty() && quiet {
        // nothing counted: the offset may lag in the store, since re-reading this stretch would count nothing
        if let Some(p) = at {
            p.next = polled.next_offset;
        }
        return Ok(scanned);
    }
    store.add_link_counts(consumer, partition, polled.next_offset, &counts).await.map_err(|e| e.to_string())?;
    *at = Some(Position { next: polled.next_offset, committed_at: Instant::now() });
    Ok(scanned)
}

/// The counter on a thread of its own (a single-threaded runtime): its reads of the log stay on one thread and
/// one blocking worker, instead of touching the allocator caches of every worker of the node's runtime (which
/// showed as tens of MB of peak RSS under load). Stops when `stop` is cancelled, between batches; if it ends
/// before that (a panic), the node's `/health` says so.
pub fn spawn(
    log: Arc<dyn EventLog>,
    store: Store,
    liveness: Arc<Liveness>,
    consumer: String,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build()?;
    std::thread::Builder::new().name("link-counts".into()).spawn(move || {
        let counter = run(log, store, consumer, stop.clone());
        let ended = runtime.block_on(async move { tokio::spawn(counter).await });
        if let Err(e) = &ended {
            tracing::error!(error = %e, "the link counter panicked");
        }
        if !stop.is_cancelled() {
            liveness.died("link-counts");
        }
    })
}

/// Counts until `stop` is cancelled.
pub async fn run(log: Arc<dyn EventLog>, store: Store, consumer: String, stop: CancellationToken) {
    let mut positions: Vec<Option<Position>> = vec![None; log.partitions() as usize];
    while !stop.is_cancelled() {
        // a partition that filled a whole batch has more waiting; otherwise every partition is caught up and the
        // counter rests instead of spinning over sets it skips
        let mut backlog = false;
        for (p, at) in (0..log.partitions()).zip(positions.iter_mut()) {
            match step(log.as_ref(), &store, &consumer, p, at).await {
                Ok(n) => backlog |= n >= BATCH,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "link counts: batch not counted; retrying");
                    crate::rest(Duration::from_secs(1), &stop).await;
                }
            }
        }
        if !backlog {
            crate::rest(IDLE, &stop).await;
        }
    }
}
