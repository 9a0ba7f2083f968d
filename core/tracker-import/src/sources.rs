//! What an import reads: NDJSON, CSV and Parquet files of generic rows ([`GenericRow`]), and the replaced
//! system's archive (its `events` Delta table on a disk, S3 or R2) of [`V1Row`]s. Each source hands out its rows
//! in the same order every time, so a run can resume at a row number.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use deltalake::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use sha2::{Digest, Sha256};
use tracker_protocol::RawJson;
use tracker_protocol::event::ParamMap;

use crate::ImportError;
use crate::rows::{DumpLineRef, GenericRow, Reject, RowRef, V1Row};

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line: a `/batch` element with its tenant, an event as `/api/events` lists it, or a line
    /// of `tracker-core log dump`.
    Ndjson,
    /// A header row, then one row per event: columns named like the NDJSON fields (`params` and `raw_payload` as
    /// JSON text, `timestamp` in ms); any other column is a param.
    Csv,
    /// Columns named like the NDJSON fields: text, `timestamp` as ms (integer) or a timestamp type, `params` as a
    /// map of strings or JSON text; any other text or number column is a param.
    Parquet,
    /// The replaced system's archive: its `events` Delta table (a directory, or `s3://bucket/events`).
    V1Archive,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "ndjson" | "jsonl" | "json" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            "v1-archive" => Ok(Format::V1Archive),
            other => Err(format!("--format must be ndjson, csv, parquet or v1-archive, not {other:?}")),
        }
    }
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::V1Archive => "v1-archive",
        }
    }

    /// The format a location's name says: its extension, or a Delta table (a directory with `_delta_log`, or a
    /// URL).
    pub fn guess(location: &str) -> Option<Format> {
        let lower = location.to_ascii_lowercase();
        if lower.contains("://") || Path::new(location).join("_delta_log").is_dir() {
            return Some(Format::V1Archive);
        }
        [(".ndjson", Format::Ndjson), (".jsonl", Format::Ndjson), (".json", Format::Ndjson), (".csv", Format::Csv)]
            .into_iter()
            .chain([(".parquet", Format::Parquet)])
            .find(|(ext, _)| lower.ends_with(ext))
            .map(|(_, f)| f)
    }
}

/// A row as its source holds it.
#[derive(Debug)]
pub enum Row {
    /// A line of NDJSON, parsed (and its UTF-8 checked) with the rest of the row's work (on several cores).
    Json(Vec<u8>),
    Generic(Box<GenericRow>),
    V1(Box<V1Row>),
}

impl Row {
    /// A JSON line as a generic row, borrowed from it: a `/batch` element, an event as `/api/events` lists it, or
    /// a `log dump` line.
    pub fn parse_ref(line: &[u8]) -> Result<RowRef<'_>, Reject> {
        // the whole line checked as UTF-8 at once is cheaper than each string on its own
        let line = std::str::from_utf8(line).map_err(bad_row)?.trim_start();
        let row = if line.starts_with("{\"event\":{") {
            serde_json::from_str::<DumpLineRef<'_>>(line).map(|d| d.event)
        } else {
            serde_json::from_str::<RowRef<'_>>(line)
        };
        row.map_err(bad_row)
    }
}

/// A source: rows in a fixed order, and how far through it the reading is (in the source's units: bytes, rows).
pub trait Source: Send {
    /// The next row, a row that cannot be read (its number still counts), or `None` at the end.
    fn next_row(&mut self) -> Option<Result<Row, Reject>>;
    fn done(&self) -> u64;
    fn total(&self) -> u64;
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// SHA-256 over a file's size and its first and last MiB: the same file (wherever it was copied) gives the same
/// run, without reading all of it twice.
pub fn file_fingerprint(path: &Path) -> Result<String, ImportError> {
    const PART: u64 = 1 << 20;
    let mut f = File::open(path).map_err(|e| ImportError::Source(format!("{}: {e}", path.display())))?;
    let size = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = Vec::new();
    (&mut f).take(PART).read_to_end(&mut buf)?;
    h.update(&buf);
    if size > PART {
        f.seek(SeekFrom::Start(size.saturating_sub(PART).max(PART)))?;
        buf.clear();
        f.read_to_end(&mut buf)?;
        h.update(&buf);
    }
    Ok(hex::encode(h.finalize()))
}

fn open_counted(path: &Path) -> Result<(Counting<File>, Arc<AtomicU64>, u64), ImportError> {
    let f = File::open(path).map_err(|e| ImportError::Source(format!("{}: {e}", path.display())))?;
    let total = f.metadata()?.len();
    let read = Arc::new(AtomicU64::new(0));
    Ok((Counting { inner: f, read: read.clone() }, read, total))
}

fn bad_row(e: impl std::fmt::Display) -> Reject {
    Reject::new("invalid_row", e.to_string())
}

/// NDJSON.
pub struct Ndjson {
    reader: BufReader<Counting<File>>,
    read: Arc<AtomicU64>,
    total: u64,
    line: Vec<u8>,
    /// A read failed: the rest of the file is lost to the import (reported once).
    failed: bool,
}

impl Ndjson {
    pub fn open(path: &Path) -> Result<Ndjson, ImportError> {
        let (file, read, total) = open_counted(path)?;
        Ok(Ndjson { reader: BufReader::with_capacity(1 << 20, file), read, total, line: Vec::new(), failed: false })
    }
}

impl std::fmt::Debug for Ndjson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ndjson").field("total", &self.total).finish_non_exhaustive()
    }
}

impl Source for Ndjson {
    fn next_row(&mut self) -> Option<Result<Row, Reject>> {
        loop {
            self.line.clear();
            match self.reader.read_until(b'\n', &mut self.line) {
                _ if self.failed => return None,
                Ok(0) => return None,
                Ok(_) => {}
                // the file cannot be read further: one bad row, then the end
                Err(e) => {
                    self.failed = true;
                    return Some(Err(bad_row(e)));
                }
            }
            if self.line.trim_ascii().is_empty() {
                continue;
            }
            // the line as read (JSON ignores the newline), not copied; the next one gets room for as much
            let room = self.line.len().next_power_of_two();
            return Some(Ok(Row::Json(std::mem::replace(&mut self.line, Vec::with_capacity(room)))));
        }
    }

    fn done(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        self.total
    }
}

/// Columns of this platform's own exports that an import sets itself.
const IGNORED: &[&str] = &["received_at", "auth", "historical", "overflow", "tu_id", "date"];

/// Fills a generic row from named cells (empty ones are absent).
fn row_from_cells<'a>(cells: impl Iterator<Item = (&'a str, Option<String>)>) -> Result<GenericRow, Reject> {
    let mut row = GenericRow::default();
    let mut event_type = None;
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut columns: Vec<(String, String)> = Vec::new();
    for (name, value) in cells {
        let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
        match name {
            "event_id" => row.event_id = Some(value),
            "event_type" => event_type = Some(value),
            "timestamp" => {
                row.timestamp = Some(value.trim().parse().map_err(|_| bad_row("timestamp must be milliseconds"))?);
            }
            "key_prefix" | "tenant" => row.key_prefix = Some(value),
            "ip" => row.ip = Some(value),
            "user_agent" => row.user_agent = Some(value),
            "referer" => row.referer = Some(value),
            "accept_language" => row.accept_language = Some(value),
            "request_path" => row.request_path = Some(value),
            "request_host" => row.request_host = Some(value),
            "params" => params.extend(serde_json::from_str::<ParamMap>(&value).map_err(bad_row)?.0),
            "raw_payload" => row.raw_payload = Some(RawJson::parse(&value)?),
            n if IGNORED.contains(&n) => {}
            n => columns.push((n.strip_prefix("params.").unwrap_or(n).to_owned(), value)),
        }
    }
    params.extend(columns);
    row.event_type = event_type.ok_or_else(|| bad_row("event_type is missing"))?;
    row.params = (!params.is_empty()).then_some(ParamMap(params));
    Ok(row)
}

/// CSV with a header row.
pub struct Csv {
    reader: csv::Reader<Counting<File>>,
    headers: Vec<String>,
    read: Arc<AtomicU64>,
    total: u64,
    record: csv::StringRecord,
}

impl Csv {
    pub fn open(path: &Path) -> Result<Csv, ImportError> {
        let (file, read, total) = open_counted(path)?;
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let headers = reader
            .headers()
            .map_err(|e| ImportError::Source(format!("{}: no header row: {e}", path.display())))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        Ok(Csv { reader, headers, read, total, record: csv::StringRecord::new() })
    }
}

impl std::fmt::Debug for Csv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Csv").field("total", &self.total).finish_non_exhaustive()
    }
}

impl Source for Csv {
    fn next_row(&mut self) -> Option<Result<Row, Reject>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => Some(Err(bad_row(e))),
            Ok(true) => {
                let cells = self.headers.iter().map(String::as_str).zip(self.record.iter().map(|c| Some(c.to_owned())));
                Some(row_from_cells(cells).map(|r| Row::Generic(Box::new(r))))
            }
        }
    }

    fn done(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        self.total
    }
}

/// A column as text, whatever string type it has (`None` if it is not text).
fn text_column(batch: &RecordBatch, name: &str) -> Option<ArrayRef> {
    let col = batch.column_by_name(name)?;
    match col.data_type() {
        DataType::Utf8 => Some(col.clone()),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => cast(col, &DataType::Utf8).ok(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 => {
            cast(col, &DataType::Utf8).ok()
        }
        DataType::UInt32 | DataType::UInt64 | DataType::Float32 | DataType::Float64 | DataType::Boolean => {
            cast(col, &DataType::Utf8).ok()
        }
        _ => None,
    }
}

fn text_at(col: Option<&ArrayRef>, i: usize) -> Option<String> {
    let col = col?;
    if col.is_null(i) {
        return None;
    }
    Some(col.as_string::<i32>().value(i).to_owned())
}

/// A time column as milliseconds: an integer column is taken as ms, a timestamp type is converted.
fn millis_column(batch: &RecordBatch, name: &str) -> Option<ArrayRef> {
    let col = batch.column_by_name(name)?;
    match col.data_type() {
        DataType::Timestamp(_, _) => {
            let ms = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok()?;
            cast(&ms, &DataType::Int64).ok()
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => cast(col, &DataType::Int64).ok(),
        _ => None,
    }
}

fn millis_at(col: Option<&ArrayRef>, i: usize) -> Option<i64> {
    let col = col?;
    (!col.is_null(i)).then(|| col.as_primitive::<Int64Type>().value(i))
}

/// The params of row `i`: a map column of strings, or JSON text.
fn params_at(col: Option<&ArrayRef>, i: usize) -> Result<BTreeMap<String, String>, Reject> {
    let Some(col) = col else { return Ok(BTreeMap::new()) };
    if col.is_null(i) {
        return Ok(BTreeMap::new());
    }
    match col.data_type() {
        DataType::Map(_, _) => {
            let entries = col.as_map().value(i);
            let keys = cast(entries.column(0), &DataType::Utf8).map_err(bad_row)?;
            let values = cast(entries.column(1), &DataType::Utf8).map_err(bad_row)?;
            let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
            Ok((0..keys.len())
                .filter(|j| !values.is_null(*j))
                .map(|j| (keys.value(j).to_owned(), values.value(j).to_owned()))
                .collect())
        }
        _ => {
            let text = cast(col, &DataType::Utf8).map_err(bad_row)?;
            let text = text.as_string::<i32>().value(i);
            Ok(serde_json::from_str::<ParamMap>(text).map_err(bad_row)?.0)
        }
    }
}

/// A column of a batch, converted once for all its rows.
enum Column {
    Text(ArrayRef),
    Millis(ArrayRef),
    Params(ArrayRef),
}

/// The columns of a batch of generic rows, by name.
fn prepare(batch: &RecordBatch) -> Vec<(String, Column)> {
    let schema = batch.schema();
    let mut out = Vec::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let col = match name {
            "timestamp" => millis_column(batch, name).map(Column::Millis),
            "params" => batch.column_by_name(name).cloned().map(Column::Params),
            _ => text_column(batch, name).map(Column::Text),
        };
        if let Some(col) = col {
            out.push((name.to_owned(), col));
        }
    }
    out
}

/// Parquet of generic rows.
pub struct Parquet {
    /// `None` once a batch could not be read (the rest of the file is lost to the import, and reported).
    reader: Option<ParquetRecordBatchReader>,
    batch: Option<(usize, Vec<(String, Column)>)>,
    at: usize,
    done: u64,
    total: u64,
}

impl Parquet {
    pub fn open(path: &Path) -> Result<Parquet, ImportError> {
        let f = File::open(path).map_err(|e| ImportError::Source(format!("{}: {e}", path.display())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)?;
        let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        Ok(Parquet { reader: Some(builder.with_batch_size(8192).build()?), batch: None, at: 0, done: 0, total })
    }

    fn row(columns: &[(String, Column)], i: usize) -> Result<Row, Reject> {
        let mut cells: Vec<(&str, Option<String>)> = Vec::with_capacity(columns.len());
        let mut params = BTreeMap::new();
        for (name, col) in columns {
            match col {
                Column::Millis(c) => cells.push((name, millis_at(Some(c), i).map(|m| m.to_string()))),
                Column::Text(c) => cells.push((name, text_at(Some(c), i))),
                Column::Params(c) => params = params_at(Some(c), i)?,
            }
        }
        let mut row = row_from_cells(cells.into_iter())?;
        if !params.is_empty() {
            let mut all = row.params.take().map(|p| p.0).unwrap_or_default();
            for (k, v) in params {
                all.entry(k).or_insert(v);
            }
            row.params = Some(ParamMap(all));
        }
        Ok(Row::Generic(Box::new(row)))
    }
}

impl std::fmt::Debug for Parquet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parquet").field("total", &self.total).finish_non_exhaustive()
    }
}

impl Source for Parquet {
    fn next_row(&mut self) -> Option<Result<Row, Reject>> {
        loop {
            if let Some((n, columns)) = &self.batch
                && self.at < *n
            {
                let row = Self::row(columns, self.at);
                self.at += 1;
                self.done += 1;
                return Some(row);
            }
            match self.reader.as_mut()?.next()? {
                Ok(batch) => {
                    self.batch = Some((batch.num_rows(), prepare(&batch)));
                    self.at = 0;
                }
                Err(e) => {
                    // the rest of the file cannot be read: it is one bad row, and the end
                    self.batch = None;
                    self.done = self.total;
                    self.reader = None;
                    return Some(Err(bad_row(e)));
                }
            }
        }
    }

    fn done(&self) -> u64 {
        self.done
    }

    fn total(&self) -> u64 {
        self.total
    }
}

/// One data file of the replaced system's archive, and its partition.
#[derive(Debug, Clone)]
struct V1File {
    path: deltalake::Path,
    tenant_id: String,
    size: u64,
}

/// The columns of the replaced system's `events` table (its partition columns are in the log, not the files).
struct V1Columns {
    n: usize,
    text: [Option<ArrayRef>; 11],
    timestamp_ms: Option<ArrayRef>,
}

const V1_TEXT: [&str; 11] = [
    "event_id",
    "tenant_id",
    "tu_id",
    "event_type",
    "ip",
    "user_agent",
    "referer",
    "request_path",
    "request_host",
    "params",
    "raw_payload",
];

impl V1Columns {
    fn of(batch: &RecordBatch) -> V1Columns {
        V1Columns {
            n: batch.num_rows(),
            text: V1_TEXT.map(|name| text_column(batch, name)),
            timestamp_ms: millis_column(batch, "timestamp_ms"),
        }
    }

    fn row(&self, tenant: &str, i: usize) -> V1Row {
        let [event_id, tenant_id, tu_id, event_type, ip, user_agent, referer, request_path, request_host, params, raw] =
            self.text.each_ref().map(|c| text_at(c.as_ref(), i));
        V1Row {
            event_id: event_id.unwrap_or_default(),
            tenant_id: tenant_id.unwrap_or_else(|| tenant.to_owned()),
            tu_id,
            event_type: event_type.unwrap_or_default(),
            timestamp_ms: millis_at(self.timestamp_ms.as_ref(), i).unwrap_or_default(),
            ip,
            user_agent,
            referer,
            request_path,
            request_host,
            params,
            raw_payload: raw,
        }
    }
}

/// The replaced system's archive: its `events` Delta table, read file by file as the table's log lists them
/// (its compaction left the files it replaced in place: listing the folders would read rows twice).
pub struct V1Archive {
    store: Arc<dyn deltalake::ObjectStore>,
    files: Vec<V1File>,
    next_file: usize,
    reader: Option<ParquetRecordBatchReader>,
    tenant: String,
    columns: Option<V1Columns>,
    at: usize,
    done: u64,
    total: u64,
    runtime: tokio::runtime::Handle,
}

impl V1Archive {
    /// Opens the table at `location` (a directory or an `s3://` URL; S3 and R2 credentials and endpoint from the
    /// `AWS_*` environment) and returns it with its fingerprint (its version and files).
    pub async fn open(location: &str) -> Result<(V1Archive, String), ImportError> {
        use futures::TryStreamExt as _;
        deltalake::aws::register_handlers(None);
        let url = if location.contains("://") {
            url::Url::parse(location).map_err(|e| ImportError::Source(format!("{location}: {e}")))?
        } else {
            let dir = std::fs::canonicalize(location).map_err(|e| ImportError::Source(format!("{location}: {e}")))?;
            url::Url::from_directory_path(&dir)
                .map_err(|()| ImportError::Source(format!("{location}: not a directory")))?
        };
        let table = deltalake::open_table(url).await?;
        let views: Vec<_> = table.get_active_add_actions_by_partitions(&[]).try_collect().await?;
        let mut files: Vec<V1File> = views
            .iter()
            .map(|f| V1File {
                path: f.object_store_path(),
                tenant_id: f.partition_values_map().remove("tenant_id").flatten().unwrap_or_default(),
                size: u64::try_from(f.size()).unwrap_or(0),
            })
            .collect();
        files.sort_by(|a, b| a.path.as_ref().cmp(b.path.as_ref()));
        let mut h = Sha256::new();
        h.update(location.as_bytes());
        h.update(table.version().unwrap_or_default().to_le_bytes());
        for f in &files {
            h.update(f.path.as_ref().as_bytes());
            h.update(f.size.to_le_bytes());
        }
        let total = files.iter().map(|f| f.size).sum();
        let archive = V1Archive {
            store: table.object_store(),
            files,
            next_file: 0,
            reader: None,
            tenant: String::new(),
            columns: None,
            at: 0,
            done: 0,
            total,
            runtime: tokio::runtime::Handle::current(),
        };
        Ok((archive, hex::encode(h.finalize())))
    }

    /// Opens the next data file; `None` after the last.
    fn open_next(&mut self) -> Option<Result<(), Reject>> {
        let file = self.files.get(self.next_file)?.clone();
        self.next_file += 1;
        self.done += file.size;
        let (store, path) = (self.store.clone(), file.path.clone());
        let fetched = self.runtime.block_on(async move {
            use deltalake::logstore::object_store::ObjectStoreExt as _;
            store.get(&path).await?.bytes().await
        });
        let opened = fetched
            .map_err(bad_row)
            .and_then(|bytes| ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(bad_row))
            .and_then(|b| b.with_batch_size(8192).build().map_err(bad_row));
        self.columns = None;
        match opened {
            Ok(reader) => {
                self.reader = Some(reader);
                self.tenant = file.tenant_id;
                Some(Ok(()))
            }
            Err(e) => {
                self.reader = None;
                Some(Err(Reject::new("invalid_row", format!("{}: {}", file.path, e.message))))
            }
        }
    }
}

impl std::fmt::Debug for V1Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Archive").field("total", &self.total).finish_non_exhaustive()
    }
}

impl Source for V1Archive {
    fn next_row(&mut self) -> Option<Result<Row, Reject>> {
        loop {
            if let Some(cols) = &self.columns
                && self.at < cols.n
            {
                let row = cols.row(&self.tenant, self.at);
                self.at += 1;
                return Some(Ok(Row::V1(Box::new(row))));
            }
            let next = self.reader.as_mut().and_then(Iterator::next);
            match next {
                Some(Ok(batch)) => {
                    self.columns = Some(V1Columns::of(&batch));
                    self.at = 0;
                }
                Some(Err(e)) => {
                    self.reader = None;
                    self.columns = None;
                    return Some(Err(bad_row(e)));
                }
                None => {
                    if let Err(e) = self.open_next()? {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    fn done(&self) -> u64 {
        self.done
    }

    fn total(&self) -> u64 {
        self.total
    }
}
