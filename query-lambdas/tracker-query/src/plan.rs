//! Typed queries as DataFusion plans over the filtered events of one tenant.

use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::functions_aggregate::expr_fn::{count, count_distinct};
use deltalake::datafusion::functions_aggregate::sum::sum_udaf;
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::logical_expr::expr::WindowFunction;
use deltalake::datafusion::prelude::{col, date_bin, get_field, lit};
use serde_json::{Value, json};

use crate::cold::{Shape, timestamp};
use crate::request::{parse_cursor, window_ms};
use crate::{Distinct, Query, QueryError, SeriesGroup};

/// Most rows (buckets times groups) a series answers; beyond, it says it was truncated.
pub(crate) const MAX_SERIES_ROWS: usize = 100_000;

impl Distinct {
    fn expr(&self) -> Expr {
        match self {
            Distinct::Ip => col("ip"),
            Distinct::Link => col("tu_id"),
            Distinct::EventType => col("event_type"),
            Distinct::Param(key) => get_field(col("params"), key.as_str()),
        }
    }
}

impl SeriesGroup {
    fn expr(&self) -> Expr {
        match self {
            SeriesGroup::EventType => col("event_type"),
            SeriesGroup::Link => col("tu_id"),
            SeriesGroup::Date => col("date"),
            SeriesGroup::Param(key) => get_field(col("params"), key.as_str()),
        }
    }
}

impl Query {
    /// The answer when the tenant has no data in the range.
    pub(crate) fn empty_answer(&self) -> Value {
        let scanned = json!({ "files": 0, "bytes": 0, "bytes_read": 0 });
        match self {
            Query::Events { .. } => json!({ "events": [], "next_cursor": null, "tier": "cold", "scanned": scanned }),
            Query::Series { .. } => json!({ "points": [], "tier": "cold", "scanned": scanned }),
            Query::Breakdown { .. } => {
                json!({ "groups": [], "other": null, "total": 0, "tier": "cold", "scanned": scanned })
            }
            Query::Match { .. } => {
                let summary = crate::matching::summary(&tracker_protocol::matching::Counts::default(), &mut []);
                json!({ "pairs": [], "summary": summary, "tier": "cold", "scanned": scanned })
            }
        }
    }

    /// The plan on top of the filtered events, and how to render its result.
    pub(crate) fn plan(&self, df: DataFrame) -> Result<(DataFrame, Shape), QueryError> {
        match self {
            Query::Events { limit, cursor, .. } => {
                let limit = limit.unwrap_or(100);
                let df = match cursor {
                    Some(c) => {
                        let (us, id) = parse_cursor(c)?;
                        let t = lit(ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())));
                        df.filter(
                            col("timestamp").gt(t.clone()).or(col("timestamp").eq(t).and(col("event_id").gt(lit(id)))),
                        )?
                    }
                    None => df,
                };
                let df = df
                    .sort(vec![col("timestamp").sort(true, false), col("event_id").sort(true, false)])?
                    .limit(0, Some(limit))?
                    .select_columns(&["event_id", "event_type", "timestamp", "tu_id", "params"])?;
                Ok((df, Shape::Events { limit }))
            }
            Query::Series { interval, group_by, .. } => {
                let stride = lit(ScalarValue::new_interval_mdn(0, 0, interval.ms() * 1_000_000));
                let bucket = date_bin(stride, col("timestamp"), timestamp(0)).alias("t");
                let group = group_by.as_ref().map(|g| g.expr().alias("group"));
                let mut keys = vec![bucket];
                keys.extend(group.clone());
                let mut order = vec![col("t").sort(true, false)];
                if group.is_some() {
                    order.push(col("group").sort(true, true));
                }
                let df = df
                    .aggregate(keys, vec![count(lit(1)).alias("count")])?
                    .sort(order)?
                    .limit(0, Some(MAX_SERIES_ROWS + 1))?;
                Ok((df, Shape::Series { grouped: group.is_some() }))
            }
            Query::Breakdown { by, top, distinct, .. } => {
                let mut aggregates = vec![count(lit(1)).alias("count")];
                aggregates.extend(distinct.as_ref().map(|d| count_distinct(d.expr()).alias("distinct")));
                // the total over every group rides along each row, so only the top N leave the engine
                let sum_all = WindowFunction::new(sum_udaf(), vec![col("count")]);
                let total = Expr::WindowFunction(Box::new(sum_all)).alias("total");
                let df = df
                    .aggregate(vec![by.expr().alias("group")], aggregates)?
                    .window(vec![total])?
                    .sort(vec![col("count").sort(false, true), col("group").sort(true, true)])?
                    .limit(0, Some(top.unwrap_or(10)))?;
                Ok((df, Shape::Breakdown { top: top.unwrap_or(10), distinct: distinct.is_some() }))
            }
            Query::Match { filters, trigger, on, window_secs, .. } => {
                let results_from = timestamp(filters.from.saturating_sub(window_ms(*window_secs)));
                let df = df
                    .filter(get_field(col("params"), on.as_str()).is_not_null())?
                    .filter(col("event_type").eq(lit(trigger.as_str())).or(col("timestamp").gt_eq(results_from)))?
                    .select(vec![
                        get_field(col("params"), on.as_str()).alias("k"),
                        col("timestamp"),
                        col("event_id"),
                        col("event_type").eq(lit(trigger.as_str())).alias("is_trigger"),
                    ])?
                    .sort(vec![
                        col("k").sort(true, false),
                        col("timestamp").sort(true, false),
                        col("event_id").sort(true, false),
                    ])?;
                Ok((df, Shape::Match))
            }
        }
    }
}
