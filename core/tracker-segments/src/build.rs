//! Events into a segment's bytes.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeBinaryBuilder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use tracker_protocol::Event;

use crate::Result;
use crate::bloom::{Bloom, Key};
use crate::segment::schema;

/// A segment ready to store.
#[derive(Debug)]
pub struct Built {
    /// The Arrow IPC file.
    pub bytes: Vec<u8>,
    pub rows: usize,
    /// One per tenant, in the segment's order.
    pub tenants: Vec<TenantPart>,
}

/// What a segment holds of one tenant.
#[derive(Debug, Clone)]
pub struct TenantPart {
    pub tenant: String,
    pub rows: usize,
    /// Earliest and latest event time (ms).
    pub ts_min: i64,
    pub ts_max: i64,
    /// Latest arrival (ms): the segment is past retention when every tenant's is.
    pub received_max: i64,
    pub bloom: Bloom,
}

/// A segment of `events`, each with its position (unique, and increasing in the order events were stored).
/// The rows are sorted here: by tenant, then time, then position.
pub fn build(mut events: Vec<(i64, &Event)>) -> Result<Built> {
    events.sort_unstable_by(|(sa, a), (sb, b)| {
        (a.key_prefix.as_str(), a.timestamp, *sa).cmp(&(b.key_prefix.as_str(), b.timestamp, *sb))
    });
    let tenants = parts(&events);
    let batch = batch(&events)?;
    let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
    let mut writer = FileWriter::try_new_with_options(Vec::new(), &batch.schema(), options)?;
    writer.write(&batch)?;
    writer.finish()?;
    Ok(Built { bytes: writer.into_inner()?, rows: events.len(), tenants })
}

fn parts(events: &[(i64, &Event)]) -> Vec<TenantPart> {
    let mut out: Vec<TenantPart> = Vec::new();
    for run in events.chunk_by(|(_, a), (_, b)| a.key_prefix == b.key_prefix) {
        let Some((_, first)) = run.first() else { continue };
        let keys = run.iter().map(|(_, e)| e.params.len() + 1).sum();
        let mut bloom = Bloom::with_keys(keys);
        for (_, e) in run {
            for (k, v) in &e.params {
                bloom.insert(&Key::Param(k, v));
            }
            if let Some(tu) = e.link() {
                bloom.insert(&Key::Link(tu));
            }
        }
        out.push(TenantPart {
            tenant: first.key_prefix.clone(),
            rows: run.len(),
            ts_min: run.iter().map(|(_, e)| e.timestamp).min().unwrap_or_default(),
            ts_max: run.iter().map(|(_, e)| e.timestamp).max().unwrap_or_default(),
            received_max: run.iter().map(|(_, e)| e.received_at).max().unwrap_or_default(),
            bloom,
        });
    }
    out
}

fn batch(events: &[(i64, &Event)]) -> Result<RecordBatch> {
    let n = events.len();
    let text = |f: fn(&Event) -> Option<&str>| {
        let mut b = StringBuilder::with_capacity(n, events.iter().map(|(_, e)| f(e).map_or(0, str::len)).sum());
        for (_, e) in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let int = |f: fn(i64, &Event) -> i64| {
        let mut b = Int64Builder::with_capacity(n);
        for (seq, e) in events {
            b.append_value(f(*seq, e));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let flag = |f: fn(&Event) -> bool| {
        let mut b = BooleanBuilder::with_capacity(n);
        for (_, e) in events {
            b.append_value(f(e));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let mut ids = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut auth = UInt8Builder::with_capacity(n);
    let names = MapFieldNames { entry: "entries".into(), key: "key".into(), value: "value".into() };
    let mut params = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for (_, e) in events {
        ids.append_value(e.event_id.as_bytes())?;
        auth.append_value(e.auth.as_u8());
        for (k, v) in &e.params {
            params.keys().append_value(k);
            params.values().append_value(v);
        }
        params.append(true)?;
    }
    let columns: Vec<ArrayRef> = vec![
        text(|e| Some(&e.key_prefix)),
        int(|seq, _| seq),
        int(|_, e| e.timestamp),
        int(|_, e| e.received_at),
        Arc::new(ids.finish()),
        text(|e| Some(&e.event_type)),
        text(|e| Some(e.link().unwrap_or_default())),
        text(|e| e.ip.as_deref()),
        text(|e| e.user_agent.as_deref()),
        text(|e| e.referer.as_deref()),
        text(|e| e.accept_language.as_deref()),
        text(|e| e.request_path.as_deref()),
        text(|e| e.request_host.as_deref()),
        Arc::new(params.finish()),
        text(|e| e.raw_payload.as_ref().map(|r| r.as_str())),
        Arc::new(auth.finish()),
        flag(|e| e.historical),
        flag(|e| e.overflow),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
