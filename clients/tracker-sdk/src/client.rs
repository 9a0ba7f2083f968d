//! The batch client: events queued in memory and sent to `POST <base>/batch` with an ingest token, durable on the
//! platform when a send succeeds.
//!
//! - A batch goes when `batch_size` events are queued, every `flush_interval`, on [`Client::flush`] and on
//!   [`Client::close`].
//! - Every batch carries an `Idempotency-Key`, the same on every retry, and every event its own `event_id`: a batch
//!   retried after a lost answer is stored once.
//! - Network errors, `408`, `429` and `5xx` are retried with exponential backoff and full jitter, waiting at least
//!   what `Retry-After` asks (in seconds or as an HTTP date); other `4xx` are final and go to `on_error`.
//! - The client sends from a task of its own (so create it inside a Tokio runtime). A client dropped without
//!   [`Client::close`] still sends what is queued, from a task on the runtime it is dropped in, as long as that
//!   runtime runs; `close` is how to know it was sent.
//! - The queue is bounded (`max_queue`). When it is full, [`Client::track`] refuses the new event with
//!   [`Error::NotQueued`]: the caller learns of it at once, and what is already queued keeps its order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::Error;

/// One event, as `/batch` takes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrackEvent {
    pub event_type: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Default: a new UUIDv7 (the platform's dedup key: keep it when you resend an event yourself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When it happened, ms since the epoch. Default: when it was tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_payload: Option<serde_json::Value>,
}

impl TrackEvent {
    pub fn new(event_type: impl Into<String>) -> Self {
        TrackEvent { event_type: event_type.into(), ..Self::default() }
    }

    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }
}

/// One event the platform refused (the rest of its batch was stored).
#[derive(Debug, Clone, Deserialize)]
pub struct Rejected {
    pub index: usize,
    pub code: String,
    pub message: String,
}

/// The platform's answer to a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The platform had stored this batch before (a retry of one whose answer was lost).
    #[serde(default)]
    pub duplicate: bool,
}

type OnError = Arc<dyn Fn(&Error, &[TrackEvent]) + Send + Sync>;
type OnRejected = Arc<dyn Fn(&[(Rejected, TrackEvent)]) + Send + Sync>;

/// How a [`Client`] sends; [`ClientOptions::new`] has the defaults.
#[derive(Clone)]
pub struct ClientOptions {
    /// The platform's base URL, e.g. `https://track.example.com`.
    pub base_url: String,
    /// An ingest token (`trk_ing_...`).
    pub token: String,
    pub batch_size: usize,
    /// Time between background sends (zero: only by size, `flush`, `close` and drop).
    pub flush_interval: Duration,
    pub max_queue: usize,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this (a monthly quota) ends the attempts at once.
    pub max_retry_after: Duration,
    /// A batch that could not be sent, with why; its events are no longer queued.
    pub on_error: Option<OnError>,
    /// Events the platform refused one by one.
    pub on_rejected: Option<OnRejected>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive() // never the token
    }
}

impl ClientOptions {
    /// Batches of 100, every second, at most 10,000 queued, 8 attempts from 200 ms up to 30 s apart, a
    /// `Retry-After` of at most 60 s waited for.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientOptions {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            batch_size: 100,
            flush_interval: Duration::from_secs(1),
            max_queue: 10_000,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            on_error: None,
            on_rejected: None,
        }
    }
}

struct Shared {
    options: ClientOptions,
    http: reqwest::Client,
    queue: Mutex<VecDeque<TrackEvent>>,
    /// One batch on the wire at a time: events keep their order.
    sending: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    wake: Notify,
}

/// The batch client. Create it inside a Tokio runtime: it sends from a task of its own.
///
/// ```no_run
/// # async fn example() -> Result<(), tracker_sdk::Error> {
/// use tracker_sdk::{Client, ClientOptions, TrackEvent};
///
/// let client = Client::new(ClientOptions::new("https://track.example.com", "trk_ing_..."));
/// client.track(TrackEvent::new("purchase").param("order", "o-1"))?;
/// client.close().await?; // on shutdown: sends what is queued
/// # Ok(()) }
/// ```
pub struct Client {
    shared: Arc<Shared>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("options", &self.shared.options).field("pending", &self.pending()).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Client {
    pub fn new(options: ClientOptions) -> Self {
        let interval = options.flush_interval;
        let shared = Arc::new(Shared {
            options,
            http: reqwest::Client::new(),
            queue: Mutex::new(VecDeque::new()),
            sending: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let ticker = {
            let shared = Arc::downgrade(&shared);
            tokio::spawn(async move {
                loop {
                    let Some(s) = shared.upgrade() else { return };
                    if interval.is_zero() {
                        s.wake.notified().await;
                    } else {
                        let _ = tokio::time::timeout(interval, s.wake.notified()).await;
                    }
                    if s.closed.load(Ordering::Acquire) {
                        return; // `close` (or dropping the client) sends the rest
                    }
                    // failures went to on_error; the task lives on
                    let _ = flush(&s).await;
                }
            })
        };
        Client { shared, ticker: Some(ticker) }
    }

    /// Events queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.shared.queue.lock().map_or(0, |q| q.len())
    }

    /// Queues an event (with an `event_id` and `timestamp` if it has none).
    pub fn track(&self, mut event: TrackEvent) -> Result<(), Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::NotQueued("the client is closed"));
        }
        let now = now_ms();
        event.event_id.get_or_insert_with(|| tracker_protocol::new_event_id(now, rand::random()).to_string());
        event.timestamp.get_or_insert(now);
        let mut queue = self.shared.queue.lock().map_err(|_| Error::NotQueued("the queue is poisoned"))?;
        if queue.len() >= self.shared.options.max_queue {
            return Err(Error::NotQueued("the queue is full"));
        }
        queue.push_back(event);
        if queue.len() >= self.shared.options.batch_size {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Sends everything queued; how many events the platform took. The first failed batch ends it (its events
    /// went to `on_error`; later ones stay queued).
    pub async fn flush(&self) -> Result<usize, Error> {
        flush(&self.shared).await
    }

    /// Refuses new events and sends what is queued.
    pub async fn close(mut self) -> Result<usize, Error> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.await;
        }
        flush(&self.shared).await
    }
}

impl Drop for Client {
    /// Not closed: a task on the current runtime sends what is queued (a batch the sending task has on the wire is
    /// finished, never aborted, which would lose it).
    fn drop(&mut self) {
        if self.ticker.take().is_none() {
            return; // closed
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if self.pending() > 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = self.shared.clone();
            runtime.spawn(async move { flush(&shared).await });
        }
    }
}

async fn flush(s: &Shared) -> Result<usize, Error> {
    let _wire = s.sending.lock().await;
    let mut accepted = 0;
    loop {
        let batch: Vec<TrackEvent> = {
            let mut queue = s.queue.lock().map_err(|_| Error::NotQueued("the queue is poisoned"))?;
            let n = queue.len().min(s.options.batch_size);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(accepted);
        }
        accepted += send(s, &batch).await?;
    }
}

/// Full jitter over the exponential ceiling of `attempt`.
fn backoff(o: &ClientOptions, attempt: u32) -> Duration {
    let ceiling = o.initial_backoff.saturating_mul(1 << (attempt - 1).min(20)).min(o.max_backoff);
    ceiling.mul_f64(rand::random::<f64>())
}

/// `Retry-After`: seconds, or an HTTP date (a date already past is no wait).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

async fn send(s: &Shared, batch: &[TrackEvent]) -> Result<usize, Error> {
    let o = &s.options;
    let key = tracker_protocol::new_event_id(now_ms(), rand::random()).to_string();
    let body = serde_json::to_vec(batch).map_err(|e| Error::Network(e.to_string()))?;
    let mut error = Error::Network("not sent".into());
    for attempt in 1..=o.max_attempts.max(1) {
        let mut wait = None;
        let mut request = s
            .http
            .post(format!("{}/batch", o.base_url))
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(body.clone());
        if !o.token.is_empty() {
            request = request.bearer_auth(&o.token);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => {
                // an answer cut short is retried like a lost one: the idempotency key makes the retry a no-op
                let answer: BatchAnswer = match answer.json().await {
                    Ok(answer) => answer,
                    Err(e) => {
                        error = Error::Network(e.to_string());
                        if attempt == o.max_attempts {
                            break;
                        }
                        tokio::time::sleep(backoff(o, attempt)).await;
                        continue;
                    }
                };
                if let Some(on_rejected) = &o.on_rejected
                    && !answer.rejected.is_empty()
                {
                    let refused: Vec<_> = answer
                        .rejected
                        .iter()
                        .filter_map(|r| batch.get(r.index).map(|e| (r.clone(), e.clone())))
                        .collect();
                    on_rejected(&refused);
                }
                return Ok(answer.accepted);
            }
            Ok(answer) => {
                let status = answer.status().as_u16();
                let after = answer.headers().get("retry-after").and_then(|v| retry_after(v.to_str().ok()?));
                let text = answer.text().await.unwrap_or_default();
                error = Error::from_answer(status, &text);
                wait = after;
                if !retryable(status) || wait.is_some_and(|w| w > o.max_retry_after) {
                    break;
                }
            }
            Err(e) => error = Error::Network(e.to_string()),
        }
        if attempt == o.max_attempts {
            break;
        }
        // never sooner than the platform asked
        tokio::time::sleep(wait.unwrap_or_default().max(backoff(o, attempt))).await;
    }
    if let Some(on_error) = &o.on_error {
        on_error(&error, batch);
    }
    Err(error)
}
