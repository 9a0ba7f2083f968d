//! Reading a segment.

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use arrow_array::{Array, BooleanArray, FixedSizeBinaryArray, Int64Array, MapArray, StringArray, UInt8Array};
use arrow_ipc::reader::FileReader;
use arrow_schema::{DataType, Field, Schema};
use tracker_protocol::{Auth, Event, RawJson, Uuid};

use crate::{Result, SegmentError};

pub(crate) fn schema() -> Arc<Schema> {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let entries = Field::new(
        "entries",
        DataType::Struct(vec![Field::new("key", DataType::Utf8, false), text("value", true)].into()),
        false,
    );
    Arc::new(Schema::new(vec![
        text("tenant", false),
        int("seq"),
        int("ts"),
        int("received_at"),
        Field::new("event_id", DataType::FixedSizeBinary(16), false),
        text("event_type", false),
        text("tu_id", false),
        text("ip", true),
        text("user_agent", true),
        text("referer", true),
        text("accept_language", true),
        text("request_path", true),
        text("request_host", true),
        Field::new("params", DataType::Map(Arc::new(entries), false), false),
        text("raw_payload", true),
        Field::new("auth", DataType::UInt8, false),
        Field::new("historical", DataType::Boolean, false),
        Field::new("overflow", DataType::Boolean, false),
    ]))
}

/// One segment, decoded: its columns, sorted by tenant, time and position.
#[derive(Debug)]
pub struct Segment {
    tenant: StringArray,
    seq: Int64Array,
    ts: Int64Array,
    received_at: Int64Array,
    event_id: FixedSizeBinaryArray,
    event_type: StringArray,
    tu_id: StringArray,
    /// ip, user_agent, referer, accept_language, request_path, request_host.
    fields: [StringArray; 6],
    params: MapArray,
    raw_payload: StringArray,
    auth: UInt8Array,
    historical: BooleanArray,
    overflow: BooleanArray,
    memory: usize,
}

impl Segment {
    /// Reads the bytes [`crate::build`] made.
    pub fn decode(bytes: &[u8]) -> Result<Segment> {
        let reader = FileReader::try_new(Cursor::new(bytes), None)?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let [batch] = batches.as_slice() else { return Err(SegmentError::Batches(batches.len())) };
        let col = |name: &'static str| batch.column_by_name(name).ok_or(SegmentError::Column(name));
        let text = |name: &'static str| -> Result<StringArray> {
            col(name)?.as_string_opt::<i32>().cloned().ok_or(SegmentError::Column(name))
        };
        let int = |name: &'static str| -> Result<Int64Array> {
            col(name)?.as_primitive_opt::<Int64Type>().cloned().ok_or(SegmentError::Column(name))
        };
        let flag = |name: &'static str| -> Result<BooleanArray> {
            col(name)?.as_boolean_opt().cloned().ok_or(SegmentError::Column(name))
        };
        Ok(Segment {
            tenant: text("tenant")?,
            seq: int("seq")?,
            ts: int("ts")?,
            received_at: int("received_at")?,
            event_id: col("event_id")?.as_fixed_size_binary_opt().cloned().ok_or(SegmentError::Column("event_id"))?,
            event_type: text("event_type")?,
            tu_id: text("tu_id")?,
            fields: [
                text("ip")?,
                text("user_agent")?,
                text("referer")?,
                text("accept_language")?,
                text("request_path")?,
                text("request_host")?,
            ],
            params: col("params")?.as_map_opt().cloned().ok_or(SegmentError::Column("params"))?,
            raw_payload: text("raw_payload")?,
            auth: col("auth")?.as_primitive_opt::<UInt8Type>().cloned().ok_or(SegmentError::Column("auth"))?,
            historical: flag("historical")?,
            overflow: flag("overflow")?,
            memory: batch.get_array_memory_size(),
        })
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the decoded columns take in memory.
    pub fn memory(&self) -> usize {
        self.memory
    }

    /// The rows of `tenant` with a time in `[from, to)`, oldest first (two binary searches over sorted columns).
    pub fn rows(&self, tenant: &str, from: i64, to: i64) -> Range<usize> {
        let first = partition_point(self.len(), |i| self.tenant.value(i) < tenant);
        let end = first + partition_point(self.len() - first, |i| self.tenant.value(first + i) <= tenant);
        let lo = first + partition_point(end - first, |i| self.ts.value(first + i) < from);
        let hi = lo + partition_point(end - lo, |i| self.ts.value(lo + i) < to);
        lo..hi
    }

    /// Row `i`'s position. Every accessor takes a row of [`Segment::rows`] (below [`Segment::len`]).
    pub fn seq(&self, i: usize) -> i64 {
        self.seq.value(i)
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.ts.value(i)
    }

    /// The event id's 16 bytes.
    pub fn event_id(&self, i: usize) -> &[u8] {
        self.event_id.value(i)
    }

    pub fn event_type(&self, i: usize) -> &str {
        self.event_type.value(i)
    }

    /// The short link's id, or `""`.
    pub fn tu_id(&self, i: usize) -> &str {
        self.tu_id.value(i)
    }

    /// The value of param `name` in row `i`.
    pub fn param(&self, i: usize, name: &str) -> Option<&str> {
        let offsets = self.params.value_offsets();
        let (start, end) = (offsets.get(i).copied()?, offsets.get(i + 1).copied()?);
        let keys = self.params.keys().as_string_opt::<i32>()?;
        let values = self.params.values().as_string_opt::<i32>()?;
        let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
        (start..end).find(|&j| keys.value(j) == name).map(|j| values.value(j))
    }

    /// Row `i` as the event it was.
    pub fn event(&self, i: usize) -> Event {
        let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_owned());
        let [ip, user_agent, referer, accept_language, request_path, request_host] = &self.fields;
        let mut params = std::collections::BTreeMap::new();
        let offsets = self.params.value_offsets();
        if let (Some(keys), Some(values), Some(&start), Some(&end)) = (
            self.params.keys().as_string_opt::<i32>(),
            self.params.values().as_string_opt::<i32>(),
            offsets.get(i),
            offsets.get(i + 1),
        ) {
            for j in usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0) {
                params.insert(keys.value(j).to_owned(), values.value(j).to_owned());
            }
        }
        Event {
            event_id: Uuid::from_slice(self.event_id.value(i)).unwrap_or_default(),
            event_type: self.event_type.value(i).to_owned(),
            timestamp: self.ts.value(i),
            received_at: self.received_at.value(i),
            key_prefix: self.tenant.value(i).to_owned(),
            ip: opt(ip),
            user_agent: opt(user_agent),
            referer: opt(referer),
            accept_language: opt(accept_language),
            request_path: opt(request_path),
            request_host: opt(request_host),
            params,
            // written from a checked payload: parsing again cannot fail but for a corrupt segment
            raw_payload: opt(&self.raw_payload).and_then(|r| RawJson::parse(&r).ok()),
            auth: Auth::from_u8(self.auth.value(i)).unwrap_or_default(),
            historical: self.historical.value(i),
            overflow: self.overflow.value(i),
        }
    }
}

/// The first index in `0..len` where `pred` is false (`pred` true on a prefix).
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
