//! Forwarding: events go on the Cloudflare Queue (packed into as few messages as fit), `#[event(queue)]`
//! delivers each message to the core fleet's signed, idempotent intake, retried with growing delays while the core
//! is away, and what still cannot be delivered is parked in KV and replayed once the core answers ([`crate::dlq`]),
//! never dropped.

use tracker_protocol::Event;
use tracker_protocol::intake::{BATCH_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_batch};
use worker::js_sys::{Function, Promise};
use worker::wasm_bindgen::JsCast as _;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen::closure::Closure;
use worker::{
    Context, Env, Fetch, Headers, Message, MessageBatch, MessageExt, Method, QueueContentType,
    QueueRetryOptionsBuilder, RawMessageBuilder, Request, RequestInit, ScheduleContext, ScheduledEvent, console_error,
    console_log, event,
};

use super::isolate::{ISOLATE, KV, config, with_isolate};
use super::js::{CatchWith as _, now_ms, random10, send_text};
use crate::config::EdgeConfig;
use crate::dlq::{self, DeadLetters};
use crate::pack::{intake_body, invalid_message, pack, pick, send_groups};

pub(super) const EVENTS_QUEUE: &str = "EVENTS";
pub(super) const DLQ: &str = "DLQ";

/// Puts events on the queue, packed into as few messages as fit.
pub(super) async fn enqueue(env: &Env, events: &[Event], batch_key: Option<&str>) -> Result<(), String> {
    let queue = env.queue(EVENTS_QUEUE).map_err(|e| e.to_string())?;
    let messages = pack(events, batch_key).map_err(|e| e.to_string())?;
    // raw JS strings with the text content type: no serde_wasm_bindgen pass over the body
    let text =
        |m: &String| RawMessageBuilder::new(JsValue::from_str(m)).build_with_content_type(QueueContentType::Text);
    if let [one] = messages.as_slice() {
        // the common case (a click, a postback): one message, one plain send
        return queue.send_raw(text(one)).await.map_err(|e| e.to_string());
    }
    for group in send_groups(&messages) {
        let batch: Vec<_> = messages.get(group).unwrap_or_default().iter().map(text).collect();
        queue.send_raw_batch(batch).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Queues the count of a request's refused elements for the tenant's usage. A failure is logged: the client has
/// its answer (with the refusals) either way, and no event is lost.
pub(super) async fn enqueue_invalid(env: &Env, key_prefix: &str, count: usize, batch_key: Option<&str>) {
    let message = invalid_message(key_prefix, count, batch_key);
    let raw = RawMessageBuilder::new(JsValue::from_str(&message)).build_with_content_type(QueueContentType::Text);
    let sent = match env.queue(EVENTS_QUEUE) {
        Ok(q) => q.send_raw(raw).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        console_error!("refused elements not metered ({key_prefix}: {count}): {e}");
    }
}

/// Queues events without delaying the response, each message sent as it is packed. If the queue refuses, the
/// events go straight to the core; if that fails too they are logged in full, never dropped silently.
pub(super) fn enqueue_later(env: &Env, ctx: &Context, events: Vec<Event>) {
    let bodies = match pack(&events, None) {
        Ok(b) => b,
        Err(e) => return console_error!("UNDELIVERED EVENTS (cannot serialise: {e}): {events:?}"),
    };
    let queue = env.queue(EVENTS_QUEUE).ok().map(|q| q.as_ref().clone());
    for body in bodies {
        if let Some(p) = send_guarded(queue.as_ref(), &JsValue::from_str(&body)) {
            let _ = ctx.as_ref().wait_until(&p);
        }
    }
}

/// Sends one message body on the queue binding (`None`: there is none), its fallback attached: the promise to hand
/// to `waitUntil`.
pub(super) fn send_guarded(queue: Option<&JsValue>, body: &JsValue) -> Option<Promise> {
    // the queue's own promise goes straight to waitUntil (no Rust future, closure or microtask per request); if it
    // rejects, the isolate's fallback delivers the body to the core
    let guarded = match queue.and_then(|q| send_text(q, body)) {
        Some(promise) => {
            let handler: Function = JsValue::from(fallback().bind1(&JsValue::NULL, body)).unchecked_into();
            promise.catch_with(&handler)
        }
        None => fallback().call2(&JsValue::NULL, body, &JsValue::from_str("no EVENTS queue binding")).ok(),
    };
    guarded.and_then(|p| p.dyn_into::<Promise>().ok())
}

/// The isolate's `(body, error) => Promise` fallback for queue sends that fail: deliver straight to the core, and
/// log the events in full if that fails too (never dropped silently).
pub(super) fn fallback() -> Function {
    thread_local! {
        static FALLBACK: Function = Closure::<dyn FnMut(JsValue, JsValue) -> Promise>::new(deliver_directly)
            .into_js_value()
            .unchecked_into();
    }
    FALLBACK.with(Function::clone)
}

pub(super) fn deliver_directly(body: JsValue, error: JsValue) -> Promise {
    let body = body.as_string().unwrap_or_default();
    worker::js_sys::futures::future_to_promise(async move {
        console_error!("queue send failed ({error:?}); delivering directly to the core");
        let cfg = ISOLATE.with(|i| i.borrow().as_ref().map(|i| i.config.clone()));
        let id = format!("direct-{}", hex::encode(random10()));
        let delivered = match cfg {
            // a batch id of its own, sent once: no other copy can reach another node
            Some(cfg) => deliver(&cfg, &id, &body, true).await.is_ok(),
            None => false,
        };
        if !delivered {
            console_error!("UNDELIVERED EVENTS (queue and core both failed): {body}");
        }
        Ok(JsValue::UNDEFINED)
    })
}

/// Sends one message body to the core fleet's intake: to the batch's home node, and with `failover` to the others in
/// turn if it does not take it. Returns the indices the core refused permanently.
///
/// A batch keeps to its home node while it can wait: each node's idempotency record is its own, so a node killed
/// after storing a batch but before answering, whose batch another node then took, would hold it twice once it is
/// back. Queue messages fail over only once they are older than `FAILOVER_AFTER_SECS` (the home node is not coming
/// back soon); a brief restart delays them instead.
pub(super) async fn deliver(cfg: &EdgeConfig, batch: &str, body: &str, failover: bool) -> Result<Vec<usize>, String> {
    let secret = cfg.shared_secret().ok_or("EDGE_SHARED_SECRET is not set")?;
    if cfg.core_urls.is_empty() {
        return Err("CORE_URLS is empty".into());
    }
    // spread messages over the nodes by batch id
    let start = batch.bytes().map(usize::from).sum::<usize>() % cfg.core_urls.len();
    let mut last = String::new();
    let tries = if failover { cfg.core_urls.len() } else { 1 };
    for i in 0..tries {
        let Some(base) = cfg.core_urls.get((start + i) % cfg.core_urls.len()) else { continue };
        let ts = now_ms();
        let sig = sign_batch(secret, ts, batch, body.as_bytes()).ok_or("cannot sign")?;
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set(SIGNATURE_HEADER, &sig);
        let _ = headers.set(TIMESTAMP_HEADER, &ts.to_string());
        let _ = headers.set(BATCH_ID_HEADER, batch);
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(body)));
        let req =
            Request::new_with_init(&format!("{base}/internal/v1/edge/batches"), &init).map_err(|e| e.to_string())?;
        match Fetch::Request(req).send().await {
            Ok(mut res) if res.status_code() == 200 => {
                #[derive(serde::Deserialize)]
                struct Rejected {
                    index: usize,
                }
                #[derive(serde::Deserialize)]
                struct Answer {
                    rejected: Vec<Rejected>,
                }
                let answer: Answer = res.json().await.map_err(|e| e.to_string())?;
                return Ok(answer.rejected.into_iter().map(|r| r.index).collect());
            }
            Ok(res) => last = format!("{base} answered {}", res.status_code()),
            Err(e) => last = format!("{base}: {e}"),
        }
    }
    Err(last)
}

/// Sends text to the dead-letter queue; `false` if it could not.
pub(super) async fn dead_letter(env: &Env, text: &str) -> bool {
    let message = RawMessageBuilder::new(JsValue::from_str(text)).build_with_content_type(QueueContentType::Text);
    match env.queue(DLQ) {
        Ok(q) => q.send_raw(message).await.is_ok(),
        Err(_) => false,
    }
}

/// Acknowledges a message whose outcome is safely stored somewhere, or hands it back to the queue.
pub(super) fn settle(msg: &Message<String>, stored: bool) {
    if stored { msg.ack() } else { msg.retry() }
}

#[event(queue)]
pub async fn queue(batch: MessageBatch<String>, env: Env, _ctx: Context) -> worker::Result<()> {
    let cfg = config(&env).map_err(worker::Error::RustError)?;
    let parking = batch.queue() == cfg.dlq_name;
    let messages: Vec<Message<String>> = batch.messages()?;
    for msg in messages {
        let body = msg.body().clone();
        if parking {
            // what the queue gave up on: an envelope is parked for replay (with the batch id it was sent with, or
            // the letter's own), anything else is kept for inspection
            let stored = match intake_body(&body, &msg.id()) {
                Some((batch, _)) if dlq::is_replayable(&body) => park(&env, &batch, &body).await,
                _ => put_kv(&env, &dlq::refused_key(now_ms(), &msg.id()), body).await,
            };
            settle(&msg, stored);
            continue;
        }
        let Some((batch, forward)) = intake_body(&body, &msg.id()) else {
            // not an events envelope: nothing the core could take; dead-letter it as it is
            settle(&msg, dead_letter(&env, &body).await);
            continue;
        };
        let age = now_ms() - i64::try_from(msg.timestamp().as_millis()).unwrap_or(0);
        let failover = age >= i64::from(cfg.failover_after_secs) * 1000;
        match deliver(&cfg, &batch, &forward, failover).await {
            Ok(rejected) if rejected.is_empty() => msg.ack(),
            Ok(rejected) => {
                // permanently refused by the core: dead-lettered with the reason, not dropped
                settle(&msg, dead_letter(&env, &refused_letter(&body, &rejected)).await);
            }
            Err(e) => {
                if dlq::should_park(age, cfg.park_after_secs) && park(&env, &batch, &body).await {
                    console_error!("message {} parked in KV after {} s without the core ({e})", msg.id(), age / 1000);
                    msg.ack();
                    continue;
                }
                let delay = dlq::retry_delay_secs(age, cfg.retry_min_delay_secs, cfg.retry_max_delay_secs);
                console_error!("forwarding message {} failed on every core node ({e}); retried in {delay} s", msg.id());
                msg.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay).build());
            }
        }
    }
    Ok(())
}

/// The letter kept for events the core refused for good.
fn refused_letter(body: &str, rejected: &[usize]) -> String {
    let events = pick(body, rejected);
    let events: Vec<_> = events.iter().map(|e| serde_json::value::RawValue::from_string(e.clone()).ok()).collect();
    serde_json::json!({ "reason": "refused_by_core", "events": events }).to_string()
}

async fn put_kv(env: &Env, key: &str, value: String) -> bool {
    match env.kv(KV) {
        Ok(kv) => match kv.put(key, value) {
            Ok(put) => put.execute().await.is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// Parks a message for replay (never expiring), with the batch id it was sent with.
async fn park(env: &Env, batch: &str, body: &str) -> bool {
    match dlq::park_body(body, batch) {
        Some(text) => put_kv(env, &dlq::parked_key(now_ms(), batch), text).await,
        None => false,
    }
}

/// Messages one replay run takes at most: each costs a KV read, a request to the core and a KV delete, within the
/// subrequests an invocation may make.
const REPLAY_PER_RUN: u64 = 250;

/// Replays parked messages to the core, oldest first, until none is left, the run's share is done, or the core
/// fails to take one (it is still away: the next run tries again). Exactly once: each is sent with the batch id it
/// always had, and deleted only once the core has it.
pub(super) async fn replay(env: &Env, cfg: &EdgeConfig) -> Result<dlq::Replay, String> {
    let kv = env.kv(KV).map_err(|e| e.to_string())?;
    let page = kv
        .list()
        .prefix(dlq::PARKED_PREFIX.to_owned())
        .limit(REPLAY_PER_RUN)
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    let mut report = dlq::Replay::default();
    let listed = u32::try_from(page.keys.len()).unwrap_or(u32::MAX);
    for key in &page.keys {
        // a key deleted moments ago may still be listed: nothing to do
        let Ok(Some(text)) = kv.get(&key.name).text().await else { continue };
        let delivered = match intake_body(&text, &key.name) {
            // parked messages are older than any failover delay
            Some((batch, forward)) => deliver(cfg, &batch, &forward, true).await,
            None => Ok(Vec::new()),
        };
        match delivered {
            Ok(rejected) => {
                if !rejected.is_empty() {
                    let kept = dlq::refused_key(now_ms(), &key.name);
                    if !put_kv(env, &kept, refused_letter(&text, &rejected)).await {
                        return Err(format!("could not keep the refused events of {}", key.name));
                    }
                    report.refused += 1;
                } else {
                    report.replayed += 1;
                }
                kv.delete(&key.name).await.map_err(|e| e.to_string())?;
            }
            Err(e) => {
                console_error!("replay of parked messages stopped at {}: {e}", key.name);
                report.core_unavailable = true;
                break;
            }
        }
    }
    report.left = listed.saturating_sub(report.replayed + report.refused);
    if report.replayed + report.refused > 0 || report.core_unavailable {
        console_log!("parked messages: {report:?}{}", if page.list_complete { "" } else { " (more listed next run)" });
    }
    with_isolate(|i| i.dead_letters = None);
    Ok(report)
}

/// The scheduled run (`[triggers] crons` in `wrangler.toml`): parked messages go back to the core once it answers.
#[event(scheduled)]
pub async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match config(&env) {
        Ok(cfg) => {
            if let Err(e) = replay(&env, &cfg).await {
                console_error!("replay of parked messages failed: {e}");
            }
        }
        Err(e) => console_error!("bad Worker configuration: {e}"),
    }
}

/// How many messages are parked (for replay) and kept (refused) in KV, counted at most once per 30 s per isolate.
pub(super) async fn dead_letters(env: &Env) -> DeadLetters {
    let now = now_ms();
    if let Some(Some((counts, at))) = with_isolate(|i| i.dead_letters)
        && now - at < 30_000
    {
        return counts;
    }
    let Ok(kv) = env.kv(KV) else { return DeadLetters::default() };
    let mut counts = DeadLetters { complete: true, ..DeadLetters::default() };
    for (prefix, n) in [(dlq::PARKED_PREFIX, &mut counts.parked), (dlq::REFUSED_PREFIX, &mut counts.refused)] {
        match kv.list().prefix(prefix.to_owned()).execute().await {
            Ok(page) => {
                *n = u32::try_from(page.keys.len()).unwrap_or(u32::MAX);
                counts.complete &= page.list_complete;
            }
            Err(_) => counts.complete = false,
        }
    }
    with_isolate(|i| i.dead_letters = Some((counts, now)));
    counts
}
