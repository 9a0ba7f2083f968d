//! Live events: the hub behind `GET /sse/events` (whose handler is `http::live`), streams in the Server-Sent Events
//! text format.
//!
//! One tail task per partition of the filtered log (started by the first subscriber, stopped a while after the
//! last leaves) polls new events and broadcasts each batch to the subscribers; a subscriber keeps only its
//! tenant's events that pass its filters. The broadcast never waits for anyone: a subscriber that falls more than
//! `SSE_BACKLOG` batches behind is told so (`event: lagged`, with the ids it missed) and carries on with live events,
//! so a slow client costs only its own connection.
//!
//! Event ids are offsets in the tenant's partition of the filtered log, so `Last-Event-ID` (sent by browsers when
//! they reconnect) resumes exactly after the last event received: what was missed is read from the log, then the
//! stream continues live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracker_log::{EventLog, LogError};
use tracker_protocol::{Event, partition_for};

/// One stream counted for as long as it lives: in `tracker_live_streams`, and against the node's and its tenant's
/// caps (`SSE_MAX_STREAMS`, `SSE_MAX_STREAMS_PER_TENANT`).
struct OpenStream {
    gauge: metrics::Gauge,
    hub: Arc<Hub>,
    tenant: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        if let Ok(mut open) = self.hub.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.per_tenant.get_mut(&self.tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_tenant.remove(&self.tenant);
                }
            }
        }
    }
}

/// The streams open at a node, counted against its caps.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_tenant: HashMap<String, usize>,
}

/// Why a live stream cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("live events are unavailable")]
    Unavailable,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("this node serves {0} live streams already")]
    NodeFull(usize),
    #[error("at most {0} live streams of a tenant at a node")]
    TenantFull(usize),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Most events one poll of the log reads.
const POLL: usize = 1024;
/// Pause of a tail with nothing new.
const IDLE: Duration = Duration::from_millis(50);
/// A tail with no subscribers stops after this long.
const LINGER: Duration = Duration::from_secs(30);
/// Messages queued for one client's socket before its writer waits.
const CLIENT_QUEUE: usize = 64;

type Batch = Arc<Vec<(u64, Event)>>;

#[derive(Debug)]
struct Tail {
    tx: broadcast::Sender<Batch>,
    /// The offset the tail broadcasts next.
    head: AtomicU64,
}

/// The tails of the filtered log's partitions that have subscribers (one hub per node: the tails serve every
/// connection).
#[derive(Debug)]
pub struct Hub {
    tails: Mutex<HashMap<u32, Arc<Tail>>>,
    /// Cancelled when the node shuts down: every stream and tail ends, so a graceful shutdown does not wait for
    /// them.
    closing: CancellationToken,
    /// The tails and the streams' writers, which the node waits for before it closes the log.
    tasks: TaskTracker,
    /// Batches a subscriber may fall behind before it is told it lagged (`SSE_BACKLOG`).
    backlog: usize,
    /// The streams open now, and how many may be: at the node, and of one tenant.
    open: Mutex<Open>,
    caps: (usize, usize),
}

impl Hub {
    /// `caps`: the live streams the node serves at once, and of one tenant.
    pub fn new(backlog: usize, caps: (usize, usize), tasks: TaskTracker) -> Hub {
        // shown from the start (at 0), not only once a stream opened
        metrics::gauge!("tracker_live_streams").increment(0.0);
        Hub {
            tails: Mutex::default(),
            closing: CancellationToken::new(),
            tasks,
            backlog: backlog.max(1),
            open: Mutex::default(),
            caps,
        }
    }

    /// Counts a new stream of `tenant` if the caps allow it.
    fn admit(self: &Arc<Self>, tenant: &str) -> Result<OpenStream, LiveError> {
        let (node_cap, tenant_cap) = self.caps;
        let mut open = self.open.lock().map_err(|_| LiveError::Unavailable)?;
        if open.total >= node_cap {
            return Err(LiveError::NodeFull(node_cap));
        }
        let of_tenant = open.per_tenant.entry(tenant.to_owned()).or_default();
        if *of_tenant >= tenant_cap {
            return Err(LiveError::TenantFull(tenant_cap));
        }
        *of_tenant += 1;
        open.total += 1;
        let gauge = metrics::gauge!("tracker_live_streams");
        gauge.increment(1.0);
        Ok(OpenStream { gauge, hub: self.clone(), tenant: tenant.to_owned() })
    }

    /// Ends every live stream (the node is shutting down; clients reconnect elsewhere with `Last-Event-ID`).
    pub fn close(&self) {
        self.closing.cancel();
    }
}

impl Hub {
    async fn subscribe(
        self: &Arc<Self>,
        log: &Arc<dyn EventLog>,
        partition: u32,
    ) -> Result<(broadcast::Receiver<Batch>, u64), LiveError> {
        let existing = self.tails.lock().ok().and_then(|t| t.get(&partition).cloned());
        let tail = match existing {
            Some(t) => t,
            None => {
                let head = log.end_offset(partition).await?;
                let (tx, _) = broadcast::channel(self.backlog);
                let fresh = Arc::new(Tail { tx, head: AtomicU64::new(head) });
                let mut tails = self.tails.lock().map_err(|_| LiveError::Unavailable)?;
                // another subscriber may have started it meanwhile
                match tails.get(&partition) {
                    Some(t) => t.clone(),
                    None => {
                        tails.insert(partition, fresh.clone());
                        let tail = run_tail(self.clone(), log.clone(), partition, fresh.clone());
                        let closing = self.closing.clone();
                        self.tasks.spawn(async move { closing.run_until_cancelled(tail).await });
                        fresh
                    }
                }
            }
        };
        let rx = tail.tx.subscribe();
        Ok((rx, tail.head.load(Ordering::Acquire)))
    }

    /// Starts a stream of `tenant`'s events in `log` that pass `filter`, resuming after event id `resume` (or
    /// from now): the receiver gets the stream's frames until the client or the node goes.
    pub async fn open(
        self: &Arc<Self>,
        log: Arc<dyn EventLog>,
        filter: StreamFilter,
        resume: Option<u64>,
    ) -> Result<mpsc::Receiver<Frame>, LiveError> {
        if self.closing.is_cancelled() {
            return Err(LiveError::ShuttingDown);
        }
        let open = self.admit(&filter.tenant)?;
        let partition = partition_for(&filter.tenant, log.partitions());
        let (rx, head) = self.subscribe(&log, partition).await?;
        let next = match resume {
            Some(id) => id.saturating_add(1).min(head),
            None => head,
        };
        let (out, frames) = mpsc::channel::<Frame>(CLIENT_QUEUE);
        let closing = self.closing.clone();
        self.tasks.spawn(async move {
            let _open = open;
            closing.run_until_cancelled(stream(log, partition, filter, rx, (next, head), out)).await
        });
        Ok(frames)
    }

    fn forget(&self, partition: u32, tail: &Arc<Tail>) -> bool {
        let Ok(mut tails) = self.tails.lock() else { return true };
        // stop only if no one subscribed while it was deciding
        if tail.tx.receiver_count() > 0 {
            return false;
        }
        if tails.get(&partition).is_some_and(|t| Arc::ptr_eq(t, tail)) {
            tails.remove(&partition);
        }
        true
    }
}

async fn run_tail(hub: Arc<Hub>, log: Arc<dyn EventLog>, partition: u32, tail: Arc<Tail>) {
    let mut lonely = 0u32;
    loop {
        if tail.tx.receiver_count() == 0 {
            lonely += 1;
            if Duration::from_millis(50) * lonely >= LINGER && hub.forget(partition, &tail) {
                return;
            }
        } else {
            lonely = 0;
        }
        let at = tail.head.load(Ordering::Acquire);
        match log.poll(partition, at, POLL).await {
            Ok(polled) if polled.next_offset > at => {
                tail.head.store(polled.next_offset, Ordering::Release);
                if !polled.events.is_empty() {
                    let _ = tail.tx.send(Arc::new(polled.events));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(partition, error = %e, "live events: the filtered log cannot be read"),
        }
        tokio::time::sleep(IDLE).await;
    }
}

/// Which events a stream sends: its tenant's, of these types, with this param value.
#[derive(Debug)]
pub struct StreamFilter {
    pub tenant: String,
    pub event_types: Option<Vec<String>>,
    pub param: Option<(String, String)>,
}

impl StreamFilter {
    fn keeps(&self, e: &Event) -> bool {
        e.key_prefix == self.tenant
            && self.event_types.as_ref().is_none_or(|t| t.contains(&e.event_type))
            && self.param.as_ref().is_none_or(|(k, v)| e.params.get(k) == Some(v))
    }
}

/// What a stream sends, in order (the HTTP handler frames them as Server-Sent Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream of `tenant`'s events has started.
    Start { tenant: String },
    /// An event (as JSON) and its id: its offset in the tenant's partition of the filtered log.
    Event { id: u64, json: String },
    /// Ids `[from, to)` were skipped (a reconnect with `Last-Event-ID: from - 1` fetches them).
    Lagged { from: u64, to: u64 },
}

fn frame(offset: u64, e: &Event) -> Frame {
    Frame::Event { id: offset, json: serde_json::to_string(e).unwrap_or_else(|_| "{}".into()) }
}

/// Sends events matching `wanted` from `next` on: first what the log holds up to the live position, then live
/// batches, filling any gap from the log.
async fn stream(
    log: Arc<dyn EventLog>,
    partition: u32,
    wanted: StreamFilter,
    mut rx: broadcast::Receiver<Batch>,
    (mut next, head): (u64, u64),
    out: mpsc::Sender<Frame>,
) {
    if out.send(Frame::Start { tenant: wanted.tenant.clone() }).await.is_err() {
        return;
    }
    // resuming: what the log holds up to where the live batches start
    if catch_up(&log, partition, &wanted, &mut next, head, &out).await.is_err() {
        return;
    }
    let mut lagged_from: Option<u64> = None;
    loop {
        let batch = tokio::select! {
            got = rx.recv() => got,
            // the client went away while the stream was idle
            () = out.closed() => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                lagged_from.get_or_insert(next);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(first) = batch.first().map(|(o, _)| *o) else { continue };
        if let Some(from) = lagged_from.take() {
            // tell the client what it missed, and go on live: it can fetch the gap with Last-Event-ID
            if out.send(Frame::Lagged { from, to: first }).await.is_err() {
                return;
            }
            next = first;
        }
        // a gap before this batch (events broadcast before this subscriber joined): from the log
        if catch_up(&log, partition, &wanted, &mut next, first, &out).await.is_err() {
            return;
        }
        let from = next;
        for (o, e) in batch.iter().filter(|(o, _)| *o >= from) {
            if wanted.keeps(e) && out.send(frame(*o, e)).await.is_err() {
                return;
            }
            next = o + 1;
        }
    }
}

/// Most events a stream reads back from the log on its own (a resume from an old id skips ahead beyond this,
/// with a lag notice, rather than scanning the partition).
const MAX_CATCH_UP: u64 = 100_000;

/// Sends the wanted events of `[next, until)` from the log; `Err` when the client has gone.
async fn catch_up(
    log: &Arc<dyn EventLog>,
    partition: u32,
    wanted: &StreamFilter,
    next: &mut u64,
    until: u64,
    out: &mpsc::Sender<Frame>,
) -> Result<(), ()> {
    if until.saturating_sub(*next) > MAX_CATCH_UP {
        let skip_to = until - MAX_CATCH_UP;
        out.send(Frame::Lagged { from: *next, to: skip_to }).await.map_err(|_| ())?;
        *next = skip_to;
    }
    while *next < until {
        let polled = match log.poll(partition, *next, POLL).await {
            Ok(p) if p.next_offset > *next => p,
            _ => break,
        };
        for (o, e) in polled.events.iter().filter(|(o, e)| *o < until && *o >= *next && wanted.keeps(e)) {
            out.send(frame(*o, e)).await.map_err(|_| ())?;
        }
        *next = polled.next_offset.min(until);
    }
    Ok(())
}
