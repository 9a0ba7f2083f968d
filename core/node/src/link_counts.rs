//! Click counts per tracking link, for `GET /api/links`: a consumer of the node's event log that counts the clicks
//! on short links and stores the counts in libSQL together with its offsets, in one transaction per batch, so a
//! crash or restart never loses or double-counts a click (exactly once without idempotency bookkeeping).
//!
//! Counted: `click` events recorded by the short-link endpoint (`/t/<tu_id>`, `auth = link`); events a tenant
//! ingests itself, or a `tu_id` param on some other link, cannot inflate them. These are raw counts (before bot and rule filtering, which come with
//! the filter consumer). Each node counts its own log under its own consumer name, so nodes sharing one metadata
//! database add up without overlap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracker_protocol::Auth;
use tracker_store::LinkCount;

use crate::state::AppState;

/// Most events read from one partition per transaction.
const BATCH: usize = 10_000;
/// Pause when every partition is caught up.
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

/// Counts one batch of `partition`; returns how many events it read.
async fn step(st: &AppState, consumer: &str, partition: u32) -> Result<usize, String> {
    let from = st.store.consumer_offset(consumer, partition).await.map_err(|e| e.to_string())?;
    let polled = st.log.poll(partition, from, BATCH).await.map_err(|e| e.to_string())?;
    if polled.next_offset <= from {
        return Ok(0);
    }
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
    st.store.add_link_counts(consumer, partition, polled.next_offset, &counts).await.map_err(|e| e.to_string())?;
    Ok(polled.events.len())
}

/// Runs until the task is aborted.
pub async fn run(st: Arc<AppState>, consumer: String) {
    loop {
        let mut read = 0;
        for p in 0..st.log.partitions() {
            match step(&st, &consumer, p).await {
                Ok(n) => read += n,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "link counts: batch not counted; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if read == 0 {
            tokio::time::sleep(IDLE).await;
        }
    }
}
