//! The typed requests: what a caller may ask, checked before anything is planned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{MAX_RANGE_MS, QueryError};
pub use tracker_protocol::matching::Touch;

pub(crate) fn window_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000)
}

/// A cold query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// Events in time order, a page at a time.
    Events {
        filters: Filters,
        /// Events per page (1 to 1,000; 100 when absent).
        #[serde(default)]
        limit: Option<usize>,
        /// The previous page's `next_cursor`.
        #[serde(default)]
        cursor: Option<String>,
    },
    /// Pairs `result` events with `trigger` events that share the value of param `on` (see
    /// [`tracker_protocol::matching`]): results in the range, triggers up to the window earlier.
    Match {
        filters: Filters,
        trigger: String,
        result: String,
        on: String,
        /// How much earlier than its result a trigger may be (1 s to 90 days).
        window_secs: u64,
        #[serde(default)]
        touch: Touch,
        /// Pairs listed (0 to 1,000; 100 when absent); the summary covers all of them.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Event counts per group, the largest `top` groups and the rest as `other`; optionally the distinct
    /// values of a column per group.
    Breakdown {
        filters: Filters,
        by: SeriesGroup,
        /// Groups listed (1 to 1,000; 10 when absent).
        #[serde(default)]
        top: Option<usize>,
        /// Also count distinct values of this: `ip`, `tu_id`, `event_type` or `param:<key>`.
        #[serde(default)]
        distinct: Option<Distinct>,
    },
    /// Event counts per time bucket, optionally per group.
    Series {
        filters: Filters,
        interval: Interval,
        #[serde(default)]
        group_by: Option<SeriesGroup>,
    },
}

/// What every query filters on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Start of the range, ms since the epoch (inclusive), on the event's own time.
    pub from: i64,
    /// End of the range, ms since the epoch (exclusive).
    pub to: i64,
    /// Only these event types (all when empty).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Only clicks on this short link.
    #[serde(default)]
    pub tu_id: Option<String>,
    /// Only events whose params hold every one of these values.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A series' bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub(crate) fn ms(self) -> i64 {
        match self {
            Interval::Minute => 60_000,
            Interval::Hour => 3_600_000,
            Interval::Day => 86_400_000,
        }
    }
}

/// What a series is split by: `event_type`, `tu_id`, `date` or `param:<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SeriesGroup {
    EventType,
    Link,
    Date,
    Param(String),
}

impl TryFrom<String> for SeriesGroup {
    type Error = String;
    fn try_from(s: String) -> Result<SeriesGroup, String> {
        match s.as_str() {
            "event_type" => Ok(SeriesGroup::EventType),
            "tu_id" => Ok(SeriesGroup::Link),
            "date" => Ok(SeriesGroup::Date),
            other => match other.strip_prefix("param:") {
                Some(key) if !key.is_empty() => Ok(SeriesGroup::Param(key.to_owned())),
                _ => Err(format!("group_by {other:?}: event_type, tu_id, date or param:<key>")),
            },
        }
    }
}

/// What a breakdown may count distinct values of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Distinct {
    Ip,
    Link,
    EventType,
    Param(String),
}

impl From<SeriesGroup> for String {
    fn from(g: SeriesGroup) -> String {
        match g {
            SeriesGroup::EventType => "event_type".into(),
            SeriesGroup::Link => "tu_id".into(),
            SeriesGroup::Date => "date".into(),
            SeriesGroup::Param(key) => format!("param:{key}"),
        }
    }
}

impl From<Distinct> for String {
    fn from(d: Distinct) -> String {
        match d {
            Distinct::Ip => "ip".into(),
            Distinct::Link => "tu_id".into(),
            Distinct::EventType => "event_type".into(),
            Distinct::Param(key) => format!("param:{key}"),
        }
    }
}

impl TryFrom<String> for Distinct {
    type Error = String;
    fn try_from(s: String) -> Result<Distinct, String> {
        match s.as_str() {
            "ip" => Ok(Distinct::Ip),
            "tu_id" => Ok(Distinct::Link),
            "event_type" => Ok(Distinct::EventType),
            other => match other.strip_prefix("param:") {
                Some(key) if !key.is_empty() => Ok(Distinct::Param(key.to_owned())),
                _ => Err(format!("distinct {other:?}: ip, tu_id, event_type or param:<key>")),
            },
        }
    }
}

/// 9999-12-31 23:59:59.999 UTC: dates compare as text, so years stay four digits.
const LAST_MS: i64 = 253_402_300_799_999;

/// Most buckets one series may have.
const MAX_POINTS: i64 = 100_000;
const MAX_PAGE: usize = 1000;

fn invalid(reason: impl Into<String>) -> QueryError {
    QueryError::Invalid(reason.into())
}

/// `<timestamp µs>:<event id>` of the last event of a page.
pub(crate) fn parse_cursor(cursor: &str) -> Result<(i64, &str), QueryError> {
    let bad = || invalid("cursor is not a next_cursor this API returned");
    let (us, id) = cursor.split_once(':').ok_or_else(bad)?;
    let us: i64 = us.parse().map_err(|_| bad())?;
    if id.len() != 36 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(bad());
    }
    Ok((us, id))
}

impl Query {
    /// The events the query reads: a match also reads triggers up to its window before the range, and only
    /// its two event types.
    pub fn filters(&self) -> Filters {
        match self {
            Query::Events { filters, .. } | Query::Series { filters, .. } | Query::Breakdown { filters, .. } => {
                filters.clone()
            }
            // results of the window before the range are paired first (see tracker_protocol::matching), and
            // their triggers may be a window earlier still
            Query::Match { filters, trigger, result, window_secs, .. } => Filters {
                from: filters.from.saturating_sub(window_ms(*window_secs).saturating_mul(2)),
                event_types: vec![trigger.clone(), result.clone()],
                ..filters.clone()
            },
        }
    }

    /// Refuses what cannot be answered well, with the reason.
    pub fn validate(&self) -> Result<(), QueryError> {
        let f = match self {
            Query::Events { filters, .. }
            | Query::Series { filters, .. }
            | Query::Match { filters, .. }
            | Query::Breakdown { filters, .. } => filters,
        };
        if !(0..=LAST_MS).contains(&f.from) || !(0..=LAST_MS).contains(&f.to) {
            return Err(invalid("from and to must be ms since 1970 and before the year 10000"));
        }
        if f.from >= f.to {
            return Err(invalid("from must be before to"));
        }
        if f.to - f.from > MAX_RANGE_MS {
            return Err(invalid("the range is longer than 400 days"));
        }
        if f.event_types.len() > 50 || f.params.len() > 20 {
            return Err(invalid("at most 50 event types and 20 params"));
        }
        match self {
            Query::Events { limit, cursor, .. } => {
                if limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
                    return Err(invalid("limit must be 1 to 1000"));
                }
                if let Some(c) = cursor {
                    parse_cursor(c)?;
                }
            }
            Query::Breakdown { top, .. } => {
                if top.is_some_and(|t| t == 0 || t > MAX_PAGE) {
                    return Err(invalid("top must be 1 to 1000"));
                }
            }
            Query::Match { filters, trigger, result, on, window_secs, limit, .. } => {
                if trigger.is_empty() || result.is_empty() || on.is_empty() {
                    return Err(invalid("trigger, result and on are required"));
                }
                if trigger == result {
                    return Err(invalid("trigger and result must be different event types"));
                }
                if !filters.event_types.is_empty() {
                    return Err(invalid("a match takes its event types from trigger and result, not event_types"));
                }
                if !(1..=90 * 86_400).contains(window_secs) {
                    return Err(invalid("window_secs must be 1 to 7776000 (90 days)"));
                }
                if limit.is_some_and(|l| l > MAX_PAGE) {
                    return Err(invalid("limit must be 0 to 1000"));
                }
            }
            Query::Series { interval, .. } => {
                if (f.to - f.from) / interval.ms() > MAX_POINTS {
                    return Err(invalid("too many buckets: use a longer interval or a shorter range"));
                }
            }
        }
        Ok(())
    }
}

/// The longest range the warm tier answers; longer ones are the cold tier's.
pub const MAX_WARM_DAYS: i64 = 90;
const HOUR_MS: i64 = 3_600_000;

/// Why the warm tier cannot answer `query`, or `None` when it can.
pub fn warm_refusal(query: &Query) -> Option<&'static str> {
    let (filters, group, distinct) = match query {
        Query::Series { filters, interval, group_by } => {
            if *interval == Interval::Minute {
                return Some("the warm tier counts per hour: minute buckets are the hot or cold tier's");
            }
            (filters, group_by.as_ref(), None)
        }
        Query::Breakdown { filters, by, distinct, .. } => (filters, Some(by), distinct.as_ref()),
        Query::Events { .. } | Query::Match { .. } => {
            return Some("the warm tier holds counts, not events: listings and matches are the hot or cold tier's");
        }
    };
    if !filters.params.is_empty() || matches!(group, Some(SeriesGroup::Param(_))) {
        return Some("the warm tier's rollups have no params: param filters and groups are the cold tier's");
    }
    if matches!(distinct, Some(Distinct::Ip | Distinct::Param(_))) {
        return Some("the warm tier can count distinct links and event types only");
    }
    if filters.from.rem_euclid(HOUR_MS) != 0 || filters.to.rem_euclid(HOUR_MS) != 0 {
        return Some("the warm tier counts per hour: from and to must be on the hour");
    }
    if filters.to - filters.from > MAX_WARM_DAYS * 24 * HOUR_MS {
        return Some("the warm tier answers up to 90 days: longer ranges are the cold tier's");
    }
    None
}
