//! The cold tier: DataFusion over the archive's `events` table, scoped to the caller's data files.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::physical_plan::{ExecutionPlan, collect};
use deltalake::datafusion::prelude::{SessionConfig, SessionContext, col, get_field, lit};
use deltalake::{FilterOp, FilterValue};
use futures::TryStreamExt;
use serde_json::{Map, Value, json};
use tracker_archive::{ArchiveSettings, Table, date_of, read_table};
use tracker_protocol::matching::Rules;

use crate::request::Filters;
use crate::{Query, QueryError};

/// What a scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Scanned {
    /// Data files in the tenant's selected partitions.
    pub files: usize,
    /// Their size.
    pub bytes: u64,
    /// Bytes the Parquet reader fetched (after pruning by statistics).
    pub bytes_read: u64,
}

/// The memory one query may hold before its sorts and aggregations spill.
const MEMORY_LIMIT: usize = 512 * 1024 * 1024;

/// One of the archive's tables as the query functions see it: opened once (per Lambda cold start, or per node)
/// and brought up to date before each query by reading only the new commits.
#[derive(Debug)]
pub(crate) struct CachedTable {
    settings: ArchiveSettings,
    which: Table,
    table: tokio::sync::Mutex<Option<deltalake::DeltaTable>>,
}

impl CachedTable {
    pub(crate) fn new(settings: ArchiveSettings, which: Table) -> CachedTable {
        CachedTable { settings, which, table: tokio::sync::Mutex::new(None) }
    }

    /// The table at its latest version; `None` while the archiver has not created it.
    pub(crate) async fn latest(&self) -> Result<Option<deltalake::DeltaTable>, QueryError> {
        let mut cached = self.table.lock().await;
        match cached.as_mut() {
            Some(t) => t.update_incremental(None).await?,
            None => *cached = read_table(&self.settings, self.which).await?,
        }
        Ok(cached.clone())
    }
}

/// The cold tier: the archive's `events` table.
#[derive(Debug)]
pub struct Archive {
    events: CachedTable,
}

impl Archive {
    pub fn new(settings: ArchiveSettings) -> Archive {
        Archive { events: CachedTable::new(settings, Table::Events) }
    }

    /// Answers `query` for `tenant`.
    pub async fn answer(&self, tenant: &str, query: &Query) -> Result<Value, QueryError> {
        query.validate()?;
        answer_on(self.events.latest().await?, tenant, query).await
    }
}

/// Answers `query` for `tenant` over the archive at `settings` (opening the table for this one query).
pub async fn answer(settings: &ArchiveSettings, tenant: &str, query: &Query) -> Result<Value, QueryError> {
    query.validate()?;
    answer_on(read_table(settings, Table::Events).await?, tenant, query).await
}

pub(crate) fn check_tenant(tenant: &str) -> Result<(), QueryError> {
    match tracker_protocol::event::is_valid_key_prefix(tenant) {
        true => Ok(()),
        false => Err(QueryError::Invalid("tenant must be 2 to 32 of [a-z0-9]".into())),
    }
}

/// The tenant's data files for the days of `[from, to)`, from the table's log: the only files a plan may read.
pub(crate) async fn tenant_files(
    table: &deltalake::DeltaTable,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<Vec<deltalake::kernel::LogicalFileView>, QueryError> {
    let (first, last) = (date_of(from), date_of(to.saturating_sub(1).max(from)));
    let selection = [
        ("tenant", FilterOp::Eq, FilterValue::Scalar(tenant)),
        ("date", FilterOp::Ge, FilterValue::Scalar(&first)),
        ("date", FilterOp::Le, FilterValue::Scalar(&last)),
    ];
    Ok(table.get_active_add_actions_by_partitions(&selection).try_collect().await?)
}

async fn answer_on(table: Option<deltalake::DeltaTable>, tenant: &str, query: &Query) -> Result<Value, QueryError> {
    check_tenant(tenant)?;
    let filters = query.filters();
    let Some(table) = table else {
        return Ok(query.empty_answer());
    };
    let files = tenant_files(&table, tenant, filters.from, filters.to).await?;
    let mut scanned = Scanned {
        files: files.len(),
        bytes: files.iter().map(|f| u64::try_from(f.size()).unwrap_or(0)).sum(),
        bytes_read: 0,
    };
    if files.is_empty() {
        return Ok(query.empty_answer());
    }
    let provider =
        table.table_provider().with_file_paths(files.iter().map(|f| f.object_store_path().to_string())).await?;
    // bounded memory: sorts and aggregations beyond it spill to disk instead of growing
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(MEMORY_LIMIT, 1.0).build_arc()?;
    let mut config = SessionConfig::new();
    if matches!(query, Query::Match { .. }) {
        // one sorted stream: a sort can spill, the merge of per-core sorts cannot
        config = config.with_target_partitions(1);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let df = ctx.read_table(provider)?.filter(where_clause(tenant, &filters))?;
    let (df, shape) = query.plan(df)?;
    let plan = df.create_physical_plan().await?;
    let mut answer = match (query, shape) {
        (Query::Match { filters, window_secs, touch, limit, .. }, _) => {
            let rules = Rules { from: filters.from, window_ms: crate::request::window_ms(*window_secs), touch: *touch };
            let (pairs, counts, mut deltas) =
                crate::matching::pair(&ctx, plan.clone(), rules, limit.unwrap_or(100)).await?;
            json!({ "pairs": pairs, "summary": crate::matching::summary(&counts, &mut deltas) })
        }
        (_, shape) => shape.render(&collect(plan.clone(), ctx.task_ctx()).await?)?,
    };
    scanned.bytes_read = u64::try_from(metric(&plan, "bytes_scanned")).unwrap_or(0);
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("tier".into(), json!("cold"));
        obj.insert("scanned".into(), serde_json::to_value(scanned).unwrap_or(Value::Null));
    }
    Ok(answer)
}

pub(crate) fn timestamp(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(ms.saturating_mul(1000)), Some("UTC".into())))
}

/// The filters every query shares, as one expression. The tenant is matched again on the rows: the file
/// selection already holds only the tenant's, so this is belt and braces, not the isolation itself.
fn where_clause(tenant: &str, f: &Filters) -> Expr {
    let mut e = col("tenant")
        .eq(lit(tenant))
        .and(col("timestamp").gt_eq(timestamp(f.from)))
        .and(col("timestamp").lt(timestamp(f.to)));
    if !f.event_types.is_empty() {
        e = e.and(col("event_type").in_list(f.event_types.iter().map(|t| lit(t.as_str())).collect(), false));
    }
    if let Some(tu) = &f.tu_id {
        e = e.and(col("tu_id").eq(lit(tu.as_str())));
    }
    for (key, value) in &f.params {
        e = e.and(get_field(col("params"), key.as_str()).eq(lit(value.as_str())));
    }
    e
}

/// Sums a metric over a plan and its children.
fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own = plan.metrics().and_then(|m| m.sum_by_name(name)).map_or(0, |v| v.as_usize());
    own + plan.children().iter().map(|c| metric(c, name)).sum::<usize>()
}

/// How a query's result batches become its JSON answer.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// Event rows, with the cursor of the last one when the page is full.
    Events { limit: usize },
    /// `(bucket, group?, count)` rows.
    Series { grouped: bool },
    /// `(group, count, distinct?)` rows, largest first: the first `top` listed, the rest summed as `other`.
    Breakdown { top: usize, distinct: bool },
    /// The sorted `(key, time, id, is_trigger)` stream the match pairs.
    Match,
}

fn text(array: &dyn Array, i: usize) -> Result<Option<String>, QueryError> {
    if array.is_null(i) {
        return Ok(None);
    }
    let utf8 = deltalake::arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)?;
    Ok(Some(utf8.as_string::<i32>().value(0).to_owned()))
}

fn micros(array: &dyn Array, i: usize) -> Result<i64, QueryError> {
    let ts = deltalake::arrow::compute::cast(
        &array.slice(i, 1),
        &DataType::Timestamp(deltalake::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    Ok(ts.as_primitive::<TimestampMicrosecondType>().value(0))
}

impl Shape {
    fn render(&self, batches: &[RecordBatch]) -> Result<Value, QueryError> {
        match self {
            Shape::Events { limit } => {
                let mut events = Vec::new();
                let mut last = None;
                for b in batches {
                    let column = |name: &str| b.column_by_name(name).cloned();
                    let (Some(id), Some(ty), Some(ts), Some(tu), Some(params)) = (
                        column("event_id"),
                        column("event_type"),
                        column("timestamp"),
                        column("tu_id"),
                        column("params"),
                    ) else {
                        return Err(QueryError::Invalid("unexpected result columns".into()));
                    };
                    let params = params.as_map();
                    for i in 0..b.num_rows() {
                        let mut p = Map::new();
                        let entries = params.value(i);
                        let (keys, values) = (entries.column(0), entries.column(1));
                        for j in 0..entries.len() {
                            if let Some(k) = text(keys.as_ref(), j)? {
                                p.insert(k, text(values.as_ref(), j)?.map_or(Value::Null, Value::String));
                            }
                        }
                        let (event_id, us) = (text(id.as_ref(), i)?.unwrap_or_default(), micros(ts.as_ref(), i)?);
                        last = Some(format!("{us}:{event_id}"));
                        events.push(json!({
                            "event_id": event_id,
                            "event_type": text(ty.as_ref(), i)?,
                            "timestamp": us.div_euclid(1000),
                            "tu_id": text(tu.as_ref(), i)?,
                            "params": p,
                        }));
                    }
                }
                let next = if events.len() == *limit { last } else { None };
                Ok(json!({ "events": events, "next_cursor": next }))
            }
            Shape::Series { grouped } => {
                let mut points = Vec::new();
                let mut truncated = false;
                for b in batches {
                    let unexpected = || QueryError::Invalid("unexpected result columns".into());
                    let t = b.column_by_name("t").ok_or_else(unexpected)?;
                    let counts = b.column_by_name("count").ok_or_else(unexpected)?;
                    let counts = counts.as_primitive_opt::<Int64Type>().ok_or_else(unexpected)?;
                    let group = if *grouped { Some(b.column_by_name("group").ok_or_else(unexpected)?) } else { None };
                    for i in 0..b.num_rows() {
                        if points.len() == crate::plan::MAX_SERIES_ROWS {
                            truncated = true;
                            break;
                        }
                        let mut point = Map::new();
                        point.insert("t".into(), json!(micros(t.as_ref(), i)?.div_euclid(1000)));
                        if let Some(g) = group {
                            point.insert("group".into(), text(g.as_ref(), i)?.map_or(Value::Null, Value::String));
                        }
                        point.insert("count".into(), json!(counts.value(i)));
                        points.push(Value::Object(point));
                    }
                }
                Ok(json!({ "points": points, "truncated": truncated }))
            }
            Shape::Breakdown { top, distinct } => {
                let (mut groups, mut other, mut total) = (Vec::new(), 0i64, 0i64);
                for b in batches {
                    let unexpected = || QueryError::Invalid("unexpected result columns".into());
                    let group = b.column_by_name("group").ok_or_else(unexpected)?;
                    let counts = b.column_by_name("count").ok_or_else(unexpected)?;
                    let counts = counts.as_primitive_opt::<Int64Type>().ok_or_else(unexpected)?;
                    let uniques = match distinct {
                        true => Some(b.column_by_name("distinct").ok_or_else(unexpected)?),
                        false => None,
                    };
                    for i in 0..b.num_rows() {
                        let n = counts.value(i);
                        if let Some(all) = b.column_by_name("total").and_then(|c| c.as_primitive_opt::<Int64Type>()) {
                            total = all.value(i);
                        }
                        if groups.len() == *top {
                            continue;
                        }
                        other -= n;
                        let mut row = Map::new();
                        row.insert("group".into(), text(group.as_ref(), i)?.map_or(Value::Null, Value::String));
                        row.insert("count".into(), json!(n));
                        if let Some(u) = uniques {
                            let u = u.as_primitive_opt::<Int64Type>().ok_or_else(unexpected)?;
                            row.insert("distinct".into(), json!(u.value(i)));
                        }
                        groups.push(Value::Object(row));
                    }
                }
                // `other` has no distinct count: the values of the groups it sums may overlap
                other += total;
                let other = if other > 0 { json!({ "count": other }) } else { Value::Null };
                Ok(json!({ "groups": groups, "other": other, "total": total }))
            }
            Shape::Match => Err(QueryError::Invalid("a match is paired as it streams".into())),
        }
    }
}
