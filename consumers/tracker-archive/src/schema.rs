//! The two tables' schemas and the conversion of events into Arrow record batches.
//!
//! * `events`: one row per event, params as a `map<string, string>`, the raw payload as JSON text.
//! * `rollups`: events per tenant, event type, link and hour (the warm tier's input); several rows may hold the
//!   same key (one per commit), so readers sum `events`.
//!
//! Both are partitioned by tenant, then by the event's UTC date (`YYYY-MM-DD`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::kernel::{DataType, MapType, StructField};
use tracker_protocol::wire::EventView;

use crate::date_of;

/// Both tables are partitioned by tenant, then by the event's UTC date.
pub fn partition_columns() -> Vec<String> {
    vec!["tenant".into(), "date".into()]
}

/// The `events` table's columns, in order (the partition columns last).
pub fn event_columns() -> Vec<StructField> {
    let text = |name: &str, nullable: bool| StructField::new(name, DataType::STRING, nullable);
    vec![
        text("event_id", false),
        text("event_type", false),
        StructField::new("timestamp", DataType::TIMESTAMP, false),
        StructField::new("received_at", DataType::TIMESTAMP, false),
        text("tu_id", true),
        text("ip", true),
        text("user_agent", true),
        text("referer", true),
        text("accept_language", true),
        text("request_path", true),
        text("request_host", true),
        StructField::new("params", MapType::new(DataType::STRING, DataType::STRING, true), false),
        text("raw_payload", true),
        text("auth", false),
        StructField::new("historical", DataType::BOOLEAN, false),
        text("tenant", false),
        text("date", false),
    ]
}

/// The `rollups` table's columns.
pub fn rollup_columns() -> Vec<StructField> {
    vec![
        StructField::new("hour", DataType::TIMESTAMP, false),
        StructField::new("event_type", DataType::STRING, false),
        StructField::new("tu_id", DataType::STRING, true),
        StructField::new("events", DataType::LONG, false),
        StructField::new("tenant", DataType::STRING, false),
        StructField::new("date", DataType::STRING, false),
    ]
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, ArrowType::Utf8, nullable)
}

fn timestamp(name: &str) -> Field {
    Field::new(name, ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false)
}

fn event_schema() -> Arc<Schema> {
    let entries = Field::new(
        "key_value",
        ArrowType::Struct(vec![Field::new("key", ArrowType::Utf8, false), text("value", true)].into()),
        false,
    );
    Arc::new(Schema::new(vec![
        text("event_id", false),
        text("event_type", false),
        timestamp("timestamp"),
        timestamp("received_at"),
        text("tu_id", true),
        text("ip", true),
        text("user_agent", true),
        text("referer", true),
        text("accept_language", true),
        text("request_path", true),
        text("request_host", true),
        Field::new("params", ArrowType::Map(Arc::new(entries), false), false),
        text("raw_payload", true),
        text("auth", false),
        Field::new("historical", ArrowType::Boolean, false),
        text("tenant", false),
        text("date", false),
    ]))
}

fn rollup_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        timestamp("hour"),
        text("event_type", false),
        text("tu_id", true),
        Field::new("events", ArrowType::Int64, false),
        text("tenant", false),
        text("date", false),
    ]))
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Caches the date string of the last day seen: events arrive in time order, so nearly every lookup hits.
#[derive(Debug, Default)]
struct Dates {
    day: Option<(i64, String)>,
}

impl Dates {
    fn of(&mut self, ms: i64) -> &str {
        let day = ms.div_euclid(DAY_MS);
        if self.day.as_ref().is_none_or(|(d, _)| *d != day) {
            self.day = Some((day, date_of(ms)));
        }
        self.day.as_ref().map_or("", |(_, s)| s.as_str())
    }
}

/// Events (read in place, or borrowed from owned ones with `EventView::from`) as one record batch of the
/// `events` table.
pub fn event_batch(events: &[EventView<'_>]) -> Result<RecordBatch, ArrowError> {
    let links: Vec<Option<&str>> = events.iter().map(EventView::link).collect();
    let n = events.len();
    // exact byte capacities: no regrowth (copies and fresh pages) while the columns fill
    let bytes = |f: fn(&EventView<'_>) -> usize| events.iter().map(f).sum::<usize>();
    fn len(s: &Option<&str>) -> usize {
        s.map_or(0, str::len)
    }
    let strings = |total: usize| StringBuilder::with_capacity(n, total);
    let mut event_id = strings(n * 36);
    let mut event_type = strings(bytes(|e| e.event_type.len()));
    let mut tu_id = strings(links.iter().map(|l| l.map_or(0, str::len)).sum());
    let mut ip = strings(bytes(|e| len(&e.ip)));
    let mut ua = strings(bytes(|e| len(&e.user_agent)));
    let mut referer = strings(bytes(|e| len(&e.referer)));
    let mut lang = strings(bytes(|e| len(&e.accept_language)));
    let mut path = strings(bytes(|e| len(&e.request_path)));
    let mut host = strings(bytes(|e| len(&e.request_host)));
    let mut raw = strings(bytes(|e| len(&e.raw_payload)));
    let mut auth = strings(n * 9);
    let mut tenant = strings(bytes(|e| e.key_prefix.len()));
    let mut date = strings(n * 10);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut historical = BooleanBuilder::with_capacity(n);
    let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
    let entries = bytes(|e| e.params.len());
    let keys = StringBuilder::with_capacity(entries, bytes(|e| e.params.iter().map(|(k, _)| k.len()).sum()));
    let values = StringBuilder::with_capacity(entries, bytes(|e| e.params.iter().map(|(_, v)| v.len()).sum()));
    let mut params = MapBuilder::with_capacity(Some(names), keys, values, n);
    let mut dates = Dates::default();
    let mut id = tracker_protocol::Uuid::encode_buffer();
    for (e, link) in events.iter().zip(links) {
        event_id.append_value(e.event_id.as_hyphenated().encode_lower(&mut id));
        event_type.append_value(e.event_type);
        ts.append_value(e.timestamp.saturating_mul(1000));
        received.append_value(e.received_at.saturating_mul(1000));
        tu_id.append_option(link);
        ip.append_option(e.ip);
        ua.append_option(e.user_agent);
        referer.append_option(e.referer);
        lang.append_option(e.accept_language);
        path.append_option(e.request_path);
        host.append_option(e.request_host);
        for (k, v) in &e.params {
            params.keys().append_value(k);
            params.values().append_value(v);
        }
        params.append(true)?;
        raw.append_option(e.raw_payload);
        auth.append_value(e.auth.as_str());
        historical.append_value(e.historical);
        tenant.append_value(e.key_prefix);
        date.append_value(dates.of(e.timestamp));
    }
    let s = |b: &mut StringBuilder| Arc::new(b.finish()) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        s(&mut event_id),
        s(&mut event_type),
        Arc::new(ts.finish()),
        Arc::new(received.finish()),
        s(&mut tu_id),
        s(&mut ip),
        s(&mut ua),
        s(&mut referer),
        s(&mut lang),
        s(&mut path),
        s(&mut host),
        Arc::new(params.finish()),
        s(&mut raw),
        s(&mut auth),
        Arc::new(historical.finish()),
        s(&mut tenant),
        s(&mut date),
    ];
    RecordBatch::try_new(event_schema(), columns)
}

/// The key of a rollup row: tenant, hour (ms), event type, link.
type RollupKey = (String, i64, String, Option<String>);

/// Counts events per tenant, event type, link and hour, until they are written as one batch of rollup rows.
#[derive(Debug, Default)]
pub struct Rollups {
    counts: BTreeMap<RollupKey, i64>,
}

impl Rollups {
    /// Counts `events`. They are tallied under borrowed keys first: a poll's thousands of events fall into a few
    /// keys, and only those are copied.
    pub fn add<'e, 'v: 'e>(&mut self, events: impl IntoIterator<Item = &'e EventView<'v>>) {
        let mut tally: HashMap<(&str, i64, &str, Option<&str>), i64> = HashMap::new();
        for e in events {
            let hour = e.timestamp.div_euclid(HOUR_MS) * HOUR_MS;
            *tally.entry((e.key_prefix, hour, e.event_type, e.link())).or_default() += 1;
        }
        for ((tenant, hour, event_type, link), n) in tally {
            let key = (tenant.to_owned(), hour, event_type.to_owned(), link.map(str::to_owned));
            *self.counts.entry(key).or_default() += n;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: Rollups) {
        if self.counts.is_empty() {
            self.counts = other.counts;
            return;
        }
        for (key, n) in other.counts {
            *self.counts.entry(key).or_default() += n;
        }
    }

    /// The rows as one record batch of the `rollups` table.
    pub fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let n = self.counts.len();
        let mut hour = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let (mut event_type, mut tu_id, mut tenant, mut date) =
            (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
        let mut events = Int64Builder::with_capacity(n);
        let mut dates = Dates::default();
        for ((t, h, et, tu), count) in &self.counts {
            hour.append_value(h.saturating_mul(1000));
            event_type.append_value(et);
            tu_id.append_option(tu.as_deref());
            events.append_value(*count);
            tenant.append_value(t);
            date.append_value(dates.of(*h));
        }
        RecordBatch::try_new(
            rollup_schema(),
            vec![
                Arc::new(hour.finish()),
                Arc::new(event_type.finish()),
                Arc::new(tu_id.finish()),
                Arc::new(events.finish()),
                Arc::new(tenant.finish()),
                Arc::new(date.finish()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400_000), "2000-02-29");
        assert_eq!(date_of(1_795_996_799_999), "2026-11-29");
        assert_eq!(date_of(-1), "1969-12-31");
        let mut d = Dates::default();
        assert_eq!(d.of(1_795_996_799_999), "2026-11-29");
        assert_eq!(d.of(1_795_996_800_000), "2026-11-30");
    }

    #[test]
    fn rollups_count_per_tenant_type_link_and_hour() {
        use tracker_protocol::Event;
        let base = Event {
            event_id: tracker_protocol::Uuid::from_u64_pair(1, 1),
            event_type: "click".into(),
            timestamp: 1_795_996_799_999,
            received_at: 1_795_996_799_999,
            key_prefix: "acme".into(),
            ip: None,
            user_agent: None,
            referer: None,
            accept_language: None,
            request_path: Some("/t/abc".into()),
            request_host: None,
            params: [("tu_id".to_string(), "abc".to_string())].into(),
            raw_payload: None,
            auth: tracker_protocol::Auth::Link,
            historical: false,
            overflow: false,
        };
        let mut r = Rollups::default();
        r.add(&[EventView::from(&base)]);
        let next_hour = Event { timestamp: base.timestamp + 1, ..base.clone() }; // (and day)
        let no_link = Event { request_path: None, ..base.clone() };
        r.add(&[EventView::from(&base), EventView::from(&next_hour), EventView::from(&no_link)]);
        let globex = Event { key_prefix: "globex".into(), ..base.clone() };
        r.add(&[EventView::from(&globex)]);
        let b = r.batch().unwrap();
        assert_eq!(b.num_rows(), 4);
        let events = b.column(3).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap();
        assert_eq!(events.iter().flatten().sum::<i64>(), 5);
        assert_eq!(events.value(1), 2, "rows sorted by tenant, hour, type, link: {b:?}");
    }
}
