//! # The hot tier
//!
//! What the stats and filter consumers write and the platform API's `/api/events*` and `/api/drops*` routes read:
//! a libSQL database of its own (a local file by default, `HOT_DATABASE_URL` for a shared one), so event writes
//! never contend with the metadata's writers.
//!
//! - **Recent events** as columnar segments ([`segments`]), kept for the hot retention, for listings, param
//!   filters and the event match.
//! - **Counts** per tenant, minute, event type and short link (`hot_counts`), and per param value
//!   (`hot_param_counts`) of params with few values (an id-like param is answered from the events, see
//!   [`params`]), kept longer, for time series and breakdowns.
//! - **The drop ledger**: events the filter dropped or flagged, per tenant, hour, action and reason, with a sample.
//! - **The ids the filter kept** (`hot_kept_ids`, see [`dedup`]): each tenant's `event_id` passes the filter once.
//!
//! Exactly once: a batch's segment and counts commit in the transaction that also moves the consumer's offset,
//! and a copy of an event the segments already hold (same tenant, time and id) is skipped. Every statement is
//! a constant or built from constant fragments; every value (tenant, event type, param key and value, times) is a
//! bound parameter, and every query takes the tenant as its first condition.

pub mod dedup;
mod ledger;
mod matching;
mod params;
mod prune;
mod reads;
mod recent;
mod schema;
mod segments;
mod writes;

use crate::db::Db;
use crate::{Location, Result, int};
pub use dedup::{DUPLICATE, PruneSeenAt, SeenKey};
pub use ledger::DropRow;
pub use matching::{MatchAnswer, MatchPair, MatchQuery, MatchSummary};
pub use params::MIN_EVENTS as UNBOUNDED_AFTER_EVENTS;
pub use prune::PruneAt;
pub use reads::{EventPage, EventQuery, GroupBy, SeriesPoint, StatsQuery};
use schema::{MIGRATIONS, SCHEMA};
pub use writes::{FilterUsage, Judged, PendingBatch};

/// Sample events kept per tenant, hour, action and reason in the drop ledger.
pub const SAMPLES_PER_REASON: i64 = 10;
/// Most rows a stats answer holds; a wider question must narrow its range or grouping.
pub const MAX_SERIES_ROWS: usize = 20_000;
/// Most triggers, and most results, one match reads from the hot tier (about 100 bytes each in memory).
pub const MAX_MATCH_ROWS: usize = 500_000;

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The hot-tier database.
#[derive(Clone)]
pub struct HotStore {
    db: Db,
    /// The stats consumer's watch on param cardinality ([`params`]).
    cardinality: std::sync::Arc<std::sync::Mutex<params::Cardinality>>,
    /// Decoded segments ([`segments`]).
    segments: segments::Shared,
    /// Whether ids kept by an earlier version are still there to read ([`dedup`]).
    legacy_ids: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The ids this process's filter kept lately ([`recent`]).
    recent: std::sync::Arc<std::sync::Mutex<recent::Recent>>,
}

impl std::fmt::Debug for HotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotStore").finish_non_exhaustive()
    }
}

impl HotStore {
    pub async fn connect(location: &Location) -> Result<HotStore> {
        let schema = format!("{SCHEMA}{}", crate::usage::USAGE_SCHEMA);
        // the consumers' transactions (their output and position) commit with `Durability::Derived`
        let db = Db::connect_with(location, &schema, MIGRATIONS, true).await?;
        let hot = HotStore {
            db,
            cardinality: Default::default(),
            segments: Default::default(),
            legacy_ids: Default::default(),
            recent: Default::default(),
        };
        hot.read_legacy_ids().await?;
        Ok(hot)
    }

    /// Rows this process's statements inserted, updated or deleted in the hot tier since it was opened: what a
    /// hosted libSQL bills as rows written (also the metric [`crate::HOT_ROWS_WRITTEN`]).
    pub fn rows_written(&self) -> u64 {
        self.db.rows_written()
    }

    pub async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT next_offset FROM hot_offsets WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(partition)),
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(u64::try_from(int(&row, 0, "next_offset")?).unwrap_or(0)),
            None => Ok(0),
        }
    }
}

/// A click for the hot tier's tests: `n` its id, with `params`.
#[cfg(test)]
pub(crate) fn test_event(
    n: u64,
    tenant: &str,
    ts: i64,
    received_at: i64,
    params: &[(&str, String)],
) -> tracker_protocol::Event {
    tracker_protocol::Event {
        event_id: tracker_protocol::Uuid::from_u64_pair(0x7e57, n),
        event_type: "click".into(),
        timestamp: ts,
        received_at,
        key_prefix: tenant.into(),
        ip: None,
        user_agent: None,
        referer: None,
        accept_language: None,
        request_path: None,
        request_host: None,
        params: params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        raw_payload: None,
        auth: tracker_protocol::Auth::Link,
        historical: false,
        overflow: false,
    }
}
