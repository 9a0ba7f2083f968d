//! # Cold queries
//!
//! The questions tenants ask of their full history, as typed requests (never SQL text from the caller), answered
//! with DataFusion over the archive's `events` Delta table.
//!
//! Tenant isolation is by construction: a query's table provider is built from the list of the caller's data
//! files (partition `tenant` = the caller, `date` within the requested range), read from the table's log. Other
//! tenants' files are not in the plan at all, whatever the filters say; a tenant with no files gets an empty
//! scan, never a full one. Param keys and values are bound as literals in expressions, never spliced into SQL.
//! Every answer reports the files and bytes the scan read.

#[cfg(feature = "engines")]
mod cold;
#[cfg(feature = "engines")]
mod matching;
#[cfg(feature = "engines")]
mod plan;
mod request;
pub mod router;
#[cfg(feature = "engines")]
pub mod warm;

#[cfg(feature = "engines")]
pub use cold::{Archive, Scanned, answer};
pub use request::{Distinct, Filters, Interval, MAX_WARM_DAYS, Query, SeriesGroup, Touch, warm_refusal};

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong (a 400).
    #[error("{0}")]
    Invalid(String),
    #[cfg(feature = "engines")]
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[cfg(feature = "engines")]
    #[error("datafusion: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[cfg(feature = "engines")]
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[cfg(feature = "engines")]
    #[error("archive: {0}")]
    Archive(#[from] tracker_archive::ArchiveError),
    /// The tier asked cannot answer this query (a 400 when the caller chose the tier).
    #[error("{0}")]
    Unsupported(String),
    #[cfg(feature = "engines")]
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("storage: {0}")]
    Storage(String),
}

const MS_PER_DAY: i64 = 86_400_000;
/// The longest range one query may cover.
pub const MAX_RANGE_MS: i64 = 400 * MS_PER_DAY;
