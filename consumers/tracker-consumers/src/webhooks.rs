//! The webhook consumer and its dispatcher.
//!
//! The consumer reads filtered events and queues one delivery per matching endpoint of the event's tenant (event
//! types, param values, and only events received after the endpoint was created), in the metadata transaction
//! that moves its position ([`tracker_store::Store::queue_deliveries`]): nothing queued twice, nothing missed.
//!
//! The dispatcher sends what is due, oldest first, at most `concurrency` at a time per endpoint (so a slow
//! endpoint holds back only itself), each attempt signed afresh (`Tracker-Signature: t=<now>,v1=...`, so a
//! receiver can refuse replays) with the delivery id for dedup. A failure is retried with capped exponential
//! backoff and jitter; after `max_attempts` the delivery is dead-lettered, and after `disable_after` consecutive
//! failed attempts the endpoint is disabled. Tenants read the log and the dead letters, and redeliver, through
//! the platform API. With `concurrency` 1 an endpoint receives first attempts in event order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tracker_log::Filter;
use tracker_protocol::Event;
use tracker_protocol::settings::{Section, SettingError, Settings, Unit, var};
use tracker_store::{AttemptOutcome, DueDelivery, MAX_PAGE, NewDelivery, Webhook};

use crate::delivery::{self, Delivery};
use crate::{BATCH, CancellationToken, IDLE, Pipeline, now_ms, rest};

/// The webhook consumer's group (and its name among the metadata store's consumer positions).
pub const GROUP: &str = "webhooks";

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Let deliveries reach private, loopback and link-local addresses (development and tests only).
    pub allow_private: bool,
    /// Deliveries in flight at once per endpoint.
    pub concurrency: u32,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; each further one doubles, up to `retry_max`, with jitter (50-100%).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consecutive failed attempts after which an endpoint is disabled.
    pub disable_after: u32,
    /// How long delivered entries stay in the delivery log; dead letters stay four times as long.
    pub log_retention: Duration,
    /// How long a claimed delivery is its dispatcher's alone: a dispatcher that dies mid-attempt delays its
    /// deliveries by this much. Longer than an attempt can take (the client's 10 s timeout).
    pub lease: Duration,
}

/// The webhook variables: the one declaration of their defaults (the README's Webhooks table is rendered from it).
pub const SETTINGS: Section = Section {
    title: "Webhooks",
    variables: &[
        var(
            "WEBHOOK_ALLOW_PRIVATE",
            "false",
            "let webhooks reach private, loopback and link-local addresses (development and tests only)",
        ),
        var(
            "WEBHOOK_ENDPOINT_CONCURRENCY",
            "4",
            "deliveries in flight at once per webhook endpoint (1 = in event order)",
        ),
        var("WEBHOOK_MAX_ATTEMPTS", "12", "attempts before a delivery goes to the dead-letter list"),
        var("WEBHOOK_RETRY_BASE_MS", "10000", "first retry delay; doubles per attempt, with 50-100% jitter"),
        var("WEBHOOK_RETRY_MAX_MS", "3600000", "longest retry delay"),
        var("WEBHOOK_DISABLE_AFTER_FAILURES", "50", "consecutive failed attempts after which an endpoint is disabled"),
        var(
            "WEBHOOK_LOG_RETENTION_HOURS",
            "168",
            "how long delivered entries stay in the delivery log (dead letters 4x)",
        ),
        var(
            "WEBHOOK_LEASE_SECS",
            "60",
            "how long a claimed delivery is its dispatcher's alone (11 to 3600): one that dies mid-attempt delays \
             its deliveries this long",
        ),
    ],
};

impl WebhookSettings {
    /// Reads the settings declared in [`SETTINGS`] (which `src` must include).
    pub fn from_settings<F: Fn(&str) -> Option<String>>(src: &Settings<'_, F>) -> Result<Self, SettingError> {
        Ok(WebhookSettings {
            allow_private: src.flag("WEBHOOK_ALLOW_PRIVATE")?,
            concurrency: src.number("WEBHOOK_ENDPOINT_CONCURRENCY", 1..=1024)?,
            max_attempts: src.number("WEBHOOK_MAX_ATTEMPTS", 1..=1000)?,
            retry_base: src.duration("WEBHOOK_RETRY_BASE_MS", Unit::Millis)?.max(Duration::from_millis(1)),
            retry_max: src.duration("WEBHOOK_RETRY_MAX_MS", Unit::Millis)?.max(Duration::from_millis(1)),
            disable_after: src.number("WEBHOOK_DISABLE_AFTER_FAILURES", 1..=1_000_000)?,
            log_retention: src.duration("WEBHOOK_LOG_RETENTION_HOURS", Unit::Hours)?,
            lease: Duration::from_secs(src.number("WEBHOOK_LEASE_SECS", 11..=3600)?),
        })
    }
}

impl Default for WebhookSettings {
    /// The declared defaults.
    fn default() -> Self {
        let declared = Settings::new(core::slice::from_ref(&SETTINGS), |_: &str| None);
        Self::from_settings(&declared).expect("the declared defaults are valid (tested)")
    }
}

impl WebhookSettings {
    /// The delay before retry number `attempt` (1 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_base.as_millis() as f64;
        let capped =
            (base * 2f64.powi(attempt.saturating_sub(1).min(40) as i32)).min(self.retry_max.as_millis() as f64);
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        Duration::from_millis((capped * jitter) as u64)
    }
}

/// Runs the consumer and the dispatcher until `stop` is cancelled.
pub async fn run(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    tokio::join!(queue(pipeline.clone(), stop.clone()), dispatch(pipeline, stop));
}

/// Whether an endpoint wants an event.
pub fn wants(hook: &Webhook, e: &Event) -> bool {
    hook.enabled
        && e.received_at >= hook.created_at
        && (hook.event_types.is_empty() || hook.event_types.contains(&e.event_type))
        && hook.param_filters.iter().all(|(k, v)| e.params.get(k) == Some(v))
}

#[derive(Debug, Default)]
struct Endpoints(HashMap<String, (Instant, Arc<Vec<Webhook>>)>);

impl Endpoints {
    async fn get(&mut self, pipeline: &Pipeline, key_prefix: &str) -> Result<Arc<Vec<Webhook>>, String> {
        if let Some((at, hooks)) = self.0.get(key_prefix)
            && at.elapsed() < pipeline.settings.rules_ttl
        {
            return Ok(hooks.clone());
        }
        let mut hooks = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = pipeline
                .store
                .webhooks_page(key_prefix, after.as_deref(), MAX_PAGE)
                .await
                .map_err(|e| e.to_string())?;
            hooks.extend(page.items.into_iter().filter(|h| h.enabled));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let hooks = Arc::new(hooks);
        if self.0.len() > 100_000 {
            self.0.clear();
        }
        self.0.insert(key_prefix.to_owned(), (Instant::now(), hooks.clone()));
        Ok(hooks)
    }
}

/// The event type (`Tracker-Event`) and body `type` of allowance warnings.
pub const USAGE_THRESHOLD: &str = "usage.threshold";

/// Whether an endpoint wants allowance warnings: every enabled endpoint that takes all event types or lists
/// `usage.threshold` (param filters select events, and a warning has no params).
pub fn wants_notice(hook: &Webhook) -> bool {
    hook.enabled && (hook.event_types.is_empty() || hook.event_types.iter().any(|t| t == USAGE_THRESHOLD))
}

/// Turns the filter's allowance crossings into deliveries (once per endpoint: the delivery's event id is
/// `usage:<month>:<percent>`), then marks them notified. A crash in between queues them again, and the
/// deliveries' uniqueness makes that a no-op.
async fn notify_alerts(pipeline: &Pipeline, endpoints: &mut Endpoints) -> Result<(), String> {
    for a in pipeline.hot.pending_alerts(100).await.map_err(|e| e.to_string())? {
        let period = tracker_protocol::quota::month_name(a.month);
        let data = serde_json::json!({
            "key_prefix": a.key_prefix,
            "period": period,
            "percent": a.percent,
            "allowance": a.allowance,
            "used": tracker_store::usage::threshold(a.allowance, a.percent),
            "at": a.at,
        })
        .to_string();
        let hooks = endpoints.get(pipeline, &a.key_prefix).await?;
        let notices: Vec<NewDelivery> = hooks
            .iter()
            .filter(|h| wants_notice(h))
            .map(|h| NewDelivery {
                key_prefix: a.key_prefix.clone(),
                webhook_id: h.webhook_id.clone(),
                event_id: format!("usage:{period}:{}", a.percent),
                event_type: USAGE_THRESHOLD.to_owned(),
                data: data.clone(),
                kind: USAGE_THRESHOLD,
            })
            .collect();
        pipeline.store.queue_notices(&notices, now_ms()).await.map_err(|e| e.to_string())?;
        if a.percent >= 100
            && let Some(edge) = &pipeline.settings.edge
        {
            // a hard-capped tenant is blocked from now on: the edge reads its record again
            edge.purge(format!("tenant:{}", a.key_prefix));
        }
        pipeline.hot.alert_notified(&a).await.map_err(|e| e.to_string())?;
        let endpoints = notices.len();
        tracing::info!(tenant = %a.key_prefix, percent = a.percent, endpoints, "allowance warning queued");
    }
    Ok(())
}

async fn queue(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let mut endpoints = Endpoints::default();
    let mut alerts_at: Option<Instant> = None;
    while !stop.is_cancelled() {
        if alerts_at.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
            alerts_at = Some(Instant::now());
            if let Err(e) = notify_alerts(&pipeline, &mut endpoints).await {
                tracing::warn!(error = %e, "webhooks: allowance warnings not queued; retrying");
            }
        }
        match queue_step(&pipeline, &mut endpoints).await {
            Ok(true) => {}
            Ok(false) => rest(IDLE, &stop).await,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: batch not queued; retrying");
                rest(Duration::from_secs(1), &stop).await;
            }
        }
    }
}

/// Queues the deliveries of one batch; `false` when nothing waited.
async fn queue_step(pipeline: &Pipeline, endpoints: &mut Endpoints) -> Result<bool, String> {
    let Some((partition, polled)) =
        pipeline.filtered.poll_group(GROUP, BATCH, Filter::ALL).await.map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let done = pipeline.store.consumer_offset(GROUP, partition).await.map_err(|e| e.to_string())?;
    let polled =
        tracker_log::resume_at(&*pipeline.filtered, partition, polled, done, BATCH).await.map_err(|e| e.to_string())?;
    let next = polled.next_offset.max(done);
    let mut deliveries = Vec::new();
    for (_, e) in polled.events.iter().filter(|(o, _)| *o >= done) {
        let hooks = endpoints.get(pipeline, &e.key_prefix).await?;
        for hook in hooks.iter().filter(|h| wants(h, e)) {
            deliveries.push(NewDelivery {
                key_prefix: e.key_prefix.clone(),
                webhook_id: hook.webhook_id.clone(),
                event_id: e.event_id.to_string(),
                event_type: e.event_type.clone(),
                data: serde_json::to_string(e).map_err(|e| e.to_string())?,
                kind: "event",
            });
        }
    }
    if next > done {
        pipeline
            .store
            .queue_deliveries(GROUP, partition, next, &deliveries, now_ms())
            .await
            .map_err(|e| e.to_string())?;
    }
    pipeline.filtered.commit_offset(GROUP, partition, next).await.map_err(|e| e.to_string())?;
    Ok(true)
}

const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most deliveries the dispatcher claims per round.
const DUE_BATCH: u32 = 512;

async fn dispatch(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let client = match delivery::client(pipeline.settings.webhooks.allow_private) {
        Ok(c) => c,
        Err(e) => {
            // deliveries stay queued; nothing is sent through a client without the address guard
            tracing::error!(error = %e, "webhooks: no deliveries");
            return;
        }
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let mut pruned: Option<Instant> = None;
    let s = &pipeline.settings.webhooks;
    let lease_ms = i64::try_from(s.lease.as_millis()).unwrap_or(i64::MAX);
    while !stop.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            let keep = i64::try_from(s.log_retention.as_millis()).unwrap_or(i64::MAX);
            let now = now_ms();
            let dead_keep = keep.saturating_mul(4);
            if let Err(e) =
                pipeline.store.prune_deliveries(now.saturating_sub(keep), now.saturating_sub(dead_keep)).await
            {
                tracing::warn!(error = %e, "webhooks: delivery log not pruned");
            }
        }
        let due = match pipeline.store.claim_deliveries(now_ms(), lease_ms, s.concurrency.max(1), DUE_BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read due deliveries");
                rest(Duration::from_secs(1), &stop).await;
                continue;
            }
        };
        // a claimed delivery is leased to this dispatcher: no later claim returns it while it is in flight
        for d in due {
            let (pipeline, client, wake) = (pipeline.clone(), client.clone(), wake.clone());
            tasks.spawn(async move {
                send(&pipeline, &client, &d).await;
                // a slot of its endpoint is free: claim the next delivery now, not at the next tick
                wake.notify_one();
            });
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // attempts in flight finish (each is bounded by the client's timeout) and are recorded
    while tasks.join_next().await.is_some() {}
}

/// One attempt of one delivery, and its record.
async fn send(pipeline: &Pipeline, client: &reqwest::Client, d: &DueDelivery) {
    let s = &pipeline.settings.webhooks;
    let now = now_ms();
    let outcome = match pipeline.store.open_webhook_secret(&d.webhook_id, d.secret.clone()) {
        Err(e) => AttemptOutcome::Failed {
            status: None,
            error: format!("the endpoint's secret cannot be opened: {e}"),
            retry_at: None,
        },
        Ok(secret) => {
            let id = serde_json::Value::String(d.delivery_id.clone());
            let kind = serde_json::Value::String(d.kind.clone());
            let body = format!(r#"{{"id":{id},"type":{kind},"created_at":{now},"data":{}}}"#, d.data);
            let delivery = Delivery {
                url: &d.url,
                secret: &secret,
                event_type: &d.event_type,
                delivery_id: &d.delivery_id,
                body: body.into_bytes(),
            };
            let attempt = delivery::deliver(client, delivery, s.allow_private, now / 1000).await;
            match (attempt.delivered, attempt.status) {
                (true, Some(status)) => AttemptOutcome::Delivered { status },
                (_, status) => {
                    let made = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
                    let retry_at = (made < s.max_attempts)
                        .then(|| now_ms() + i64::try_from(s.backoff(made).as_millis()).unwrap_or(i64::MAX / 2));
                    AttemptOutcome::Failed { status, error: attempt.error.unwrap_or_default(), retry_at }
                }
            }
        }
    };
    let result = match &outcome {
        AttemptOutcome::Delivered { .. } => "delivered",
        AttemptOutcome::Failed { retry_at: Some(_), .. } => "failed",
        AttemptOutcome::Failed { retry_at: None, .. } => "dead_lettered",
    };
    metrics::counter!("tracker_webhook_attempts_total", "outcome" => result).increment(1);
    match pipeline.store.record_attempt(d, &outcome, s.disable_after, now_ms()).await {
        Ok(true) => {
            metrics::counter!("tracker_webhook_endpoints_disabled_total").increment(1);
            tracing::warn!(
                webhook = %d.webhook_id,
                tenant = %d.key_prefix,
                "webhook endpoint disabled after repeated failures"
            )
        }
        Ok(false) => {}
        // not recorded: the delivery stays due and is sent again (receivers dedup by delivery id)
        Err(e) => tracing::warn!(delivery = %d.delivery_id, error = %e, "webhooks: attempt not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_defaults_are_valid() {
        let s = WebhookSettings::default();
        assert_eq!((s.concurrency, s.max_attempts, s.disable_after), (4, 12, 50));
        assert_eq!((s.retry_base.as_secs(), s.retry_max.as_secs()), (10, 3600));
        assert!(!s.allow_private);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let s = WebhookSettings {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            ..Default::default()
        };
        for (attempt, full) in
            [(1u32, 10_000u128), (2, 20_000), (3, 40_000), (9, 2_560_000), (10, 3_600_000), (30, 3_600_000)]
        {
            for _ in 0..50 {
                let d = s.backoff(attempt).as_millis();
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms outside {}..={full}", full / 2);
            }
        }
        // twelve attempts spread over hours
        let total: u128 = (1..12).map(|a| s.backoff(a).as_millis()).sum();
        assert!(total > 3_600_000, "{total}");
    }
}
