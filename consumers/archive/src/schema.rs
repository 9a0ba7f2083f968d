//! The events table's schema and the conversion of events into Arrow record batches.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::kernel::{DataType, MapType, StructField};
use tracker_protocol::Event;

/// The columns, in order (the partition columns `tenant` and `date` last).
pub fn columns() -> Vec<StructField> {
    let text = |name: &str, nullable: bool| StructField::new(name, DataType::STRING, nullable);
    vec![
        text("event_id", false),
        text("event_type", false),
        StructField::new("timestamp", DataType::TIMESTAMP, false),
        StructField::new("received_at", DataType::TIMESTAMP, false),
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

/// The table is partitioned by tenant, then by the event's UTC date (`YYYY-MM-DD`).
pub fn partition_columns() -> Vec<String> {
    vec!["tenant".into(), "date".into()]
}

fn arrow_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, ArrowType::Utf8, nullable);
    let ts = |name: &str| Field::new(name, ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false);
    let entries = Field::new(
        "key_value",
        ArrowType::Struct(
            vec![Field::new("key", ArrowType::Utf8, false), Field::new("value", ArrowType::Utf8, true)].into(),
        ),
        false,
    );
    Schema::new(vec![
        text("event_id", false),
        text("event_type", false),
        ts("timestamp"),
        ts("received_at"),
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
    ])
}

/// The UTC date of a time in ms since the epoch, `YYYY-MM-DD` (civil-from-days, no time zone data needed).
pub fn date_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Events as one record batch of the table's schema.
pub fn to_batch(events: &[&Event]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let mut strings: Vec<StringBuilder> = (0..12).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut historical = BooleanBuilder::with_capacity(n);
    let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
    let mut params = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for e in events {
        let [event_id, event_type, ip, ua, referer, lang, path, host, raw, auth, tenant, date] = &mut strings[..]
        else {
            unreachable!("twelve string columns")
        };
        event_id.append_value(e.event_id.to_string());
        event_type.append_value(&e.event_type);
        timestamp.append_value(e.timestamp.saturating_mul(1000));
        received.append_value(e.received_at.saturating_mul(1000));
        ip.append_option(e.ip.as_deref());
        ua.append_option(e.user_agent.as_deref());
        referer.append_option(e.referer.as_deref());
        lang.append_option(e.accept_language.as_deref());
        path.append_option(e.request_path.as_deref());
        host.append_option(e.request_host.as_deref());
        for (k, v) in &e.params {
            params.keys().append_value(k);
            params.values().append_value(v);
        }
        params.append(true)?;
        raw.append_option(e.raw_payload.as_ref().map(|r| r.as_str()));
        auth.append_value(match e.auth {
            tracker_protocol::Auth::None => "none",
            tracker_protocol::Auth::Link => "link",
            tracker_protocol::Auth::Token => "token",
            tracker_protocol::Auth::Signature => "signature",
        });
        historical.append_value(e.historical);
        tenant.append_value(&e.key_prefix);
        date.append_value(date_of(e.timestamp));
    }
    let mut s = strings.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || s.next().unwrap_or_else(|| unreachable!("twelve string columns"));
    let (event_id, event_type, ip, ua, referer, lang, path, host, raw, auth, tenant, date) =
        (next(), next(), next(), next(), next(), next(), next(), next(), next(), next(), next(), next());
    let params: ArrayRef = Arc::new(params.finish());
    RecordBatch::try_new(
        Arc::new(arrow_schema()),
        vec![
            event_id,
            event_type,
            Arc::new(timestamp.finish()),
            Arc::new(received.finish()),
            ip,
            ua,
            referer,
            lang,
            path,
            host,
            params,
            raw,
            auth,
            Arc::new(historical.finish()),
            tenant,
            date,
        ],
    )
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
    }
}
