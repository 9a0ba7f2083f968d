//! What the archive is and where it lives: its settings, tables and errors, which a core node reads even when it
//! is built without the Delta writer (the `delta` feature).

use std::collections::HashMap;
use std::time::Duration;

/// The archiver's consumer group in the log.
pub const GROUP: &str = "archiver";
/// The archive's two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Rollups,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Events, Table::Rollups];

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Rollups => "rollups",
        }
    }

    /// The application id under which this table records how far it holds a log partition.
    pub fn app_id(self, partition: u32) -> String {
        format!("tracker-archiver/{}/{partition}", self.name())
    }
}

/// Where the archive lives and how it batches its writes.
#[derive(Clone)]
pub struct ArchiveSettings {
    /// The tables' base location: `file:///…` or `s3://bucket/prefix`.
    pub base: url::Url,
    /// Object store options (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials, ...).
    pub storage_options: HashMap<String, String>,
    /// A commit is made once this many events wait...
    pub flush_events: usize,
    /// ...or the oldest waiting event has waited this long.
    pub flush_interval: Duration,
    pub maintenance: Maintenance,
}

impl ArchiveSettings {
    /// The declared defaults ([`SETTINGS`]) for a base location: commits of up to 100,000 events or every 60 s
    /// (large files; a crash only re-reads what was not committed), maintenance every hour.
    pub fn new(base: url::Url) -> ArchiveSettings {
        crate::config::declared_defaults(base)
    }

    /// A table's location: `<base>/<name>`.
    pub fn table_url(&self, table: Table) -> url::Url {
        let mut url = self.base.clone();
        let path = format!("{}/{}", self.base.path().trim_end_matches('/'), table.name());
        url.set_path(&path);
        url
    }
}

impl std::fmt::Debug for ArchiveSettings {
    /// Storage option values stay out of logs (they include the secret key); only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<&String> = self.storage_options.keys().collect();
        f.debug_struct("ArchiveSettings")
            .field("base", &self.base.as_str())
            .field("storage_options", &options)
            .field("flush_events", &self.flush_events)
            .field("flush_interval", &self.flush_interval)
            .field("maintenance", &self.maintenance)
            .finish()
    }
}

/// Parses `ARCHIVE_URL`: `s3://bucket/prefix` (S3, R2) or a local directory (a path or `file://` URL; created
/// when the tables are opened).
pub fn parse_base(location: &str) -> Result<url::Url, ArchiveError> {
    let bad = |e: &dyn std::fmt::Display| ArchiveError::Location(format!("{location}: {e}"));
    if let Some(path) = location.strip_prefix("file://") {
        return parse_base(path);
    }
    if location.contains("://") {
        let url = url::Url::parse(location).map_err(|e| bad(&e))?;
        if !url.username().is_empty() || url.password().is_some() {
            // credentials belong in ARCHIVE_S3_* (never in a URL that ends up in logs and errors)
            return Err(ArchiveError::Location("the URL must not carry credentials: use ARCHIVE_S3_*".into()));
        }
        return match (url.scheme(), url.host_str()) {
            ("s3" | "s3a", Some(bucket)) if !bucket.is_empty() => Ok(url),
            ("s3" | "s3a", _) => Err(bad(&"names no bucket")),
            (other, _) => Err(bad(&format!("unsupported scheme {other} (s3:// or a directory)"))),
        };
    }
    let dir = std::path::absolute(location).map_err(|e| bad(&e))?;
    url::Url::from_directory_path(&dir).map_err(|()| bad(&"not a directory path"))
}

/// Why archiving failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[cfg(feature = "delta")]
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[cfg(feature = "delta")]
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("event log: {0}")]
    Log(#[from] tracker_log::LogError),
    #[error("archive location {0}")]
    Location(String),
    #[error("commit task: {0}")]
    Task(String),
    #[error("another archiver moved the {0} table's positions: stopping (a restart reads them again)")]
    Moved(&'static str),
    /// A test stopped the archiver at this point, as a crash would (see `crash_point!`).
    #[error("crash injected at {0}")]
    Injected(&'static str),
}

/// How the tables are kept.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// How often [`maintain`] runs.
    pub interval: Duration,
    /// `OPTIMIZE` bins small files into files of about this size.
    pub target_file_size: u64,
    /// `VACUUM` deletes files unreferenced for this long (readers and writers older than this must not exist).
    pub vacuum_retention: Duration,
    /// Commit files older than this (and older than a checkpoint) are deleted. Time travel reaches back the
    /// shorter of this and `vacuum_retention` (older versions' data files are gone).
    pub log_retention: Duration,
}

impl Default for Maintenance {
    /// The declared defaults ([`crate::SETTINGS`]).
    fn default() -> Self {
        crate::config::declared_maintenance()
    }
}

/// A tenant whose plan keeps events for fewer days than forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub tenant: String,
    pub keep_days: u32,
}

/// The UTC date of a time in ms since the epoch, `YYYY-MM-DD`.
pub fn date_of(ms: i64) -> String {
    let (y, m, d) = tracker_protocol::quota::ymd(ms);
    format!("{y:04}-{m:02}-{d:02}")
}
