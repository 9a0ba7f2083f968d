//! # The spool: acknowledged means durable somewhere
//!
//! [`SpooledLog`] puts a primary log that lives elsewhere (an Iggy cluster in production) in front of a local
//! durable spool (an [`EmbeddedLog`]). Writes go to the primary while it answers; when it is unreachable, slow
//! (beyond `timeout`) or refuses, they go to the spool instead, and stay acknowledged there. From that moment every
//! write goes to the spool until the drainer has replayed it to the primary, in order per partition, so a tenant's
//! events never overtake each other. Nothing is counted and dropped, as the replaced system did when its broker
//! was down.
//!
//! The drainer appends each spooled stretch to the primary with an idempotency key derived from its spool position
//! and commits the spool's consumer offset only after the primary acknowledged it: a crash between the two replays
//! the stretch under the same key, which the primary answers as a duplicate. Consumers read the primary only;
//! spooled events become visible to them once drained. A write whose primary append timed out may have landed
//! there too, and is then also spooled: delivery is at least once, and consumers are idempotent by `event_id`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracker_protocol::wire::RecordSetBuilder;

use crate::{AppendReceipt, EmbeddedLog, EventLog, Filter, LogError, LogFuture, LogStatus, Polled, RecordSet};

/// The spool's consumer group for the drainer.
const DRAIN_GROUP: &str = "spool-drain";
/// Stripes of the per-key turn taking of idempotent appends.
const KEY_STRIPES: usize = 64;
/// Events replayed to the primary per append.
const DRAIN_BATCH: usize = 5_000;

/// A primary log with a local durable spool for when it is unavailable.
#[derive(Debug)]
pub struct SpooledLog {
    primary: RwLock<Option<Arc<dyn EventLog>>>,
    spool: EmbeddedLog,
    /// Set while writes must go to the spool: the primary failed, and the spool has not been drained since.
    spooling: tokio::sync::RwLock<bool>,
    /// How long a primary append may take before the write goes to the spool instead.
    timeout: Duration,
    backend: &'static str,
    /// Events in the spool not yet replayed (kept current by writes and drains).
    spooled: AtomicU64,
    /// Appends with idempotency keys take turns per key stripe.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Set by shutdown: background tasks holding the log end.
    closed: std::sync::atomic::AtomicBool,
    closing: tokio::sync::Notify,
}

impl SpooledLog {
    /// A log that spools until a primary is attached (and whenever it fails).
    pub fn new(spool: EmbeddedLog, timeout: Duration, backend: &'static str) -> SpooledLog {
        SpooledLog {
            primary: RwLock::new(None),
            spool,
            spooling: tokio::sync::RwLock::new(true),
            timeout,
            backend,
            spooled: AtomicU64::new(0),
            key_locks: (0..KEY_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: tokio::sync::Notify::new(),
        }
    }

    /// Resolves once [`EventLog::shutdown`] was called: tasks that hold the log (the drainer, a reconnecting
    /// connector) select on it and end, so the spool can be opened again by the next process.
    pub async fn closed(&self) {
        let notified = self.closing.notified();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Attaches (or replaces) the primary, once it is reachable. Writes keep going to the spool until the drainer
    /// has emptied it.
    pub fn attach(&self, primary: Arc<dyn EventLog>) {
        if let Ok(mut p) = self.primary.write() {
            *p = Some(primary);
        }
    }

    /// Forgets the primary (its connection was lost); writes go to the spool.
    pub fn detach(&self) {
        if let Ok(mut p) = self.primary.write() {
            *p = None;
        }
    }

    /// The local spool, for inspection.
    pub fn spool(&self) -> &EmbeddedLog {
        &self.spool
    }

    fn primary(&self) -> Option<Arc<dyn EventLog>> {
        self.primary.read().ok().and_then(|p| p.clone())
    }

    /// Durable events in the spool that have not reached the primary yet.
    pub async fn spooled(&self) -> Result<u64, LogError> {
        let mut n = 0;
        for p in 0..self.spool.partitions() {
            let from = self.spool.committed_offset(DRAIN_GROUP, p).await?.unwrap_or(0);
            n += self.spool_end(p, from).await?.saturating_sub(from);
        }
        Ok(n)
    }

    /// The spool's next offset in `partition`, scanning from `from`.
    async fn spool_end(&self, partition: u32, mut from: u64) -> Result<u64, LogError> {
        loop {
            let polled = self.spool.poll_where(partition, from, 100_000, Filter { tags: 0, keep: |_| false }).await?;
            if polled.next_offset <= from {
                return Ok(from);
            }
            from = polled.next_offset;
        }
    }

    /// Replays what the spool holds to the primary, in order per partition; returns the events replayed. When the
    /// spool is empty afterwards, writes go to the primary again.
    pub async fn drain(&self) -> Result<u64, LogError> {
        let Some(primary) = self.primary() else {
            // nowhere to drain to: keep the count of what waits current (it survives restarts in the spool)
            self.spool.flush().await?;
            self.spooled.store(self.spooled().await?, Ordering::Relaxed);
            return Ok(0);
        };
        let mut drained = 0;
        for p in 0..self.spool.partitions() {
            loop {
                let from = self.spool.committed_offset(DRAIN_GROUP, p).await?.unwrap_or(0);
                let polled = self.spool.poll(p, from, DRAIN_BATCH).await?;
                if polled.next_offset <= from {
                    break;
                }
                if !polled.events.is_empty() {
                    let mut b = RecordSetBuilder::with_capacity(polled.events.len() * 256);
                    for (_, e) in &polled.events {
                        b.push(e);
                    }
                    let set = RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() };
                    // the same stretch always gets the same key: a replay after a crash is a duplicate
                    primary.append(vec![set], Some(format!("spool:{p}:{from}:{}", polled.next_offset))).await?;
                    drained += polled.events.len() as u64;
                }
                self.spool.commit_offset(DRAIN_GROUP, p, polled.next_offset).await?;
            }
        }
        // back to the primary only when nothing is left, with writers held off while that is checked
        let mut spooling = self.spooling.write().await;
        // enqueued writes are durable in the spool within its commit window: count them too
        self.spool.flush().await?;
        let left = self.spooled().await?;
        self.spooled.store(left, Ordering::Relaxed);
        if *spooling && left == 0 {
            *spooling = false;
            tracing::info!("spool drained: writing to the primary log again");
        }
        Ok(drained)
    }

    /// Writes go to the spool from now on (until drained).
    async fn start_spooling(&self, why: &str) {
        let mut spooling = self.spooling.write().await;
        if !*spooling {
            tracing::warn!(reason = why, "primary log unavailable: spooling locally until it is back");
            *spooling = true;
        }
    }

    async fn append_inner(&self, sets: Vec<RecordSet>, key: Option<String>) -> Result<AppendReceipt, LogError> {
        // idempotency keys are kept in the spool whatever log takes the write (a primary may have none), one key
        // at a time so two retries of one request cannot both miss
        let _key_turn = match &key {
            Some(k) => {
                let stripe = k.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
                let lock = self.key_locks.get(stripe % KEY_STRIPES).ok_or(LogError::Closed)?;
                let turn = lock.lock().await;
                if let Some(receipt) = self.spool.recall(k)? {
                    return Ok(receipt);
                }
                Some(turn)
            }
            None => None,
        };
        loop {
            // the guard is held through the write, so the drainer cannot switch back to the primary while a write
            // it has not seen is still going into the spool
            let spooling = self.spooling.read().await;
            if *spooling {
                let receipt = self.spool.append(sets, key).await?;
                if !receipt.duplicate {
                    self.spooled.fetch_add(receipt.events(), Ordering::Relaxed);
                }
                return Ok(receipt);
            }
            let Some(primary) = self.primary() else {
                drop(spooling);
                self.start_spooling("no primary log attached").await;
                continue;
            };
            let why = match tokio::time::timeout(self.timeout, primary.append(sets.clone(), key.clone())).await {
                Ok(Ok(receipt)) => {
                    if let Some(k) = &key {
                        self.spool.remember(k, &receipt)?;
                    }
                    return Ok(receipt);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the append timed out".to_owned(),
            };
            drop(spooling);
            self.start_spooling(&why).await;
        }
    }

    async fn enqueue_inner(&self, sets: Vec<RecordSet>) -> Result<(), LogError> {
        loop {
            let spooling = self.spooling.read().await;
            if *spooling {
                let events: u64 = sets.iter().map(|s| u64::from(s.count)).sum();
                self.spool.enqueue(sets).await?;
                self.spooled.fetch_add(events, Ordering::Relaxed);
                return Ok(());
            }
            let Some(primary) = self.primary() else {
                drop(spooling);
                self.start_spooling("no primary log attached").await;
                continue;
            };
            let why = match tokio::time::timeout(self.timeout, primary.enqueue(sets.clone())).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the enqueue timed out".to_owned(),
            };
            drop(spooling);
            self.start_spooling(&why).await;
        }
    }

    fn need_primary(&self) -> Result<Arc<dyn EventLog>, LogError> {
        self.primary().ok_or_else(|| LogError::Unavailable("the primary log is not connected".into()))
    }

    /// Drains whenever there is something to drain, until the log shuts down.
    pub async fn run_drainer(self: Arc<Self>, every: Duration) {
        loop {
            tokio::select! {
                () = self.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
            if *self.spooling.read().await
                && let Err(e) = self.drain().await
            {
                tracing::warn!(error = %e, "spool drain failed; retrying");
            }
        }
    }
}

impl EventLog for SpooledLog {
    fn partitions(&self) -> u32 {
        self.spool.partitions()
    }

    fn append(&self, sets: Vec<RecordSet>, idempotency_key: Option<String>) -> LogFuture<'_, AppendReceipt> {
        Box::pin(self.append_inner(sets, idempotency_key))
    }

    fn enqueue(&self, sets: Vec<RecordSet>) -> LogFuture<'_, ()> {
        Box::pin(self.enqueue_inner(sets))
    }

    fn poll_where(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> LogFuture<'_, Polled> {
        Box::pin(async move { self.need_primary()?.poll_where(partition, from, max_events, filter).await })
    }

    fn poll_group(&self, group: &str, max_events: usize, filter: Filter) -> LogFuture<'_, Option<(u32, Polled)>> {
        let group = group.to_owned();
        Box::pin(async move { self.need_primary()?.poll_group(&group, max_events, filter).await })
    }

    fn poll_group_besides<'a>(
        &'a self,
        group: &str,
        max_events: usize,
        filter: Filter,
        held: &'a [u32],
    ) -> LogFuture<'a, Option<(u32, Polled)>> {
        let group = group.to_owned();
        Box::pin(async move { self.need_primary()?.poll_group_besides(&group, max_events, filter, held).await })
    }

    fn commit_offset(&self, group: &str, partition: u32, next_offset: u64) -> LogFuture<'_, ()> {
        let group = group.to_owned();
        Box::pin(async move { self.need_primary()?.commit_offset(&group, partition, next_offset).await })
    }

    fn committed_offset(&self, group: &str, partition: u32) -> LogFuture<'_, Option<u64>> {
        let group = group.to_owned();
        Box::pin(async move { self.need_primary()?.committed_offset(&group, partition).await })
    }

    fn status(&self) -> LogStatus {
        let spool = self.spool.status();
        match self.primary() {
            Some(p) => {
                let mut s = p.status();
                s.backend = self.backend;
                s.spooled_events = self.spooled.load(Ordering::Relaxed);
                s
            }
            None => LogStatus {
                backend: self.backend,
                healthy: false,
                error: Some("the primary log is not connected: events are spooled locally".into()),
                spooled_events: self.spooled.load(Ordering::Relaxed),
                ..spool
            },
        }
    }

    fn shutdown(&self) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            self.closing.notify_waiters();
            if let Some(p) = self.primary() {
                p.shutdown().await?;
            }
            self.spool.shutdown().await
        })
    }
}
