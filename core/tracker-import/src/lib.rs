//! # Moving in
//!
//! What an operator needs to bring a deployment of the system this platform replaces over without breaking what
//! is out in the world:
//!
//! - [`v1db`]: its tenants, with their key prefixes, link signing secrets, encryption keys, ingest tokens (as the
//!   hashes it kept) and short links, read from an export of its database, for
//!   `tracker_store::Store::import_tenants` (`tracker-core tenant import`);
//! - [`events`]: history into the event log (`tracker-core import`): its archive (a Delta table on a disk, S3 or
//!   R2) and generic NDJSON, CSV and Parquet files, checked as `/batch` checks events, exactly once across re-runs
//!   and crashes, resumable.

pub mod events;
pub mod rows;
pub mod sources;
pub mod v1db;

pub use events::{ImportSettings, Summary, import};
pub use sources::Format;

/// Why an import could not run (a row that cannot be imported is a [`rows::Reject`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("metadata store: {0}")]
    Store(#[from] tracker_store::StoreError),
    #[error("database export: {0}")]
    Db(#[from] libsql::Error),
    #[error("event log: {0}")]
    Log(#[from] tracker_log::LogError),
    #[error("Delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("Parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
