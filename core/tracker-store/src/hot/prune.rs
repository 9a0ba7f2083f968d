//! Retention in small steps: each step is one short transaction, so the consumers' writes wait for at most one
//! step, never for a whole pass over millions of rows.

use super::HotStore;
use crate::{Result, text};

/// Segments one step deletes at most.
const SEGMENTS_PER_STEP: i64 = 8;

/// Where a pruning pass is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PruneAt {
    /// Events received before the retention, oldest positions first.
    #[default]
    Events,
    /// Counts per minute, one tenant per step (after this one; `None`: from the first).
    Counts(Option<String>),
    /// Counts per param value, one tenant and param per step (after these; `None`: from the first).
    ParamCounts(Option<(String, String)>),
    /// The drop ledger, its samples, usage marks and last month's capped ids (small tables), in one step.
    Rest,
    /// The pass is over.
    Done,
}

impl HotStore {
    /// One step of a pruning pass at `at`: deletes the segments of events received before `events_before` and the
    /// oldest while the segments take more than `max_event_bytes`, then counts, ledger rows and samples older than
    /// `counts_before`. Returns the events deleted and where the pass goes on.
    pub async fn prune_step(
        &self,
        at: &PruneAt,
        events_before: i64,
        max_event_bytes: u64,
        counts_before: i64,
    ) -> Result<(u64, PruneAt)> {
        let mut expired = Vec::new();
        let conn = self.db.derived_tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let (deleted, next) = match at {
            PruneAt::Events => {
                // whole segments, by arrival: an old event stored late (a consumer catching up) is in a new
                // segment and goes with it
                let (n, ids, more) =
                    self.expire_segments(&tx, events_before, max_event_bytes, SEGMENTS_PER_STEP).await?;
                expired = ids;
                (n, if more { PruneAt::Events } else { PruneAt::Counts(None) })
            }
            PruneAt::Counts(after) => {
                let mut rows = match after {
                    Some(after) => {
                        tx.query(
                            "SELECT key_prefix FROM hot_counts WHERE key_prefix > ?1 ORDER BY key_prefix LIMIT 1",
                            [after.as_str()],
                        )
                        .await?
                    }
                    None => tx.query("SELECT key_prefix FROM hot_counts ORDER BY key_prefix LIMIT 1", ()).await?,
                };
                let tenant = match rows.next().await? {
                    Some(row) => Some(text(&row, 0, "key_prefix")?),
                    None => None,
                };
                drop(rows);
                match tenant {
                    Some(t) => {
                        tx.execute(
                            "DELETE FROM hot_counts WHERE key_prefix = ?1 AND minute < ?2",
                            (t.as_str(), counts_before),
                        )
                        .await?;
                        (0, PruneAt::Counts(Some(t)))
                    }
                    None => (0, PruneAt::ParamCounts(None)),
                }
            }
            PruneAt::ParamCounts(after) => {
                let mut rows = match after {
                    Some((tenant, name)) => {
                        tx.query(
                            "SELECT key_prefix, name FROM hot_param_counts WHERE (key_prefix, name) > (?1, ?2)
                             ORDER BY key_prefix, name LIMIT 1",
                            (tenant.as_str(), name.as_str()),
                        )
                        .await?
                    }
                    None => {
                        tx.query("SELECT key_prefix, name FROM hot_param_counts ORDER BY key_prefix, name LIMIT 1", ())
                            .await?
                    }
                };
                let pair = match rows.next().await? {
                    Some(row) => Some((text(&row, 0, "key_prefix")?, text(&row, 1, "name")?)),
                    None => None,
                };
                drop(rows);
                match pair {
                    Some((t, n)) => {
                        tx.execute(
                            "DELETE FROM hot_param_counts WHERE key_prefix = ?1 AND name = ?2 AND minute < ?3",
                            (t.as_str(), n.as_str(), counts_before),
                        )
                        .await?;
                        (0, PruneAt::ParamCounts(Some((t, n))))
                    }
                    None => (0, PruneAt::Rest),
                }
            }
            PruneAt::Rest => {
                tx.execute("DELETE FROM hot_drops WHERE hour < ?1", [counts_before]).await?;
                tx.execute("DELETE FROM hot_drop_samples WHERE hour < ?1", [counts_before]).await?;
                tx.execute("DELETE FROM usage_marks WHERE at < ?1", [counts_before]).await?;
                // the ids counted against hard caps are needed for the current month only
                let month = tracker_protocol::quota::month_start(counts_before);
                tx.execute("DELETE FROM quota_ids WHERE month < ?1", [month]).await?;
                (0, PruneAt::Done)
            }
            PruneAt::Done => (0, PruneAt::Done),
        };
        tx.commit().await?;
        self.forget(&expired);
        Ok((deleted, next))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Location;
    use crate::hot::{EventQuery, GroupBy, StatsQuery};
    use tracker_protocol::Event;

    const DAY: i64 = 86_400_000;

    fn event(n: u64, at: i64) -> Event {
        crate::hot::test_event(n, &format!("t{}", n % 3), at, at, &[("campaign", format!("c{}", n % 5))])
    }

    #[tokio::test]
    async fn a_pass_in_small_steps_deletes_what_is_past_retention_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&Location::File(dir.path().join("hot.db"))).await.unwrap();
        let now = super::super::params::now_ms();
        // 4,500 events ten days old, then 300 of today
        let old: Vec<Event> = (0..4500).map(|n| event(n, now - 10 * DAY + i64::try_from(n).unwrap())).collect();
        let new: Vec<Event> = (4500..4800).map(|n| event(n, now - 1000)).collect();
        for (i, batch) in old.chunks(500).enumerate() {
            hot.apply_events("stats", 0, (i as u64 + 1) * 500, batch).await.unwrap();
        }
        hot.apply_events("stats", 0, 4800, &new).await.unwrap();
        // events kept three days, counts five: everything old goes
        let (mut at, mut steps, mut deleted) = (PruneAt::default(), 0, 0);
        while at != PruneAt::Done {
            let (n, next) = hot.prune_step(&at, now - 3 * DAY, u64::MAX, now - 5 * DAY).await.unwrap();
            (at, steps, deleted) = (next, steps + 1, deleted + n);
        }
        assert_eq!(deleted, 4500);
        // two steps of events (eight segments, then one), one per tenant of counts and of param counts and the end
        // of each, the rest
        assert_eq!(steps, 2 + 4 + 4 + 1, "small steps");
        let page = hot.events("t1", &EventQuery { limit: 1000, ..EventQuery::default() }).await.unwrap();
        assert_eq!(page.events.len(), 100, "today's events stay");
        let q = |group_by| StatsQuery {
            from: 0,
            to: now,
            bucket_ms: DAY,
            group_by,
            event_type: None,
            tu_id: None,
            param: None,
        };
        for t in ["t0", "t1", "t2"] {
            let all: i64 = hot.stats(t, &q(GroupBy::None)).await.unwrap().iter().map(|p| p.count).sum();
            let by: i64 =
                hot.stats(t, &q(GroupBy::Param("campaign".into()))).await.unwrap().iter().map(|p| p.count).sum();
            assert_eq!((all, by), (100, 100), "{t}: only today's counts");
            // the floor: the latest event time of the tenant no longer held
            let lost = old.iter().filter(|e| e.key_prefix == t).map(|e| e.timestamp).max();
            assert_eq!(hot.floor(t).await.unwrap(), lost);
        }
    }

    #[tokio::test]
    async fn past_the_byte_bound_the_oldest_segments_go_first_and_the_floor_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&Location::File(dir.path().join("hot.db"))).await.unwrap();
        let now = super::super::params::now_ms();
        let events: Vec<Event> = (0..3000).map(|n| event(n, now - 3000 + i64::try_from(n).unwrap())).collect();
        for (i, batch) in events.chunks(1000).enumerate() {
            hot.apply_events("stats", 0, (i as u64 + 1) * 1000, batch).await.unwrap();
        }
        let (segments, rows, bytes) = hot.segment_totals().await.unwrap();
        assert_eq!((segments, rows), (3, 3000));
        // nothing is past its time, but the segments take more than two thirds of their bytes allow
        let (deleted, next) = hot.prune_step(&PruneAt::Events, now - DAY, bytes * 2 / 3, now - DAY).await.unwrap();
        assert_eq!((deleted, next), (1000, PruneAt::Counts(None)));
        assert_eq!(hot.segment_totals().await.unwrap().1, 2000);
        let first = |t: &str| events.iter().take(1000).filter(|e| e.key_prefix == t).map(|e| e.timestamp).max();
        for t in ["t0", "t1", "t2"] {
            assert_eq!(hot.floor(t).await.unwrap(), first(t));
            let page = hot.events(t, &EventQuery { limit: 5000, ..EventQuery::default() }).await.unwrap();
            assert!(page.events.len() > 600, "{t}: the later segments stay");
        }
    }
}
