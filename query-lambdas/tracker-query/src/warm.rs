//! # The warm tier
//!
//! Series and top-N breakdowns answered with Polars from the archive's `rollups` table (events per tenant, event
//! type, link and hour), which is a few rows per link and hour instead of one per event: months of history in a
//! fraction of the bytes the `events` table would need.
//!
//! What the rollups cannot answer is refused with the reason ([`QueryError::Unsupported`]), never approximated:
//! param filters and groups, minute buckets, ranges that do not start and end on the hour, distinct IPs, more
//! than [`MAX_WARM_DAYS`](crate::MAX_WARM_DAYS) days, listings and matches (see [`crate::warm_refusal`]). The
//! platform API then asks the cold tier instead.
//!
//! Isolation is the cold tier's: the frames are built from the caller's partition files only, read from the
//! table's log; other tenants' rows are never loaded.

use std::io::Cursor;

use deltalake::logstore::object_store::ObjectStoreExt;
use futures::{StreamExt, TryStreamExt};
use polars::prelude::{
    DataFrame, DataType as PlType, Expr, IntoLazy, LazyFrame, ParquetReader, SerReader, SortMultipleOptions, UnionArgs,
    col, concat, lit,
};
use serde_json::{Map, Value, json};
use tracker_archive::{ArchiveSettings, Table};

use crate::QueryError;
use crate::cold::{CachedTable, Scanned, tenant_files};
use crate::plan::MAX_SERIES_ROWS;
use crate::request::{Distinct, Interval, Query, SeriesGroup, warm_refusal};

const HOUR_MS: i64 = 3_600_000;
const DAY_US: i64 = 86_400_000_000;
/// Rollup files read at once.
const READ_AHEAD: usize = 8;

/// The warm tier: the archive's `rollups` table.
#[derive(Debug)]
pub struct Warm {
    rollups: CachedTable,
}

impl Warm {
    pub fn new(settings: ArchiveSettings) -> Warm {
        Warm { rollups: CachedTable::new(settings, Table::Rollups) }
    }

    /// Answers `query` for `tenant` from the rollups, in the cold tier's answer shape (`"tier": "warm"`).
    pub async fn answer(&self, tenant: &str, query: &Query) -> Result<Value, QueryError> {
        query.validate()?;
        if let Some(reason) = warm_refusal(query) {
            return Err(QueryError::Unsupported(reason.into()));
        }
        crate::cold::check_tenant(tenant)?;
        let filters = query.filters();
        let mut scanned = Scanned::default();
        let mut frames = Vec::new();
        if let Some(table) = self.rollups.latest().await? {
            let files = tenant_files(&table, tenant, filters.from, filters.to).await?;
            scanned.files = files.len();
            scanned.bytes = files.iter().map(|f| u64::try_from(f.size()).unwrap_or(0)).sum();
            let store = table.object_store();
            let paths: Vec<_> = files.iter().map(|f| f.object_store_path()).collect();
            let bodies: Vec<_> = futures::stream::iter(paths)
                .map(|path| {
                    let store = store.clone();
                    async move { store.get(&path).await?.bytes().await }
                })
                .buffered(READ_AHEAD)
                .try_collect()
                .await
                .map_err(|e| QueryError::Storage(e.to_string()))?;
            scanned.bytes_read = bodies.iter().map(|b| b.len() as u64).sum();
            frames = bodies;
        }
        let query = query.clone();
        let mut answer = tokio::task::spawn_blocking(move || {
            let frames = frames
                .into_iter()
                .map(|bytes| ParquetReader::new(Cursor::new(bytes)).finish().map(|df| df.lazy()))
                .collect::<Result<Vec<_>, _>>()?;
            compute(frames, &query)
        })
        .await
        .map_err(|e| QueryError::Storage(format!("warm query task: {e}")))??;
        if let Some(obj) = answer.as_object_mut() {
            obj.insert("tier".into(), json!("warm"));
            obj.insert("scanned".into(), serde_json::to_value(scanned).unwrap_or(Value::Null));
        }
        Ok(answer)
    }
}

/// The group column of a rollup row: the event type, the link, or the day (rendered as a date afterwards).
fn group_expr(group: &SeriesGroup) -> Expr {
    match group {
        SeriesGroup::EventType => col("event_type"),
        SeriesGroup::Link => col("tu_id"),
        // `warm_refusal` keeps params away; the day's start stands in for the date and is rendered below
        SeriesGroup::Date | SeriesGroup::Param(_) => col("h") - col("h") % lit(DAY_US),
    }
}

fn compute(frames: Vec<LazyFrame>, query: &Query) -> Result<Value, QueryError> {
    let filters = query.filters();
    let empty = || match query {
        Query::Breakdown { .. } => json!({ "groups": [], "other": null, "total": 0 }),
        _ => json!({ "points": [], "truncated": false }),
    };
    if frames.is_empty() {
        return Ok(empty());
    }
    let mut keep = col("h").gt_eq(lit(filters.from * 1000)).and(col("h").lt(lit(filters.to * 1000)));
    if let Some(first) = filters.event_types.first() {
        let any = filters
            .event_types
            .iter()
            .skip(1)
            .fold(col("event_type").eq(lit(first.as_str())), |e, t| e.or(col("event_type").eq(lit(t.as_str()))));
        keep = keep.and(any);
    }
    if let Some(tu) = &filters.tu_id {
        keep = keep.and(col("tu_id").eq(lit(tu.as_str())));
    }
    let rows =
        concat(frames, UnionArgs::default())?.with_column(col("hour").cast(PlType::Int64).alias("h")).filter(keep);
    match query {
        Query::Series { interval, group_by, .. } => {
            let bucket_us = match interval {
                Interval::Day => DAY_US,
                Interval::Hour | Interval::Minute => HOUR_MS * 1000,
            };
            let mut keys = vec![(col("h") - col("h") % lit(bucket_us)).alias("t")];
            keys.extend(group_by.as_ref().map(|g| group_expr(g).alias("group")));
            let mut order = vec![col("t")];
            order.extend(group_by.as_ref().map(|_| col("group")));
            let df = rows
                .group_by(keys)
                .agg([col("events").sum().alias("count")])
                .sort_by_exprs(order, SortMultipleOptions::default())
                .limit(u32::try_from(MAX_SERIES_ROWS + 1).unwrap_or(u32::MAX))
                .collect()?;
            series(&df, group_by.as_ref())
        }
        Query::Breakdown { by, top, distinct, .. } => {
            let mut aggs = vec![col("events").sum().alias("count")];
            if let Some(d) = distinct {
                let column = if *d == Distinct::EventType { "event_type" } else { "tu_id" };
                aggs.push(col(column).drop_nulls().n_unique().cast(PlType::Int64).alias("distinct"));
            }
            let df = rows
                .group_by([group_expr(by).alias("group")])
                .agg(aggs)
                .sort_by_exprs(
                    [col("count"), col("group")],
                    SortMultipleOptions::default().with_order_descending_multi([true, false]),
                )
                .collect()?;
            breakdown(&df, by, top.unwrap_or(10), distinct.is_some())
        }
        Query::Events { .. } | Query::Match { .. } => Ok(empty()),
    }
}

/// A group value as the cold tier renders it: text, `null`, or the date of a day's start.
fn group_values(df: &DataFrame, group: &SeriesGroup) -> Result<Vec<Value>, QueryError> {
    let column = df.column("group")?;
    Ok(match group {
        SeriesGroup::Date | SeriesGroup::Param(_) => column
            .i64()?
            .iter()
            .map(|us| us.map_or(Value::Null, |us| json!(tracker_archive::date_of(us.div_euclid(1000)))))
            .collect(),
        SeriesGroup::EventType | SeriesGroup::Link => {
            column.str()?.iter().map(|v| v.map_or(Value::Null, |s| json!(s))).collect()
        }
    })
}

fn series(df: &DataFrame, group: Option<&SeriesGroup>) -> Result<Value, QueryError> {
    let t = df.column("t")?.i64()?;
    let counts = df.column("count")?.i64()?;
    let groups = group.map(|g| group_values(df, g)).transpose()?;
    let mut points = Vec::with_capacity(df.height().min(MAX_SERIES_ROWS));
    for (i, (t, n)) in t.iter().zip(counts.iter()).enumerate().take(MAX_SERIES_ROWS) {
        let mut point = Map::new();
        point.insert("t".into(), json!(t.unwrap_or(0).div_euclid(1000)));
        if let Some(g) = groups.as_ref().and_then(|g| g.get(i)) {
            point.insert("group".into(), g.clone());
        }
        point.insert("count".into(), json!(n.unwrap_or(0)));
        points.push(Value::Object(point));
    }
    Ok(json!({ "points": points, "truncated": df.height() > MAX_SERIES_ROWS }))
}

fn breakdown(df: &DataFrame, by: &SeriesGroup, top: usize, distinct: bool) -> Result<Value, QueryError> {
    let counts = df.column("count")?.i64()?;
    let uniques = if distinct { Some(df.column("distinct")?.i64()?) } else { None };
    let names = group_values(df, by)?;
    let total: i64 = counts.iter().map(|n| n.unwrap_or(0)).sum();
    let mut groups = Vec::new();
    let mut listed = 0i64;
    for (i, (n, name)) in counts.iter().zip(names).enumerate().take(top) {
        let n = n.unwrap_or(0);
        listed += n;
        let mut row = Map::new();
        row.insert("group".into(), name);
        row.insert("count".into(), json!(n));
        if let Some(u) = uniques {
            row.insert("distinct".into(), json!(u.get(i).unwrap_or(0)));
        }
        groups.push(Value::Object(row));
    }
    let other = if total > listed { json!({ "count": total - listed }) } else { Value::Null };
    Ok(json!({ "groups": groups, "other": other, "total": total }))
}
