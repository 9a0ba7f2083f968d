//! The binary wire format of events in the log: record sets (many events in one log entry, as Kafka and Iggy
//! batch them) so that a 1,000-event `/batch` is one write, not 1,000.
//!
//! ```text
//! record set := version:u8 (=1) count:u32le event_len:varint event ...      (count times)
//! event      := event_id:[16] timestamp:i64le received_at:i64le auth:u8 flags:u8
//!               str(event_type) str(key_prefix)
//!               opt(ip) opt(user_agent) opt(referer) opt(accept_language) opt(request_path) opt(request_host)
//!               param_count:varint (str(key) str(value))*  opt(raw_payload)
//! str        := len:varint utf8-bytes
//! opt        := 0 (absent) | len+1:varint utf8-bytes
//! varint     := unsigned LEB128, at most 10 bytes
//! flags      := bit 0 historical, bit 1 overflow; other bits zero
//! ```
//! Decoding checks every length against the remaining bytes, UTF-8 and JSON, and never panics.

use uuid::Uuid;

use crate::ProtocolError;
use crate::event::{Auth, Event, RawJson};

pub const RECORD_SET_VERSION: u8 = 1;

/// Record-set tag: the set holds events recorded from links (`auth = link`: clicks on signed and short links).
/// Tags travel beside a record set (in the log's index, or a broker message header), never inside it, so readers
/// that need only some kinds of events can skip whole sets without reading them.
pub const TAG_LINK: u8 = 1;
/// Record-set tag: the set holds clicks on short links (`/t/<tu_id>`).
pub const TAG_SHORT_LINK: u8 = 2;
/// Tags of a set whose contents are unknown (written before tags existed): read it.
pub const TAGS_UNKNOWN: u8 = u8::MAX;

/// The tags one event gives the record set that holds it.
pub fn tags_of(e: &Event) -> u8 {
    tags_for(e.auth, e.request_path.as_deref())
}

fn tags_for(auth: Auth, request_path: Option<&str>) -> u8 {
    if auth != Auth::Link {
        return 0;
    }
    let short = request_path.is_some_and(|p| p.starts_with("/t/tu_"));
    if short { TAG_LINK | TAG_SHORT_LINK } else { TAG_LINK }
}
const HEADER_LEN: usize = 5;

fn err(reason: &'static str) -> ProtocolError {
    ProtocolError::MalformedRecord { reason }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Appends one event's encoding (without its length prefix).
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    let fields = [&e.ip, &e.user_agent, &e.referer, &e.accept_language, &e.request_path, &e.request_host];
    let head = Head { event_id: e.event_id, timestamp: e.timestamp, received_at: e.received_at, auth: e.auth };
    let flags = (e.historical, e.overflow);
    let params = e.params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let raw = e.raw_payload.as_ref().map(RawJson::as_str);
    encode_parts(out, &head, flags, &e.event_type, &e.key_prefix, fields.map(|f| f.as_deref()), params, raw);
}

/// Appends one event's encoding from its view: the same bytes as [`encode_event`] of the owned event.
pub fn encode_view(e: &EventView<'_>, out: &mut Vec<u8>) {
    let fields = [e.ip, e.user_agent, e.referer, e.accept_language, e.request_path, e.request_host];
    let head = Head { event_id: e.event_id, timestamp: e.timestamp, received_at: e.received_at, auth: e.auth };
    let params = e.params.iter().copied();
    encode_parts(out, &head, (e.historical, e.overflow), e.event_type, e.key_prefix, fields, params, e.raw_payload);
}

/// The fixed-size start of an event's encoding.
struct Head {
    event_id: Uuid,
    timestamp: i64,
    received_at: i64,
    auth: Auth,
}

#[allow(clippy::too_many_arguments)] // the event's parts, in the order they are written
fn encode_parts<'a>(
    out: &mut Vec<u8>,
    head: &Head,
    (historical, overflow): (bool, bool),
    event_type: &str,
    key_prefix: &str,
    fields: [Option<&str>; 6],
    params: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    raw_payload: Option<&str>,
) {
    out.extend_from_slice(head.event_id.as_bytes());
    out.extend_from_slice(&head.timestamp.to_le_bytes());
    out.extend_from_slice(&head.received_at.to_le_bytes());
    out.push(head.auth.as_u8());
    out.push(u8::from(historical) | (u8::from(overflow) << 1));
    put_str(out, event_type);
    put_str(out, key_prefix);
    for f in fields {
        put_opt(out, f);
    }
    put_varint(out, params.len() as u64);
    for (k, v) in params {
        put_str(out, k);
        put_str(out, v);
    }
    put_opt(out, raw_payload);
}

/// Builds a record set event by event.
#[derive(Debug, Clone)]
pub struct RecordSetBuilder {
    buf: Vec<u8>,
    count: u32,
    tags: u8,
    scratch: Vec<u8>,
}

impl Default for RecordSetBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl RecordSetBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.push(RECORD_SET_VERSION);
        buf.extend_from_slice(&[0; 4]);
        RecordSetBuilder { buf, count: 0, tags: 0, scratch: Vec::with_capacity(512) }
    }

    pub fn push(&mut self, e: &Event) {
        self.scratch.clear();
        encode_event(e, &mut self.scratch);
        self.push_encoded(tags_of(e));
    }

    /// Pushes an event given as a view (the same bytes as [`RecordSetBuilder::push`] of the owned event).
    pub fn push_view(&mut self, e: &EventView<'_>) {
        self.scratch.clear();
        encode_view(e, &mut self.scratch);
        self.push_encoded(tags_for(e.auth, e.request_path));
    }

    fn push_encoded(&mut self, tags: u8) {
        put_varint(&mut self.buf, self.scratch.len() as u64);
        self.buf.extend_from_slice(&self.scratch);
        self.count += 1;
        self.tags |= tags;
    }

    /// The tags of the events pushed so far ([`tags_of`]).
    pub fn tags(&self) -> u8 {
        self.tags
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> Vec<u8> {
        if let Some(slot) = self.buf.get_mut(1..HEADER_LEN) {
            slot.copy_from_slice(&self.count.to_le_bytes());
        }
        self.buf
    }
}

/// Encodes a slice of events as one record set.
pub fn encode_record_set(events: &[Event]) -> Vec<u8> {
    let mut b = RecordSetBuilder::with_capacity(events.len() * 256);
    for e in events {
        b.push(e);
    }
    b.finish()
}

/// Reads the event count of a record set without decoding it.
pub fn record_set_len(buf: &[u8]) -> Result<u32, ProtocolError> {
    match buf {
        [RECORD_SET_VERSION, a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        [_, ..] => Err(err("unknown record set version")),
        [] => Err(err("empty record set")),
    }
}

/// Iterates the raw encoded events of a record set.
pub fn record_set_events(buf: &[u8]) -> Result<RecordSetIter<'_>, ProtocolError> {
    let count = record_set_len(buf)?;
    let rest = buf.get(HEADER_LEN..).ok_or(err("truncated header"))?;
    // every event takes at least 40 bytes: reject absurd counts before allocating anything
    if (count as usize).saturating_mul(40) > rest.len() {
        return Err(err("count larger than the record set"));
    }
    Ok(RecordSetIter { reader: Reader { buf: rest }, remaining: count })
}

/// Decodes a whole record set.
pub fn decode_record_set(buf: &[u8]) -> Result<Vec<Event>, ProtocolError> {
    let iter = record_set_events(buf)?;
    let mut out = Vec::with_capacity(iter.remaining as usize);
    for raw in iter {
        out.push(decode_event(raw?)?);
    }
    Ok(out)
}

#[derive(Debug)]
pub struct RecordSetIter<'a> {
    reader: Reader<'a>,
    remaining: u32,
}

impl<'a> Iterator for RecordSetIter<'a> {
    type Item = Result<&'a [u8], ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return if self.reader.buf.is_empty() {
                None
            } else {
                self.remaining = 0;
                self.reader.buf = &[];
                Some(Err(err("trailing bytes")))
            };
        }
        self.remaining -= 1;
        let item = self.reader.varint().and_then(|len| self.reader.take(len));
        if item.is_err() {
            self.remaining = 0;
            self.reader.buf = &[];
        }
        Some(item)
    }
}

#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], ProtocolError> {
        let n = usize::try_from(n).map_err(|_| err("length overflow"))?;
        if n > self.buf.len() {
            return Err(err("length past the end"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(N as u64)?;
        bytes.try_into().map_err(|_| err("short field"))
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    fn varint(&mut self) -> Result<u64, ProtocolError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    fn str(&mut self) -> Result<&'a str, ProtocolError> {
        let len = self.varint()?;
        self.utf8(len)
    }

    fn utf8(&mut self, len: u64) -> Result<&'a str, ProtocolError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| err("string is not UTF-8"))
    }

    fn opt(&mut self) -> Result<Option<&'a str>, ProtocolError> {
        match self.varint()? {
            0 => Ok(None),
            n => self.utf8(n - 1).map(Some),
        }
    }
}

/// An event read in place from its encoding: the strings borrow the record set. For consumers that only copy the
/// fields onward (the archiver, into Arrow columns), with no allocation per field; checked like [`decode_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub timestamp: i64,
    pub received_at: i64,
    pub key_prefix: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    pub request_path: Option<&'a str>,
    pub request_host: Option<&'a str>,
    /// In key order, each key once (as the event's map holds them).
    pub params: Vec<(&'a str, &'a str)>,
    /// Valid JSON.
    pub raw_payload: Option<&'a str>,
    pub auth: Auth,
    pub historical: bool,
    pub overflow: bool,
}

impl<'a> EventView<'a> {
    /// The value of param `key`.
    pub fn param(&self, key: &str) -> Option<&'a str> {
        self.params.binary_search_by(|(k, _)| (*k).cmp(key)).ok().and_then(|i| self.params.get(i)).map(|(_, v)| *v)
    }

    /// The short link this event is a click on, by the one definition every tier uses ([`Event::link`]).
    pub fn link(&self) -> Option<&'a str> {
        crate::event::short_link(self.request_path, self.param("tu_id"))
    }

    /// Checks every limit, as [`Event::validate`] does (params must be in key order, each key once, as a view
    /// holds them).
    pub fn validate(&self, limits: &crate::Limits) -> Result<(), ProtocolError> {
        crate::event::Checked {
            event_id: self.event_id,
            event_type: self.event_type,
            key_prefix: self.key_prefix,
            timestamp: self.timestamp,
            received_at: self.received_at,
            fields: [
                self.ip,
                self.user_agent,
                self.referer,
                self.accept_language,
                self.request_path,
                self.request_host,
            ],
            params: self.params.iter().copied(),
            raw_payload: self.raw_payload,
        }
        .check(limits)
    }

    /// The owned event.
    pub fn to_event(&self) -> Event {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Event {
            event_id: self.event_id,
            event_type: self.event_type.to_owned(),
            timestamp: self.timestamp,
            received_at: self.received_at,
            key_prefix: self.key_prefix.to_owned(),
            ip: owned(self.ip),
            user_agent: owned(self.user_agent),
            referer: owned(self.referer),
            accept_language: owned(self.accept_language),
            request_path: owned(self.request_path),
            request_host: owned(self.request_host),
            params: self.params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            raw_payload: self.raw_payload.map(|j| RawJson::checked(j.to_owned())),
            auth: self.auth,
            historical: self.historical,
            overflow: self.overflow,
        }
    }
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(e: &'a Event) -> EventView<'a> {
        EventView {
            event_id: e.event_id,
            event_type: &e.event_type,
            timestamp: e.timestamp,
            received_at: e.received_at,
            key_prefix: &e.key_prefix,
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            referer: e.referer.as_deref(),
            accept_language: e.accept_language.as_deref(),
            request_path: e.request_path.as_deref(),
            request_host: e.request_host.as_deref(),
            params: e.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            raw_payload: e.raw_payload.as_ref().map(RawJson::as_str),
            auth: e.auth,
            historical: e.historical,
            overflow: e.overflow,
        }
    }
}

/// Reads one event encoded by [`encode_event`] in place.
pub fn decode_event_view(buf: &[u8]) -> Result<EventView<'_>, ProtocolError> {
    let mut r = Reader { buf };
    let event_id = Uuid::from_bytes(r.array::<16>()?);
    let timestamp = i64::from_le_bytes(r.array::<8>()?);
    let received_at = i64::from_le_bytes(r.array::<8>()?);
    let auth = Auth::from_u8(r.u8()?).ok_or(err("unknown auth"))?;
    let flags = r.u8()?;
    if flags > 3 {
        return Err(err("unknown flags"));
    }
    let event_type = r.str()?;
    let key_prefix = r.str()?;
    let ip = r.opt()?;
    let user_agent = r.opt()?;
    let referer = r.opt()?;
    let accept_language = r.opt()?;
    let request_path = r.opt()?;
    let request_host = r.opt()?;
    let n = r.varint()?;
    if n > r.buf.len() as u64 / 2 {
        return Err(err("param count larger than the event"));
    }
    let mut params = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        let k = r.str()?;
        let v = r.str()?;
        params.push((k, v));
    }
    if !params.is_sorted_by(|a, b| a.0 < b.0) {
        // canonical, as the event's map holds them (an encoder writes them so): in key order, each key once, the
        // last one written winning
        params.reverse();
        params.sort_by(|a, b| a.0.cmp(b.0));
        params.dedup_by(|later, kept| later.0 == kept.0);
    }
    let raw_payload = r.opt()?.map(RawJson::check).transpose().map_err(|_| err("raw_payload is not JSON"))?;
    if !r.buf.is_empty() {
        return Err(err("trailing bytes in event"));
    }
    Ok(EventView {
        event_id,
        event_type,
        timestamp,
        received_at,
        key_prefix,
        ip,
        user_agent,
        referer,
        accept_language,
        request_path,
        request_host,
        params,
        raw_payload,
        auth,
        historical: flags & 1 == 1,
        overflow: flags & 2 == 2,
    })
}

/// Decodes one event encoded by [`encode_event`].
pub fn decode_event(buf: &[u8]) -> Result<Event, ProtocolError> {
    decode_event_view(buf).map(|v| v.to_event())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(i: u8) -> Event {
        Event {
            event_id: Uuid::from_bytes([i; 16]),
            event_type: "click".into(),
            timestamp: 1_770_704_294_008,
            received_at: 1_770_704_294_009,
            key_prefix: "6vct".into(),
            ip: Some("203.0.113.1".into()),
            user_agent: Some("Mozilla/5.0".into()),
            referer: None,
            accept_language: Some("en-US".into()),
            request_path: Some("/t".into()),
            request_host: None,
            params: [("sub1".to_string(), "google".to_string())].into(),
            raw_payload: Some(RawJson::parse(r#"{"a":1}"#).unwrap()),
            auth: Auth::Link,
            historical: i.is_multiple_of(2),
            overflow: i.is_multiple_of(3),
        }
    }

    #[test]
    fn record_sets_round_trip() {
        let events: Vec<Event> = (0..10).map(sample).collect();
        let buf = encode_record_set(&events);
        assert_eq!(record_set_len(&buf).unwrap(), 10);
        assert_eq!(decode_record_set(&buf).unwrap(), events);
    }

    #[test]
    fn views_read_what_events_decode() {
        let mut events: Vec<Event> = (0..4).map(sample).collect();
        events[1].request_path = Some("/t/abc".into());
        events[1].params.insert("tu_id".into(), "abc".into());
        let buf = encode_record_set(&events);
        for (raw, e) in record_set_events(&buf).unwrap().zip(&events) {
            let v = decode_event_view(raw.unwrap()).unwrap();
            assert_eq!(v, EventView::from(e));
            assert_eq!(v.to_event(), *e);
            assert_eq!(v.link(), e.link());
        }
        assert_eq!(
            decode_event_view(record_set_events(&buf).unwrap().nth(1).unwrap().unwrap()).unwrap().link(),
            Some("abc")
        );
    }

    #[test]
    fn views_encode_and_validate_as_their_events() {
        let mut events: Vec<Event> = (0..6).map(sample).collect();
        events[2].request_path = Some("/t/tu_x".into());
        events[2].auth = Auth::Link;
        events[3].params.insert("bad key".into(), "v".into());
        events[4].user_agent = Some("u".repeat(3000));
        let limits = crate::Limits::default();
        for e in &events {
            let mut b = RecordSetBuilder::default();
            b.push(e);
            let mut bv = RecordSetBuilder::default();
            bv.push_view(&EventView::from(e));
            assert_eq!((b.tags(), b.finish()), (bv.tags(), bv.finish()));
            assert_eq!(e.validate(&limits), EventView::from(e).validate(&limits));
        }
        assert!(EventView::from(&events[3]).validate(&limits).is_err());
    }

    #[test]
    fn views_hold_params_as_the_map_would() {
        let mut e = sample(1);
        e.raw_payload = None;
        e.params = [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into();
        let mut buf = Vec::new();
        encode_event(&e, &mut buf);
        let encoded: &[u8] = &[1, b'a', 1, b'1', 1, b'b', 1, b'2'];
        let at = buf.windows(encoded.len()).position(|w| w == encoded).unwrap();
        // an encoder that wrote the keys out of order, or one key twice: read as the map holds them
        for (written, expected) in [
            (&[1, b'b', 1, b'2', 1, b'a', 1, b'1'], vec![("a", "1"), ("b", "2")]),
            (&[1, b'b', 1, b'2', 1, b'b', 1, b'3'], vec![("b", "3")]),
        ] {
            let mut crafted = buf.clone();
            crafted.splice(at..at + encoded.len(), written.iter().copied());
            let view = decode_event_view(&crafted).unwrap();
            assert_eq!(view.params, expected);
            let owned = decode_event(&crafted).unwrap();
            assert_eq!(EventView::from(&owned).params, expected, "the owned event agrees");
        }
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let buf = encode_record_set(&[sample(1), sample(2)]);
        for cut in 0..buf.len() {
            assert!(decode_record_set(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert!(decode_record_set(&extra).is_err());
    }
}
