//! The filter consumer: raw events to filtered events.
//!
//! A batch gathers what waits in every partition of the raw log, up to [`BATCH`] events; while it holds fewer than
//! a quarter of that, it waits up to `FILTER_BATCH_LINGER_MS` for more ([`gather`]): at low rates a partition holds
//! an event or two at a time, and each transaction writes rows per partition and per tenant whatever the number of
//! events. For each batch it judges every event ([`tracker_filter::judge`]: bots, then the tenant's rules, then the
//! rate rules), and then, in this order:
//!
//! 1. one hot-tier transaction records the drop ledger (and samples), each partition's range and the ids it
//!    dropped, and the filter's position after it in each partition;
//! 2. each partition's kept events are appended to the filtered log with the idempotency key
//!    `filter:<partition>:<first offset>`;
//! 3. the group's offsets are committed in the raw log, and the batches are marked done in the hot tier in the next
//!    batch's transaction 1 (or when the filter stops): a commit of its own took 8% of the filter's time in the drain
//!    benchmark.
//!
//! The hard cap is judged here, where every event of a tenant passes in order (a tenant's events share one
//! partition): an event the other rules keep counts against the tenant's monthly allowance (`quota_months`,
//! updated in transaction 1), and once a hard-capped plan's allowance is used up the rest of the month's events
//! are dropped with the reason `quota`. Crossing 80% and 100% of an allowance records a warning that the webhook
//! consumer delivers. The same transaction adds the batch's redirects and drops to the tenants' usage.
//!
//! A crash after 1 finds the batch pending at start-up and appends exactly the events the first run kept (the
//! dropped ids are in the record; the key makes a second append of a batch that did land a no-op). A crash before
//! 1 judges the batch again from scratch. So every raw event is either in the filtered log once or in the ledger
//! once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracker_filter::{Bots, RateRules, Rule, Verdict, judge};
use tracker_log::RecordSet;
use tracker_protocol::Auth;
use tracker_protocol::quota::{month_start, next_month_start};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Event, partition_for};
use tracker_store::hot::{DUPLICATE, FilterUsage, Judged, PendingBatch, PruneSeenAt, SeenKey};
use tracker_store::usage::{QuotaAlert, UNAUTHENTICATED_BUDGET, drop_metric, threshold};
use tracker_store::{MAX_PAGE, Plan};

use crate::{BATCH, CancellationToken, IDLE, Pipeline, gather, rest};

/// The filter's consumer group (and its name in the hot tier's positions).
pub const GROUP: &str = "filter";

/// The drop ledger's reason for events that carried more than they hold ([`Event::overflow`]).
pub const OVERFLOW: &str = "overflow";

/// Most events in one record set of the filtered log.
const SET_EVENTS: usize = 1024;

/// A tenant's rules and limits as the filter applies them.
#[derive(Debug)]
struct TenantFilter {
    rules: Vec<Rule>,
    /// The tenant's plan with its own limits applied; `None` for events of no tenant (the global key's v1
    /// links), which no plan meters.
    plan: Option<Plan>,
    /// Events without a credential the tenant keeps per month (`IntakeSettings::unauthenticated_monthly_events`).
    unauthenticated_budget: Option<u64>,
}

/// Tenants' rules, read again after the settings' `rules_ttl`, so changes apply without a restart.
#[derive(Debug, Default)]
struct Tenants(HashMap<String, (Instant, Arc<TenantFilter>)>);

impl Tenants {
    async fn get(&mut self, pipeline: &Pipeline, key_prefix: &str) -> Result<Arc<TenantFilter>, String> {
        if let Some((at, t)) = self.0.get(key_prefix)
            && at.elapsed() < pipeline.settings.rules_ttl
        {
            return Ok(t.clone());
        }
        let tenant = pipeline.store.tenant(key_prefix).await.map_err(|e| e.to_string())?;
        let rules = pipeline.store.rules_page(key_prefix, None, MAX_PAGE).await.map_err(|e| e.to_string())?;
        let mut compiled = Vec::new();
        for r in rules.items.iter().filter(|r| r.enabled) {
            match Rule::compile(&r.rule_id, &r.field, &r.operator, r.value.as_deref(), &r.action) {
                Ok(rule) => compiled.push(rule),
                // the API only stores rules that compile; one that does not is skipped, not fatal
                Err(e) => tracing::warn!(tenant = key_prefix, rule = %r.rule_id, error = %e.0, "filter rule skipped"),
            }
        }
        let unauthenticated_budget = tenant.as_ref().and_then(|t| t.intake.unauthenticated_monthly_events);
        let plan = tenant.map(|t| pipeline.settings.plans.or_free(&t.plan).with_limits(&t.limits));
        let t = Arc::new(TenantFilter { rules: compiled, plan, unauthenticated_budget });
        if self.0.len() > 100_000 {
            self.0.clear();
        }
        self.0.insert(key_prefix.to_owned(), (Instant::now(), t.clone()));
        Ok(t)
    }
}

/// The filter's state between batches.
#[derive(Debug)]
struct Filtering {
    bots: Bots,
    rates: RateRules,
    tenants: Tenants,
    /// Recorded batches (partition, first offset) in the filtered log, not yet marked done in the hot tier.
    appended: Vec<(u32, u64)>,
}

impl Filtering {
    fn new(pipeline: &Pipeline) -> Filtering {
        Filtering {
            bots: Bots::default(),
            rates: RateRules::new(pipeline.settings.filter_ip_per_minute),
            tenants: Tenants::default(),
            appended: Vec::new(),
        }
    }
}

/// Runs the filter until `stop` is cancelled.
pub async fn run(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let mut f = Filtering::new(&pipeline);
    let mut pruning = Pruning::default();
    // batches recorded but not appended (a crash, or an append that failed) are replayed before anything else
    let mut pending = true;
    while !stop.is_cancelled() {
        if pending {
            match recover(&pipeline).await {
                Ok(()) => pending = false,
                Err(e) => {
                    tracing::warn!(error = %e, "filter: pending batches not replayed yet; retrying");
                    rest(Duration::from_secs(1), &stop).await;
                    continue;
                }
            }
        }
        pruning.step(&pipeline).await;
        match step(&pipeline, &mut f, &stop).await {
            Ok(true) => {}
            Ok(false) => rest(IDLE, &stop).await,
            Err(e) => {
                tracing::warn!(error = %e, "filter: batch not filtered; retrying");
                pending = true;
                rest(Duration::from_secs(1), &stop).await;
            }
        }
    }
    // what is not marked yet would be appended again at the next start (a no-op, but a read of the batch)
    for (partition, from) in std::mem::take(&mut f.appended) {
        if let Err(e) = pipeline.hot.filter_done(GROUP, partition, from).await {
            tracing::warn!(error = %e, partition, "filter: appended batch not marked done; appended again at start");
        }
    }
}

/// How often the kept ids are gone through for those older than the dedup window.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The pruning of kept ids ([`tracker_store::hot::dedup`]): one small step between batches while a pass is on.
#[derive(Debug, Default)]
struct Pruning {
    /// When the last pass started.
    started: Option<Instant>,
    /// Where the pass in progress goes on.
    at: Option<PruneSeenAt>,
}

impl Pruning {
    async fn step(&mut self, pipeline: &Pipeline) {
        if self.at.is_none() && self.started.is_none_or(|s| s.elapsed() >= PRUNE_EVERY) {
            (self.started, self.at) = (Some(Instant::now()), Some(PruneSeenAt::default()));
        }
        let Some(after) = self.at else { return };
        let window = pipeline.settings.dedup_window();
        let before = crate::now_ms().saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        match pipeline.hot.prune_seen(after, before).await {
            Ok(next) => self.at = next,
            // tried again next pass
            Err(e) => {
                tracing::warn!(error = %e, "filter: pruning of kept ids failed");
                self.at = None;
            }
        }
    }
}

/// Filters one batch; `false` when nothing waited.
async fn step(pipeline: &Pipeline, f: &mut Filtering, stop: &CancellationToken) -> Result<bool, String> {
    let batches = judge_and_record(pipeline, f, stop).await?;
    for (batch, events) in &batches {
        let dropped: HashSet<u64> = batch.dropped.iter().copied().collect();
        let kept: Vec<&Event> = events.iter().filter(|(o, _)| !dropped.contains(o)).map(|(_, e)| e).collect();
        append(pipeline, batch, &kept).await?;
        f.appended.push((batch.partition, batch.from));
    }
    for (batch, _) in &batches {
        pipeline.raw.commit_offset(GROUP, batch.partition, batch.next).await.map_err(|e| e.to_string())?;
    }
    Ok(!batches.is_empty())
}

/// The first step of a batch alone, as if the process died right after it: for crash tests. `false` when
/// nothing waited.
pub async fn record_only(pipeline: &Pipeline) -> Result<bool, String> {
    // stopping: the batch does not wait for more events
    let stop = CancellationToken::new();
    stop.cancel();
    Ok(!judge_and_record(pipeline, &mut Filtering::new(pipeline), &stop).await?.is_empty())
}

/// Judges the next batch ([`gather`], waiting up to `filter_batch_linger` while it is small) and records the
/// decisions (step 1); returns each partition's batch (with the offsets it dropped) and its events.
async fn judge_and_record(
    pipeline: &Pipeline,
    f: &mut Filtering,
    stop: &CancellationToken,
) -> Result<Vec<(PendingBatch, Vec<(u64, Event)>)>, String> {
    let mut read = gather(&*pipeline.raw, &pipeline.hot, GROUP, pipeline.settings.filter_batch_linger, stop).await?;
    // a partition whose events were all filtered before (the log's offset lagged the filter's own) moves on
    for r in read.iter().filter(|r| r.events.is_empty()) {
        pipeline.raw.commit_offset(GROUP, r.partition, r.next).await.map_err(|e| e.to_string())?;
    }
    read.retain(|r| !r.events.is_empty());
    if read.is_empty() {
        return Ok(Vec::new());
    }
    let mut judged = Vec::new();
    let mut usage = FilterUsage { kept_ids: (Vec::new(), crate::now_ms()), ..FilterUsage::default() };
    // the ids the batch's tenants sent before: a resend is dropped here, once, so no tier after sees it twice
    let mut keys: Vec<Vec<SeenKey>> = Vec::with_capacity(read.len());
    let mut seen = HashSet::new();
    for r in &read {
        let partition_keys: Vec<SeenKey> =
            r.events.iter().map(|(_, e)| SeenKey::new(&e.key_prefix, &e.event_id)).collect();
        seen.extend(pipeline.hot.seen_in(r.partition, &partition_keys).await.map_err(|e| e.to_string())?);
        keys.push(partition_keys);
    }
    let keys: Vec<SeenKey> = keys.concat();
    // every event with the index of its partition's read, in order
    let events: Vec<(usize, &(u64, Event))> =
        read.iter().enumerate().flat_map(|(i, r)| r.events.iter().map(move |e| (i, e))).collect();
    // the offsets dropped, per partition's read (offsets are the partition's own)
    let mut dropped: Vec<Vec<u64>> = vec![Vec::new(); read.len()];
    // billable events so far per tenant and month: read once per batch, then counted here
    let mut months: HashMap<(String, i64), i64> = HashMap::new();
    // on hard-capped plans, the event ids already counted this month: a second copy of an event (a client's resend,
    // a replay from Iggy) is kept but not counted again, as it is billed once
    let mut counted = counted_ids(pipeline, f, events.iter().map(|(_, (_, e))| e)).await?;
    let mut alerted: HashSet<(&str, i64, i64)> = HashSet::new();
    // events without a credential kept so far per tenant and month, for tenants with a budget for them
    let mut open_months: HashMap<(String, i64), i64> = HashMap::new();
    for (&(part, (offset, e)), key) in events.iter().zip(&keys) {
        if seen.contains(key) {
            if let Some(d) = dropped.get_mut(part) {
                d.push(*offset);
            }
            judged.push(Judged { event: e, action: "drop", reason: DUPLICATE.to_owned() });
            continue;
        }
        let tenant = f.tenants.get(pipeline, &e.key_prefix).await?;
        if e.event_type == "click" && e.auth == Auth::Link {
            usage.counts.add(&e.key_prefix, e.received_at, "redirects", 1);
        }
        let verdict = match judge(e, &f.bots, &tenant.rules) {
            // imported history is judged by the tenant's rules only: the rates are live traffic's
            Verdict::Keep { flags } if e.auth == Auth::Import => Verdict::Keep { flags },
            Verdict::Keep { flags } => {
                match f.rates.check(e, tenant.plan.as_ref().and_then(|plan| plan.events_per_second).unwrap_or(0)) {
                    Some(rate) => Verdict::Drop { reason: rate.to_owned() },
                    None => Verdict::Keep { flags },
                }
            }
            drop => drop,
        };
        // past the tenant's own budget for events anyone could send: dropped before they count against its plan
        let verdict = match (verdict, tenant.unauthenticated_budget) {
            (Verdict::Keep { flags }, Some(budget)) if e.auth == Auth::None => {
                let month = month_start(e.received_at);
                let kept = match open_months.entry((e.key_prefix.clone(), month)) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(
                        pipeline
                            .hot
                            .usage_total(&e.key_prefix, "unauthenticated", month, next_month_start(e.received_at))
                            .await
                            .map_err(|e| e.to_string())?,
                    ),
                };
                if u64::try_from(*kept).unwrap_or(u64::MAX) >= budget {
                    Verdict::Drop { reason: UNAUTHENTICATED_BUDGET.to_owned() }
                } else {
                    Verdict::Keep { flags }
                }
            }
            (other, _) => other,
        };
        let verdict = match (verdict, &tenant.plan) {
            // imported history is not this month's traffic: kept whatever the allowance, metered as `imported`
            (Verdict::Keep { flags }, _) if e.auth == Auth::Import => {
                usage.counts.add(&e.key_prefix, e.received_at, "imported", 1);
                Verdict::Keep { flags }
            }
            (Verdict::Keep { flags }, Some(plan)) => {
                let month = month_start(e.received_at);
                let used = match months.entry((e.key_prefix.clone(), month)) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(pipeline.hot.quota_kept(&e.key_prefix, month).await.map_err(|e| e.to_string())?)
                    }
                };
                let allowance = i64::try_from(plan.monthly_events).unwrap_or(i64::MAX);
                // on a hard-capped plan, the event's id in its month: counted once
                let key = plan.hard_cap().then(|| (e.key_prefix.clone(), month, e.event_id.to_string()));
                let verdict = if key.as_ref().is_some_and(|k| counted.contains(k)) {
                    Verdict::Keep { flags } // a copy of an event already counted
                } else if plan.hard_cap() && *used >= allowance {
                    Verdict::Drop { reason: "quota".to_owned() }
                } else {
                    *used += 1;
                    *usage.kept.entry((e.key_prefix.clone(), month)).or_default() += 1;
                    if let Some(key) = key {
                        usage.ids.push(key.clone());
                        counted.insert(key);
                    }
                    Verdict::Keep { flags }
                };
                // 80% and 100% of the allowance reached (also when a smaller plan put the count past both at once);
                // the hot tier keeps each once per month
                for percent in [80, 100] {
                    if *used >= threshold(allowance, percent) && alerted.insert((e.key_prefix.as_str(), month, percent))
                    {
                        usage.alerts.push(QuotaAlert {
                            key_prefix: e.key_prefix.clone(),
                            month,
                            percent,
                            allowance,
                            at: e.received_at,
                        });
                    }
                }
                verdict
            }
            (other, _) => other,
        };
        match &verdict {
            Verdict::Drop { reason } => usage.counts.add(&e.key_prefix, e.received_at, drop_metric(reason), 1),
            Verdict::Keep { .. } if e.auth == Auth::None => {
                usage.counts.add(&e.key_prefix, e.received_at, "unauthenticated", 1);
                if let Some(kept) = open_months.get_mut(&(e.key_prefix.clone(), month_start(e.received_at))) {
                    *kept += 1;
                }
            }
            Verdict::Keep { .. } => {}
        }
        match verdict {
            Verdict::Keep { flags } => {
                for reason in flags {
                    judged.push(Judged { event: e, action: "flag", reason });
                }
                // what the request carried beyond the event (kept raw in it): the tenant sees it in the ledger
                if e.overflow {
                    judged.push(Judged { event: e, action: "flag", reason: OVERFLOW.to_owned() });
                }
                seen.insert(*key);
                usage.kept_ids.0.push(*key);
            }
            Verdict::Drop { reason } => {
                if let Some(d) = dropped.get_mut(part) {
                    d.push(*offset);
                }
                judged.push(Judged { event: e, action: "drop", reason });
            }
        }
    }
    let batches: Vec<PendingBatch> = read
        .iter()
        .zip(dropped)
        .map(|(r, dropped)| PendingBatch {
            partition: r.partition,
            from: r.events.first().map_or(r.next, |(o, _)| *o),
            next: r.next,
            dropped,
        })
        .collect();
    pipeline.hot.record_filtered(GROUP, &batches, &judged, &usage, &f.appended).await.map_err(|e| e.to_string())?;
    f.appended.clear();
    drop((judged, events));
    Ok(batches.into_iter().zip(read).map(|(batch, r)| (batch, r.events)).collect())
}

/// The ids of a batch's events that their hard-capped tenant's month already counted.
async fn counted_ids(
    pipeline: &Pipeline,
    f: &mut Filtering,
    events: impl Iterator<Item = &Event>,
) -> Result<HashSet<(String, i64, String)>, String> {
    let mut asked: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for e in events {
        let tenant = f.tenants.get(pipeline, &e.key_prefix).await?;
        if tenant.plan.as_ref().is_some_and(Plan::hard_cap) {
            asked.entry((e.key_prefix.clone(), month_start(e.received_at))).or_default().push(e.event_id.to_string());
        }
    }
    let mut seen = HashSet::new();
    for ((tenant, month), ids) in asked {
        for id in pipeline.hot.quota_counted(&tenant, month, &ids).await.map_err(|e| e.to_string())? {
            seen.insert((tenant.clone(), month, id));
        }
    }
    Ok(seen)
}

/// Appends a batch's kept events to the filtered log, idempotently per batch.
async fn append(pipeline: &Pipeline, batch: &PendingBatch, kept: &[&Event]) -> Result<(), String> {
    if kept.is_empty() {
        return Ok(());
    }
    let n = pipeline.filtered.partitions();
    let mut builders: BTreeMap<u32, Vec<RecordSetBuilder>> = BTreeMap::new();
    for e in kept {
        let list = builders.entry(partition_for(&e.key_prefix, n)).or_default();
        if list.last().is_none_or(|b| b.len() as usize >= SET_EVENTS) {
            list.push(RecordSetBuilder::with_capacity(64 * 1024));
        }
        if let Some(b) = list.last_mut() {
            b.push(e);
        }
    }
    let sets: Vec<RecordSet> = builders
        .into_iter()
        .flat_map(|(partition, list)| {
            list.into_iter().map(move |b| {
                let (count, tags) = (b.len(), b.tags());
                RecordSet { partition, bytes: b.finish(), count, tags }
            })
        })
        .collect();
    let key = format!("{GROUP}:{}:{}", batch.partition, batch.from);
    pipeline.filtered.append(sets, Some(key)).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Appends the kept events of batches recorded before a crash, exactly as first decided.
async fn recover(pipeline: &Pipeline) -> Result<(), String> {
    for batch in pipeline.hot.filter_pending(GROUP).await.map_err(|e| e.to_string())? {
        let dropped: HashSet<u64> = batch.dropped.iter().copied().collect();
        let mut events = Vec::new();
        let mut at = batch.from;
        while at < batch.next {
            let polled = pipeline.raw.poll(batch.partition, at, BATCH).await.map_err(|e| e.to_string())?;
            if polled.next_offset <= at {
                // the log no longer holds the rest (retention): nothing more to append
                tracing::warn!(
                    partition = batch.partition,
                    from = at,
                    "filter: pending batch partly gone from the log"
                );
                break;
            }
            events
                .extend(polled.events.into_iter().filter(|(o, _)| *o >= at && *o < batch.next && !dropped.contains(o)));
            at = polled.next_offset;
        }
        let kept: Vec<&Event> = events.iter().map(|(_, e)| e).collect();
        append(pipeline, &batch, &kept).await?;
        pipeline.hot.filter_done(GROUP, batch.partition, batch.from).await.map_err(|e| e.to_string())?;
        tracing::info!(
            partition = batch.partition,
            from = batch.from,
            kept = kept.len(),
            "filter: pending batch replayed"
        );
    }
    Ok(())
}
