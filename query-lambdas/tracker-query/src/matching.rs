//! The match on the cold tier: DataFusion sorts the two event types by key and time (spilling to disk beyond the
//! query's memory limit), and the shared pairing ([`tracker_protocol::matching`]) runs key by key over the sorted
//! stream, so memory holds one key's events at a time (at most `MAX_KEY_EVENTS`), not the range's.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use deltalake::datafusion::physical_plan::{ExecutionPlan, execute_stream};
use deltalake::datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::{Value, json};
use tracker_protocol::matching::{Counts, Rules, pair_key};

use crate::QueryError;

/// Upper bounds (ms) of the time-to-result histogram's buckets; the last bucket is open.
const HISTOGRAM_MS: [i64; 6] = [60_000, 600_000, 3_600_000, 21_600_000, 86_400_000, 604_800_000];

/// Most events one key value may have in a match: a key that common (a constant param) is not an identifier to
/// match on, and pairing it would hold them all in memory.
const MAX_KEY_EVENTS: usize = 1_000_000;

/// One key's events so far: `(time ms, event id)`.
#[derive(Debug, Default)]
struct Group {
    key: Option<String>,
    triggers: Vec<(i64, String)>,
    results: Vec<(i64, String)>,
}

/// Pairs the sorted stream of `plan` (`k`, `timestamp`, `event_id`, `is_trigger`); returns up to `limit` pairs,
/// the counts and every pair's time to result.
pub(crate) async fn pair(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
    rules: Rules,
    limit: usize,
) -> Result<(Vec<Value>, Counts, Vec<i64>), QueryError> {
    let mut stream = execute_stream(plan, ctx.task_ctx())?;
    let (mut pairs, mut counts, mut deltas) = (Vec::new(), Counts::default(), Vec::new());
    let mut group = Group::default();
    let mut flush = |g: &mut Group, counts: &mut Counts| {
        let key = g.key.take().unwrap_or_default();
        pair_key(&g.triggers, &g.results, &rules, counts, |t, r| {
            deltas.push(r.0 - t.0);
            if pairs.len() < limit {
                pairs.push(json!({
                    "key": key,
                    "trigger_event_id": t.1,
                    "result_event_id": r.1,
                    "time_delta_ms": r.0 - t.0,
                }));
            }
        });
        g.triggers.clear();
        g.results.clear();
    };
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch?;
        let column = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| QueryError::Invalid("unexpected match columns".into()))
        };
        let keys = deltalake::arrow::compute::cast(&column("k")?, &DataType::Utf8)?;
        let ids = deltalake::arrow::compute::cast(&column("event_id")?, &DataType::Utf8)?;
        let times = deltalake::arrow::compute::cast(
            &column("timestamp")?,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?;
        let is_trigger = column("is_trigger")?;
        let (keys, ids) = (keys.as_string::<i32>(), ids.as_string::<i32>());
        let (times, is_trigger) = (times.as_primitive::<TimestampMicrosecondType>(), is_trigger.as_boolean());
        for i in 0..batch.num_rows() {
            if keys.is_null(i) {
                continue;
            }
            let key = keys.value(i);
            if group.key.as_deref() != Some(key) {
                if group.key.is_some() {
                    flush(&mut group, &mut counts);
                }
                group.key = Some(key.to_owned());
            }
            if group.triggers.len() + group.results.len() >= MAX_KEY_EVENTS {
                return Err(QueryError::Invalid(format!(
                    "more than {MAX_KEY_EVENTS} events share one value of the match key: match on an identifier"
                )));
            }
            let event = (times.value(i).div_euclid(1000), ids.value(i).to_owned());
            if is_trigger.value(i) { group.triggers.push(event) } else { group.results.push(event) }
        }
    }
    if group.key.is_some() {
        flush(&mut group, &mut counts);
    }
    Ok((pairs, counts, deltas))
}

/// The summary of a match: counts, rate, time-to-result percentiles and histogram.
pub(crate) fn summary(counts: &Counts, deltas: &mut [i64]) -> Value {
    deltas.sort_unstable();
    let at = |q: f64| {
        let last = deltas.len().saturating_sub(1);
        deltas.get(((last as f64) * q).round() as usize).copied()
    };
    let time_delta = if deltas.is_empty() {
        Value::Null
    } else {
        json!({ "min": at(0.0), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0) })
    };
    let mut histogram = Vec::new();
    let mut below = 0;
    for le in HISTOGRAM_MS {
        let n = deltas.partition_point(|d| *d <= le);
        histogram.push(json!({ "le_ms": le, "count": n - below }));
        below = n;
    }
    histogram.push(json!({ "le_ms": null, "count": deltas.len() - below }));
    json!({
        "triggers": counts.triggers,
        "results": counts.results,
        "matched": counts.matched,
        "unmatched_results": counts.results - counts.matched,
        "match_rate": counts.match_rate(),
        "time_delta_ms": time_delta,
        "histogram": histogram,
    })
}
