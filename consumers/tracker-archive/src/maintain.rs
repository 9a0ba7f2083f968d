//! Table maintenance: per-tenant retention deletes, `OPTIMIZE`, a checkpoint, expired-log cleanup and `VACUUM`.
//!
//! Safe alongside the archiver: compaction only removes files with `dataChange = false` and reads no predicate,
//! so appends committed meanwhile never conflict with it (and it keeps the application transactions, so the
//! archiver's positions survive it). A retention delete does conflict with an append that read the files it
//! removed; the archiver retries its commit. Two compactions of the same files must never run at once (both
//! would commit and duplicate rows): callers run [`maintain`] from one place at a time (the consumer holds a
//! lease).

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::datafusion::prelude::{col, lit};
use deltalake::{DeltaTable, TableProperty};

use crate::{ArchiveError, ArchiveSettings, Maintenance, Retention, Table, date_of, read_table};

impl Maintenance {
    /// The Delta table properties new tables are created with, so other Delta writers and readers agree. They
    /// are set at creation only; maintenance always uses the configured values.
    pub(crate) fn table_properties(&self) -> Vec<(String, Option<String>)> {
        let secs = |d: Duration| format!("interval {} seconds", d.as_secs());
        vec![
            (TableProperty::TargetFileSize.as_ref().into(), Some(self.target_file_size.to_string())),
            (TableProperty::DeletedFileRetentionDuration.as_ref().into(), Some(secs(self.vacuum_retention))),
            (TableProperty::LogRetentionDuration.as_ref().into(), Some(secs(self.log_retention))),
            // the expired-log cleanup lists the whole log: once per maintenance run, not after every commit
            (TableProperty::EnableExpiredLogCleanup.as_ref().into(), Some("false".into())),
        ]
    }
}

/// What one maintenance run did, per table (`[events, rollups]`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Files removed by retention deletes.
    pub expired_files: [usize; 2],
    /// Files `OPTIMIZE` replaced, and the files it wrote.
    pub compacted: [(usize, usize); 2],
    /// Log files deleted (older than the log retention and a checkpoint).
    pub expired_logs: [usize; 2],
    /// Data files `VACUUM` deleted.
    pub vacuumed: [usize; 2],
    /// Bytes of each tenant's data files in both tables after the run (what it stores).
    pub stored_bytes: std::collections::BTreeMap<String, u64>,
}

/// One maintenance run over both tables, at `now_ms`.
pub async fn maintain(
    settings: &ArchiveSettings,
    retention: &[Retention],
    now_ms: i64,
) -> Result<MaintenanceReport, ArchiveError> {
    let mut report = MaintenanceReport::default();
    for (i, table) in Table::ALL.into_iter().enumerate() {
        let Some(delta) = read_table(settings, table).await? else {
            continue; // the archiver has not created it yet
        };
        let (delta, expired) = expire(delta, retention, now_ms).await?;
        let (delta, compacted) = compact(delta, &settings.maintenance).await?;
        if compacted.0 > 0 || expired > 0 {
            deltalake::checkpoints::create_checkpoint(&delta, None).await?;
        }
        let expired_logs = deltalake::checkpoints::cleanup_metadata(&delta, None).await?;
        for (tenant, bytes) in stored_bytes(&delta).await? {
            *report.stored_bytes.entry(tenant).or_default() += bytes;
        }
        let vacuumed = vacuum(delta, &settings.maintenance).await?;
        if let (Some(e), Some(c), Some(l), Some(v)) = (
            report.expired_files.get_mut(i),
            report.compacted.get_mut(i),
            report.expired_logs.get_mut(i),
            report.vacuumed.get_mut(i),
        ) {
            (*e, *c, *l, *v) = (expired, compacted, expired_logs, vacuumed);
        }
    }
    Ok(report)
}

/// Bytes of each tenant's data files in the table's current version (VACUUM removes only files no version
/// references, so this is what the tenant stores).
async fn stored_bytes(delta: &DeltaTable) -> Result<std::collections::BTreeMap<String, u64>, ArchiveError> {
    use futures::TryStreamExt as _;
    let files: Vec<_> = delta.get_active_add_actions_by_partitions(&[]).try_collect().await?;
    let mut out = std::collections::BTreeMap::new();
    for f in files {
        if let Some(Some(tenant)) = f.partition_values_map().remove("tenant") {
            *out.entry(tenant).or_default() += u64::try_from(f.size()).unwrap_or(0);
        }
    }
    Ok(out)
}

/// Deletes each tenant's partitions older than its retention: whole files, no rewrite (the predicate names only
/// partition columns, built as an expression, never as SQL text).
async fn expire(
    mut delta: DeltaTable,
    retention: &[Retention],
    now_ms: i64,
) -> Result<(DeltaTable, usize), ArchiveError> {
    let mut removed = 0;
    for r in retention {
        let cutoff = date_of(now_ms.saturating_sub(i64::from(r.keep_days) * 86_400_000));
        let predicate = col("tenant").eq(lit(r.tenant.as_str())).and(col("date").lt(lit(cutoff)));
        let (next, metrics) = delta.delete().with_predicate(predicate).await?;
        removed += metrics.num_removed_files;
        delta = next;
    }
    Ok((delta, removed))
}

async fn compact(delta: DeltaTable, m: &Maintenance) -> Result<(DeltaTable, (usize, usize)), ArchiveError> {
    let target = NonZeroU64::new(m.target_file_size.max(1024 * 1024)).unwrap_or(NonZeroU64::MIN);
    // one task: compaction shares the machine with ingestion
    let (delta, metrics) = delta.optimize().with_target_size(target).with_max_concurrent_tasks(1).await?;
    Ok((delta, (metrics.num_files_removed as usize, metrics.num_files_added as usize)))
}

async fn vacuum(delta: DeltaTable, m: &Maintenance) -> Result<usize, ArchiveError> {
    let retention = chrono::Duration::from_std(m.vacuum_retention).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = delta
        .vacuum()
        .with_retention_period(retention)
        // the configured retention is the authority (it is also the table's property for other writers)
        .with_enforce_retention_duration(false)
        // full: also files of commits that never happened (a writer stopped between its data files and its commit)
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .await?;
    Ok(metrics.files_deleted.len())
}
