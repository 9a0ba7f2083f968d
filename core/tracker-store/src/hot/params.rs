//! Which params the hot tier counts per value: only those of bounded cardinality.
//!
//! A count per param value per minute is cheap for a campaign or a country (a few values, one row per value and
//! minute however many events) and as costly as the events themselves for an id such as a click id (a row per
//! event, kept for the counts' retention: days longer than the events). So the stats consumer watches, per tenant
//! and param, how many of the rows it writes are new: once a param has had at least [`MIN_EVENTS`] events in an
//! hour and at least one new row for every two of them, it is **unbounded**. It is recorded in `hot_param_names`
//! (in the batch's transaction), its count rows are deleted, and from then on its values are answered from the
//! events ([`HotStore::unbounded_params`]): exact within the hot retention, and nothing for a range before it (the
//! query router takes such ranges to the archive).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{HOUR_MS, HotStore};
use crate::{Result, text};

/// Events a param needs within an hour before its cardinality is judged.
pub const MIN_EVENTS: u32 = 1_000;
/// How often a stats consumer reads again which params are unbounded (another instance may have found one).
const RELOAD: Duration = Duration::from_secs(60);
/// Most `(tenant, param)` pairs watched within an hour (a flood of random param names restarts the hour's tally).
const MAX_WATCHED: usize = 100_000;

/// The stats consumer's view of param cardinality: what is known to be unbounded, and this hour's tally.
#[derive(Debug, Default)]
pub(super) struct Cardinality {
    /// Unbounded params by tenant.
    unbounded: HashMap<String, HashSet<String>>,
    loaded: Option<Instant>,
    hour: i64,
    /// Events and new count rows per `(tenant, param)` this hour.
    tally: HashMap<(String, String), (u32, u32)>,
}

impl Cardinality {
    /// The unbounded params by tenant, for one batch.
    pub(super) fn snapshot(&self) -> HashMap<String, HashSet<String>> {
        self.unbounded.clone()
    }

    pub(super) fn needs_reload(&self) -> bool {
        self.loaded.is_none_or(|at| at.elapsed() >= RELOAD)
    }

    pub(super) fn reloaded(&mut self, unbounded: HashSet<(String, String)>) {
        self.unbounded.clear();
        self.found(unbounded);
        self.loaded = Some(Instant::now());
    }

    /// Adds a batch's events and new rows per `(tenant, param)` at `now` (ms); returns the pairs that became
    /// unbounded.
    pub(super) fn observe<'a>(
        &mut self,
        now: i64,
        batch: impl IntoIterator<Item = ((&'a str, &'a str), (u32, u32))>,
    ) -> Vec<(String, String)> {
        let hour = now.div_euclid(HOUR_MS);
        if hour != self.hour || self.tally.len() > MAX_WATCHED {
            self.hour = hour;
            self.tally.clear();
        }
        let mut found = Vec::new();
        for ((tenant, name), (events, new_rows)) in batch {
            let pair = (tenant.to_owned(), name.to_owned());
            let t = self.tally.entry(pair.clone()).or_default();
            t.0 = t.0.saturating_add(events);
            t.1 = t.1.saturating_add(new_rows);
            if t.0 >= MIN_EVENTS && u64::from(t.1) * 2 >= u64::from(t.0) {
                self.tally.remove(&pair);
                found.push(pair);
            }
        }
        found
    }

    pub(super) fn found(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for (tenant, name) in pairs {
            self.unbounded.entry(tenant).or_default().insert(name);
        }
    }
}

impl HotStore {
    /// The tenant's params whose values the hot tier answers from its events, not from counts.
    pub async fn unbounded_params(&self, tenant: &str) -> Result<BTreeSet<String>> {
        let conn = self.db.conn().await?;
        let mut rows = conn.query("SELECT name FROM hot_param_names WHERE key_prefix = ?1", [tenant]).await?;
        let mut out = BTreeSet::new();
        while let Some(row) = rows.next().await? {
            out.insert(text(&row, 0, "name")?);
        }
        Ok(out)
    }

    pub(super) async fn is_unbounded(&self, tenant: &str, name: &str) -> Result<bool> {
        let conn = self.db.conn().await?;
        let mut rows =
            conn.query("SELECT 1 FROM hot_param_names WHERE key_prefix = ?1 AND name = ?2", (tenant, name)).await?;
        Ok(rows.next().await?.is_some())
    }

    pub(super) async fn all_unbounded(&self) -> Result<HashSet<(String, String)>> {
        let conn = self.db.conn().await?;
        let mut rows = conn.query("SELECT key_prefix, name FROM hot_param_names", ()).await?;
        let mut out = HashSet::new();
        while let Some(row) = rows.next().await? {
            out.insert((text(&row, 0, "key_prefix")?, text(&row, 1, "name")?));
        }
        Ok(out)
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records `pairs` as unbounded at `now` and deletes their count rows, in the stats consumer's transaction.
pub(super) async fn record_unbounded(tx: &libsql::Transaction, pairs: &[(String, String)], now: i64) -> Result<()> {
    for (tenant, name) in pairs {
        tx.execute(
            "INSERT INTO hot_param_names (key_prefix, name, since) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            (tenant.as_str(), name.as_str(), now),
        )
        .await?;
        tx.execute(
            "DELETE FROM hot_param_counts WHERE key_prefix = ?1 AND name = ?2",
            (tenant.as_str(), name.as_str()),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Location;
    use crate::hot::{GroupBy, StatsQuery};
    use tracker_protocol::Event;

    fn event(n: u64, now: i64) -> Event {
        let params = [("click_id", format!("c{n}")), ("country", format!("C{}", n % 4))];
        crate::hot::test_event(n, "acme", now - 1_800_000 + i64::try_from(n).unwrap(), now, &params)
    }

    async fn rows(hot: &HotStore, name: &str) -> i64 {
        let conn = hot.db.conn().await.unwrap();
        let mut r = conn.query("SELECT COUNT(*) FROM hot_param_counts WHERE name = ?1", [name]).await.unwrap();
        crate::int(&r.next().await.unwrap().unwrap(), 0, "n").unwrap()
    }

    #[tokio::test]
    async fn an_id_like_param_is_answered_from_the_events_and_a_bounded_one_from_counts() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&Location::File(dir.path().join("hot.db"))).await.unwrap();
        let now = now_ms();
        let events: Vec<Event> = (0..3000).map(|n| event(n, now)).collect();
        for (i, chunk) in events.chunks(500).enumerate() {
            hot.apply_events("stats", 0, (i as u64 + 1) * 500, chunk).await.unwrap();
        }
        assert_eq!(hot.unbounded_params("acme").await.unwrap(), BTreeSet::from(["click_id".to_owned()]));
        assert!(hot.unbounded_params("globex").await.unwrap().is_empty());
        assert_eq!(rows(&hot, "click_id").await, 0, "no count row per click id");
        let countries = rows(&hot, "country").await;
        assert!((4..=8).contains(&countries), "four countries over the events' one or two minutes: {countries}");
        let q = |group_by, param: Option<(&str, &str)>| StatsQuery {
            from: now - 3_600_000,
            to: now,
            bucket_ms: HOUR_MS,
            group_by,
            event_type: None,
            tu_id: None,
            param: param.map(|(k, v)| (k.to_owned(), v.to_owned())),
        };
        // the same answers whichever store holds them
        let by_id = hot.stats("acme", &q(GroupBy::Param("click_id".into()), None)).await.unwrap();
        assert_eq!(by_id.iter().map(|p| p.count).sum::<i64>(), 3000);
        assert_eq!(by_id.iter().filter(|p| p.key.as_deref() == Some("c42")).count(), 1);
        let one = hot.stats("acme", &q(GroupBy::None, Some(("click_id", "c42")))).await.unwrap();
        assert_eq!(one.iter().map(|p| p.count).sum::<i64>(), 1);
        let by_country = hot.stats("acme", &q(GroupBy::Param("country".into()), None)).await.unwrap();
        assert_eq!(by_country.iter().map(|p| p.count).sum::<i64>(), 3000);
        let de = hot.stats("acme", &q(GroupBy::EventType, Some(("country", "C1")))).await.unwrap();
        assert_eq!(de.iter().map(|p| p.count).sum::<i64>(), 750);
    }

    /// A batch's tally: `(tenant, param)` with its events and new rows.
    type Tally<'a> = ((&'a str, &'a str), (u32, u32));

    fn batch<'a>(pairs: &[(&'a str, u32, u32)]) -> Vec<Tally<'a>> {
        pairs.iter().map(|(name, e, n)| (("acme", *name), (*e, *n))).collect()
    }

    #[test]
    fn a_param_with_a_new_value_for_most_events_is_unbounded_once_it_has_volume() {
        let mut c = Cardinality::default();
        let now = 10 * HOUR_MS + 5;
        // below the volume: never judged, however many new values
        assert!(c.observe(now, batch(&[("click_id", 600, 600), ("country", 600, 8)])).is_empty());
        // past it within the hour: the id is, the country is not
        let found = c.observe(now + 1000, batch(&[("click_id", 600, 590), ("country", 600, 0)]));
        assert_eq!(found, [("acme".to_owned(), "click_id".to_owned())]);
        c.found(found);
        let unbounded = c.snapshot();
        assert_eq!(unbounded.get("acme"), Some(&HashSet::from(["click_id".to_owned()])), "the id, not the country");
        assert_eq!(unbounded.get("globex"), None, "per tenant");
        // a new hour starts the tally again
        assert!(c.observe(11 * HOUR_MS, batch(&[("sub", 999, 999)])).is_empty());
        assert!(c.observe(12 * HOUR_MS, batch(&[("sub", 1, 1)])).is_empty());
    }
}
