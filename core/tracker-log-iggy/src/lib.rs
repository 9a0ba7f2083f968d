//! # The event log on Apache Iggy
//!
//! [`IggyLog`] implements `tracker_log::EventLog` with the official `iggy` client, so core nodes and consumers
//! run unchanged on the embedded log or on an Iggy cluster. The mapping:
//!
//! - one stream (`IGGY_STREAM`, default `tracker`) with the topics `events` (raw events) and `filtered` (for the
//!   filter consumer), created if missing with the configured partition count, message expiry, and fsync
//!   enforced, so an acknowledged send is on the server's disk;
//! - our partition `p` is Iggy partition `p`, chosen by tenant (`tracker_protocol::partition_for`), so a tenant's
//!   events stay in order;
//! - one Iggy message per event (its `tracker_protocol::wire` encoding), with the event id as the message id, so
//!   Iggy offsets are event offsets and the server's message deduplication (when enabled) drops a retried send;
//! - consumer groups are named Iggy consumers with server-side offsets per partition (Iggy stores the last
//!   consumed offset; the trait speaks of the next one).
//!
//! Connection, transport (TCP, QUIC, HTTP), credentials and TLS all come from one connection string
//! (`IGGY_URL`, for example `iggy://user:secret@host:8090?tls=true`); there is no built-in user. Outages are the
//! `tracker_log::SpooledLog`'s job: the node writes through it, and reconnects with backoff for as long as it runs.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use iggy::prelude::*;
use tracker_log::{AppendReceipt, EventLog, Filter, LogError, LogFuture, LogStatus, Polled, RecordSet};
use tracker_protocol::wire;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct IggyConfig {
    /// Iggy connection string: transport, address, credentials, TLS.
    pub url: String,
    pub stream: String,
    pub partitions: u32,
    /// Messages older than this are deleted by the server (`None`: kept).
    pub retention: Option<Duration>,
    /// How long a send waits for others to join its batch.
    pub linger: Duration,
    /// Segment size of the topics it creates (`None`: the server's default). Expiry deletes whole sealed segments.
    pub segment_bytes: Option<u64>,
}

/// Most record sets waiting for the sender; producers wait beyond (backpressure, never a drop).
const QUEUE: usize = 1024;
/// A batch is sent once it holds this many bytes, whatever the linger.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Where each record set of a send landed (`AppendReceipt::parts`), or why the send failed.
type Answer = Result<Vec<(u32, u64, u32)>, String>;

/// Record sets waiting to be sent, and who to answer.
struct Pending {
    sets: Vec<RecordSet>,
    done: tokio::sync::oneshot::Sender<Answer>,
}

/// The topics the platform uses.
pub const EVENTS_TOPIC: &str = "events";
pub const FILTERED_TOPIC: &str = "filtered";

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("iggy: {e}"))
}

fn named(name: &str) -> Result<Identifier, LogError> {
    Identifier::named(name).map_err(|e| LogError::InvalidGroup(format!("{name}: {e}")))
}

/// A connected Iggy log.
pub struct IggyLog {
    inner: std::sync::Arc<Inner>,
    queue: tokio::sync::mpsc::Sender<Pending>,
}

struct Inner {
    client: IggyClient,
    stream: Identifier,
    topic: Identifier,
    partitions: u32,
    last_error: Mutex<Option<String>>,
    /// Consumer groups this connection joined (their offsets are the group's, not a plain consumer's).
    joined: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for IggyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IggyLog").field("partitions", &self.inner.partitions).finish_non_exhaustive()
    }
}

impl IggyLog {
    /// Connects, signs in (credentials from the connection string) and makes sure the stream and topics exist with
    /// the configured partition count. The log reads and writes the raw events (`events`).
    pub async fn connect(cfg: &IggyConfig) -> Result<IggyLog, LogError> {
        Self::connect_topic(cfg, EVENTS_TOPIC).await
    }

    /// Like [`IggyLog::connect`], for one of the platform's topics ([`EVENTS_TOPIC`] or [`FILTERED_TOPIC`]).
    pub async fn connect_topic(cfg: &IggyConfig, topic: &str) -> Result<IggyLog, LogError> {
        let client =
            IggyClientBuilder::from_connection_string(&cfg.url).map_err(unavailable)?.build().map_err(unavailable)?;
        client.connect().await.map_err(unavailable)?;
        let stream = named(&cfg.stream)?;
        if client.get_stream(&stream).await.map_err(unavailable)?.is_none() {
            match client.create_stream(&cfg.stream).await {
                Ok(_) | Err(IggyError::StreamNameAlreadyExists(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        for topic in [EVENTS_TOPIC, FILTERED_TOPIC] {
            let id = named(topic)?;
            match client.get_topic(&stream, &id).await.map_err(unavailable)? {
                Some(t) if t.partitions_count != cfg.partitions => {
                    return Err(LogError::PartitionMismatch {
                        path: format!("iggy stream {} topic {topic}", cfg.stream),
                        stored: t.partitions_count,
                        configured: cfg.partitions,
                    });
                }
                Some(_) => {}
                None => {
                    let options = TopicCreateOptions {
                        partitions_count: Some(cfg.partitions),
                        message_expiry: Some(match cfg.retention {
                            Some(d) => IggyExpiry::ExpireDuration(IggyDuration::from(d)),
                            None => IggyExpiry::NeverExpire,
                        }),
                        enforce_fsync: Some(true),
                        segment_size: cfg.segment_bytes.map(IggyByteSize::from),
                        ..TopicCreateOptions::default()
                    };
                    match client.create_topic(&stream, topic, &options).await {
                        Ok(_) | Err(IggyError::TopicNameAlreadyExists(..)) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        let inner = std::sync::Arc::new(Inner {
            client,
            stream,
            topic: named(topic)?,
            partitions: cfg.partitions,
            last_error: Mutex::new(None),
            joined: Default::default(),
        });
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(sender(inner.clone(), rx, cfg.linger));
        Ok(IggyLog { inner, queue })
    }

    /// Hands record sets to the sender and waits until Iggy took them (the sender batches them with what other
    /// producers sent within the linger time).
    async fn send(&self, sets: Vec<RecordSet>) -> Result<AppendReceipt, LogError> {
        if let Some(bad) = sets.iter().find(|s| s.partition >= self.inner.partitions) {
            return Err(LogError::NoSuchPartition(bad.partition));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.queue.send(Pending { sets, done }).await.map_err(|_| LogError::Closed)?;
        let parts = answer.await.map_err(|_| LogError::Closed)?.map_err(unavailable)?;
        Ok(AppendReceipt { parts, duplicate: false })
    }
}

/// The sender: collects what producers hand over for up to `linger` (or [`BATCH_BYTES`]), sends one batch per
/// partition, and answers every producer with its own part of the result.
async fn sender(inner: std::sync::Arc<Inner>, mut rx: tokio::sync::mpsc::Receiver<Pending>, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes: usize = batch.iter().flat_map(|p| &p.sets).map(|s| s.bytes.len()).sum();
        let deadline = tokio::time::Instant::now() + linger;
        while bytes < BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    bytes += p.sets.iter().map(|s| s.bytes.len()).sum::<usize>();
                    batch.push(p);
                }
                _ => break,
            }
        }
        // one send per partition, in arrival order; each producer learns where its sets landed
        let mut by_partition: std::collections::BTreeMap<u32, Vec<(usize, usize, IggyMessage)>> = Default::default();
        let mut failed: Option<String> = None;
        for (i, p) in batch.iter().enumerate() {
            for (j, set) in p.sets.iter().enumerate() {
                match Inner::messages(set) {
                    Ok(ms) => by_partition.entry(set.partition).or_default().extend(ms.into_iter().map(|m| (i, j, m))),
                    Err(e) => failed = Some(e.to_string()),
                }
            }
        }
        let mut bases: std::collections::HashMap<(usize, usize), u64> = Default::default();
        if failed.is_none() {
            for (partition, items) in by_partition {
                let (owners, mut messages): (Vec<(usize, usize)>, Vec<IggyMessage>) =
                    items.into_iter().map(|(i, j, m)| ((i, j), m)).unzip();
                let sent = inner
                    .client
                    .send_messages(&inner.stream, &inner.topic, &Partitioning::partition_id(partition), &mut messages)
                    .await;
                match inner.note(sent) {
                    Ok(sent) => {
                        let base = sent.confirmations.first().map_or(0, |c| c.base_offset);
                        for (k, owner) in owners.into_iter().enumerate() {
                            bases.entry(owner).or_insert(base + k as u64);
                        }
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        for (i, p) in batch.into_iter().enumerate() {
            let answer = match &failed {
                Some(e) => Err(e.clone()),
                None => Ok(p
                    .sets
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (s.partition, bases.get(&(i, j)).copied().unwrap_or(0), s.count))
                    .collect()),
            };
            let _ = p.done.send(answer);
        }
    }
}

impl Inner {
    /// The Iggy consumer for `name`: the group's if this connection joined it, else a plain named consumer.
    async fn consumer(&self, name: &str) -> Result<Consumer, LogError> {
        let id = named(name)?;
        Ok(if self.joined.lock().await.contains(name) { Consumer::group(id) } else { Consumer::new(id) })
    }

    /// Creates the consumer group if needed and joins it as a member (once per connection).
    async fn join(&self, group: &str) -> Result<(), LogError> {
        let mut joined = self.joined.lock().await;
        if joined.contains(group) {
            return Ok(());
        }
        match self.client.create_consumer_group(&self.stream, &self.topic, group).await {
            Ok(_) | Err(IggyError::ConsumerGroupNameAlreadyExists(..)) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let joined_now = self.client.join_consumer_group(&self.stream, &self.topic, &named(group)?).await;
        self.note(joined_now)?;
        joined.insert(group.to_owned());
        Ok(())
    }

    /// One poll as a member of `group`: Iggy picks the partition among those assigned to this member.
    async fn poll_group(
        &self,
        group: &str,
        max_events: usize,
        filter: Filter,
    ) -> Result<Option<(u32, Polled)>, LogError> {
        self.join(group).await?;
        let consumer = Consumer::group(named(group)?);
        let count = u32::try_from(max_events.clamp(1, 100_000)).unwrap_or(100_000);
        let polled = self
            .client
            .poll_messages(&self.stream, &self.topic, None, &consumer, &PollingStrategy::next(), count, false)
            .await;
        let polled = self.note(polled)?;
        let Some(first) = polled.messages.first() else { return Ok(None) };
        let partition = polled.partition_id;
        let mut out = Polled { events: Vec::new(), next_offset: first.header.offset };
        for m in polled.messages {
            let offset = m.header.offset;
            out.next_offset = offset + 1;
            if (filter.keep)(&m.payload) {
                let corrupt = |source| LogError::Corrupt { partition, offset, source };
                out.events.push((offset, wire::decode_event(&m.payload).map_err(corrupt)?));
            }
        }
        Ok(Some((partition, out)))
    }

    fn note<T>(&self, r: Result<T, IggyError>) -> Result<T, LogError> {
        let message = r.as_ref().err().map(ToString::to_string);
        if let Ok(mut last) = self.last_error.lock() {
            *last = message;
        }
        r.map_err(unavailable)
    }

    /// One Iggy message per event of the record set.
    fn messages(set: &RecordSet) -> Result<Vec<IggyMessage>, LogError> {
        let corrupt = |source| LogError::Corrupt { partition: set.partition, offset: 0, source };
        let mut out = Vec::with_capacity(set.count as usize);
        for raw in wire::record_set_events(&set.bytes).map_err(corrupt)? {
            let raw = raw.map_err(corrupt)?;
            // the event id is the first 16 bytes of the encoding
            let id = raw.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(u128::from_be_bytes);
            let message = IggyMessage::builder()
                .maybe_id(id)
                .payload(Bytes::copy_from_slice(raw))
                .build()
                .map_err(unavailable)?;
            out.push(message);
        }
        Ok(out)
    }

    async fn read(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> Result<Polled, LogError> {
        let consumer = Consumer::new(named("tracker-reader")?);
        let count = u32::try_from(max_events.clamp(1, 100_000)).unwrap_or(100_000);
        let polled = self
            .client
            .poll_messages(
                &self.stream,
                &self.topic,
                Some(partition),
                &consumer,
                &PollingStrategy::offset(from),
                count,
                false,
            )
            .await;
        let polled = self.note(polled)?;
        let mut out = Polled { events: Vec::new(), next_offset: from };
        for m in polled.messages {
            let offset = m.header.offset;
            if offset < from {
                continue;
            }
            out.next_offset = offset + 1;
            if (filter.keep)(&m.payload) {
                let corrupt = |source| LogError::Corrupt { partition, offset, source };
                out.events.push((offset, wire::decode_event(&m.payload).map_err(corrupt)?));
            }
        }
        Ok(out)
    }
}

impl EventLog for IggyLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    fn append(&self, sets: Vec<RecordSet>, _idempotency_key: Option<String>) -> LogFuture<'_, AppendReceipt> {
        // a retried request carries the same event ids, which Iggy's message deduplication drops when enabled
        Box::pin(self.send(sets))
    }

    fn enqueue(&self, sets: Vec<RecordSet>) -> LogFuture<'_, ()> {
        Box::pin(async move { self.send(sets).await.map(|_| ()) })
    }

    fn poll_where(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> LogFuture<'_, Polled> {
        Box::pin(self.inner.read(partition, from, max_events, filter))
    }

    fn poll_group(&self, group: &str, max_events: usize, filter: Filter) -> LogFuture<'_, Option<(u32, Polled)>> {
        let group = group.to_owned();
        Box::pin(async move { self.inner.poll_group(&group, max_events, filter).await })
    }

    fn poll_group_besides<'a>(
        &'a self,
        group: &str,
        max_events: usize,
        filter: Filter,
        held: &'a [u32],
    ) -> LogFuture<'a, Option<(u32, Polled)>> {
        let group = group.to_owned();
        // the server picks the partition, going round the member's: a held one means it came round to them
        Box::pin(async move {
            let polled = self.inner.poll_group(&group, max_events, filter).await?;
            Ok(polled.filter(|(partition, _)| !held.contains(partition)))
        })
    }

    fn end_offset(&self, partition: u32) -> LogFuture<'_, u64> {
        // from the topic's metadata, not by reading the partition
        Box::pin(async move {
            let topic = self.inner.client.get_topic(&self.inner.stream, &self.inner.topic).await;
            let topic = self.inner.note(topic)?.ok_or_else(|| LogError::Unavailable("the topic is gone".into()))?;
            let p = topic.partitions.iter().find(|p| p.id == partition).ok_or(LogError::NoSuchPartition(partition))?;
            // `current_offset` is the last message's offset; 0 with no message ever written
            Ok(if p.current_offset == 0 && p.messages_count == 0 { 0 } else { p.current_offset + 1 })
        })
    }

    fn commit_offset(&self, group: &str, partition: u32, next_offset: u64) -> LogFuture<'_, ()> {
        let group = group.to_owned();
        Box::pin(async move {
            let Some(last) = next_offset.checked_sub(1) else { return Ok(()) };
            let consumer = self.inner.consumer(&group).await?;
            let stored = self
                .inner
                .client
                .store_consumer_offset(&consumer, &self.inner.stream, &self.inner.topic, Some(partition), last)
                .await;
            self.inner.note(stored)
        })
    }

    fn committed_offset(&self, group: &str, partition: u32) -> LogFuture<'_, Option<u64>> {
        let group = group.to_owned();
        Box::pin(async move {
            let consumer = self.inner.consumer(&group).await?;
            let info = self
                .inner
                .client
                .get_consumer_offset(&consumer, &self.inner.stream, &self.inner.topic, Some(partition))
                .await;
            Ok(self.inner.note(info)?.map(|i| i.stored_offset + 1))
        })
    }

    fn status(&self) -> LogStatus {
        let error = self.inner.last_error.lock().ok().and_then(|e| e.clone());
        LogStatus {
            backend: "iggy",
            healthy: error.is_none(),
            error,
            partitions: self.inner.partitions,
            ..LogStatus::default()
        }
    }

    fn shutdown(&self) -> LogFuture<'_, ()> {
        Box::pin(async move {
            // queued sends are answered before the connection closes
            let _ = self.queue.reserve_many(QUEUE).await;
            let _ = self.inner.client.disconnect().await;
            Ok(())
        })
    }
}
