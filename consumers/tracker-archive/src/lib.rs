//! # The archiver
//!
//! Filtered events into two open Delta Lake tables under one base location (a local directory, or
//! `s3://bucket/prefix` on S3 or Cloudflare R2), both partitioned by tenant and UTC date:
//!
//! * `<base>/events`: every event, with a typed schema: params are a `map<string, string>` (queryable natively by
//!   any Delta reader), the raw payload is kept as JSON text, the short link has a column of its own;
//! * `<base>/rollups`: events per tenant, event type, link and hour, the warm tier's input.
//!
//! Exactly once without any state of its own: each commit carries, for every log partition it covers, a Delta
//! application transaction (`appId` = `tracker-archiver/<table>/<partition>`, `version` = the next log offset).
//! The tables are the only record of how far the archiver got, each on its own: a crash between the two tables'
//! commits is repaired at start-up, when each table takes only the events it does not hold yet. A crash before a
//! commit leaves at most unreferenced data files (never read; `VACUUM` removes them).
//!
//! One archiver writes an archive (the consumer holds a lease). Should a second one write at the same time (a
//! writer that lost its lease and has not noticed yet), Delta's conflict check alone would not stop it: it
//! refuses only commits racing one that moved the same application id. So before each commit the archiver
//! checks, whenever anyone else committed since its last commit, that the table's positions are still its own,
//! and stops otherwise (see `Target::fence`). Commits that conflict with a retention delete or a compaction
//! are retried on the new table version.
//!
//! [`maintain`] keeps the tables fast and bounded: per-tenant retention deletes, `OPTIMIZE` (compaction, which
//! commits alongside the archiver's appends without conflicting with them), a checkpoint, log cleanup and
//! `VACUUM`.

mod config;
mod settings;

#[cfg(feature = "delta")]
mod maintain;
#[cfg(feature = "delta")]
pub mod sample;
#[cfg(feature = "delta")]
mod schema;
#[cfg(feature = "delta")]
mod writer;

pub use config::{SETTINGS, from_settings};
pub use settings::{ArchiveError, ArchiveSettings, GROUP, Maintenance, Retention, Table, date_of, parse_base};

#[cfg(feature = "delta")]
pub use maintain::{MaintenanceReport, maintain};
#[cfg(feature = "delta")]
pub use schema::{Rollups, event_batch, event_columns, partition_columns, rollup_columns};
#[cfg(feature = "delta")]
pub use writer::{open_table, positions, read_table, run};
