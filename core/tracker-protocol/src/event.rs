//! The event model, client input, and validation limits.
//!
//! An [`Event`] is what every stage stores and passes on. Clients never send an `Event` directly: they send an
//! [`EventInput`] (the `/batch` and `/ingest` body) and the intake builds the event with [`build_event`], taking the
//! tenant from the credential, never from the body.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::ProtocolError;

/// Milliseconds of 2000-01-01T00:00:00Z; earlier timestamps are certainly a unit mistake (seconds for ms).
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;

/// How the platform knows who sent an event. Later stages trust a conversion only when it is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// Anyone could have sent it (a v1-style postback, a beacon, an impression pixel).
    #[default]
    None,
    /// A click through a verified signed, encrypted or short link.
    Link,
    /// A request carrying a tenant credential (ingest or postback token).
    Token,
    /// A request whose params carry a valid v2 signature.
    Signature,
    /// History brought in by the operator (`tracker-core import`), not live traffic: the filter spares it the bot
    /// and rate rules, and it is metered as `imported`, not billed.
    Import,
}

impl Auth {
    pub const ALL: [Auth; 5] = [Auth::None, Auth::Link, Auth::Token, Auth::Signature, Auth::Import];

    pub fn as_u8(self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Link => 1,
            Auth::Token => 2,
            Auth::Signature => 3,
            Auth::Import => 4,
        }
    }

    pub fn from_u8(v: u8) -> Option<Auth> {
        Auth::ALL.get(usize::from(v)).copied()
    }

    /// The name events carry in JSON and in the archive.
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Link => "link",
            Auth::Token => "token",
            Auth::Signature => "signature",
            Auth::Import => "import",
        }
    }

    /// The value named `name` ([`Auth::as_str`]).
    pub fn from_name(name: &str) -> Option<Auth> {
        Auth::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn is_authenticated(self) -> bool {
        self != Auth::None
    }
}

/// A JSON document kept verbatim (the optional `raw_payload` of an event). Always valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(String);

impl RawJson {
    /// Checks that `text` is one JSON value.
    pub fn parse(text: &str) -> Result<RawJson, ProtocolError> {
        RawJson::check(text).map(|json| RawJson(json.to_owned()))
    }

    /// Checks that `text` is one JSON value, and returns it without the whitespace around it, borrowed.
    pub fn check(text: &str) -> Result<&str, ProtocolError> {
        serde_json::from_str::<&RawValue>(text)
            .map(RawValue::get)
            .map_err(|e| ProtocolError::InvalidEventBody { reason: format!("raw_payload: {e}") })
    }

    /// Text that [`RawJson::check`] returned.
    pub(crate) fn checked(text: String) -> RawJson {
        RawJson(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(RawJson(raw.get().to_owned()))
    }
}

/// One tracked event: the unit of storage, dedup (by `event_id`) and billing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// UUIDv7 for events minted by the platform; a client-supplied UUID is kept so retries are idempotent.
    pub event_id: Uuid,
    pub event_type: String,
    /// When the event happened, ms since the Unix epoch (client-supplied or `received_at`).
    pub timestamp: i64,
    /// When the platform first received it, ms since the Unix epoch.
    pub received_at: i64,
    /// The tenant. Partitioning key everywhere.
    pub key_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_host: Option<String>,
    /// Opaque user vocabulary; the platform never interprets it.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_payload: Option<RawJson>,
    #[serde(default)]
    pub auth: Auth,
    /// The client timestamp is older than [`Limits::historical_after_ms`]: a backfill, not live traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub historical: bool,
    /// The request carried more than the event holds (params past a limit, or with names or values this model
    /// refuses, sent in the formats of the system this one replaces): what did not fit is in `raw_payload` under
    /// `v1`, or counted there when even that was full. The filter lists such events in the drop ledger as flagged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
}

/// Documented limits. Every violation has its own error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_event_type_len: usize,
    pub max_params: usize,
    pub max_param_key_len: usize,
    pub max_param_value_len: usize,
    pub max_raw_payload_bytes: usize,
    /// ip, user_agent, referer, accept_language, request_path, request_host.
    pub max_field_len: usize,
    pub max_event_bytes: usize,
    /// How far in the future a client timestamp may be (clock skew).
    pub max_future_skew_ms: i64,
    /// Client timestamps older than this (relative to `received_at`) mark the event historical.
    pub historical_after_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_type_len: 64,
            max_params: 64,
            max_param_key_len: 64,
            max_param_value_len: 1024,
            max_raw_payload_bytes: 16 * 1024,
            max_field_len: 2048,
            max_event_bytes: 32 * 1024,
            max_future_skew_ms: 5 * 60 * 1000,
            historical_after_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// `[A-Za-z0-9_.:-]{1,max}`, the charset of event types and param keys.
pub fn is_valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(is_name_char)
}

/// `[a-z0-9]{2,32}`: tenant key prefixes (they appear in signatures before an underscore).
pub fn is_valid_key_prefix(s: &str) -> bool {
    (2..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Cuts a header-derived value to at most `max` bytes on a character boundary. A click must not fail because of
/// an absurd User-Agent, so request metadata is truncated while client-supplied fields are rejected.
pub fn truncate_field(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The short link of an event with this request path and `tu_id` param: `/t/<tu_id>` with the same `tu_id`.
pub(crate) fn short_link<'a>(request_path: Option<&str>, tu_id: Option<&'a str>) -> Option<&'a str> {
    match (request_path.and_then(|p| p.strip_prefix("/t/")), tu_id) {
        (Some(path), Some(tu)) if path == tu => Some(tu),
        _ => None,
    }
}

impl Event {
    /// The short link this event is a click on (`/t/<tu_id>` with the same `tu_id` param), if any. Every tier
    /// counts "per link" by this one definition.
    pub fn link(&self) -> Option<&str> {
        short_link(self.request_path.as_deref(), self.params.get("tu_id").map(String::as_str))
    }

    /// Checks every limit. Used on events the platform builds and on events forwarded by the edge.
    pub fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        Checked {
            event_id: self.event_id,
            event_type: &self.event_type,
            key_prefix: &self.key_prefix,
            timestamp: self.timestamp,
            received_at: self.received_at,
            fields: [
                self.ip.as_deref(),
                self.user_agent.as_deref(),
                self.referer.as_deref(),
                self.accept_language.as_deref(),
                self.request_path.as_deref(),
                self.request_host.as_deref(),
            ],
            params: self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            raw_payload: self.raw_payload.as_ref().map(RawJson::as_str),
        }
        .check(limits)
    }
}

/// The names of an event's request fields, in the order of [`Checked::fields`] (and of the wire format).
pub(crate) const FIELD_NAMES: [&str; 6] =
    ["ip", "user_agent", "referer", "accept_language", "request_path", "request_host"];

/// What [`Event::validate`] checks, borrowed, so that an owned event and a view ([`crate::wire::EventView`]) are
/// checked by one implementation.
pub(crate) struct Checked<'a, P: ExactSizeIterator<Item = (&'a str, &'a str)>> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub key_prefix: &'a str,
    pub timestamp: i64,
    pub received_at: i64,
    /// In the order of [`FIELD_NAMES`].
    pub fields: [Option<&'a str>; 6],
    pub params: P,
    pub raw_payload: Option<&'a str>,
}

impl<'a, P: ExactSizeIterator<Item = (&'a str, &'a str)>> Checked<'a, P> {
    pub(crate) fn check(self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.event_id.is_nil() {
            return Err(ProtocolError::InvalidEventId);
        }
        if !is_valid_name(self.event_type, limits.max_event_type_len) {
            return Err(ProtocolError::InvalidEventType { max: limits.max_event_type_len });
        }
        if !is_valid_key_prefix(self.key_prefix) {
            return Err(ProtocolError::InvalidKeyPrefix);
        }
        if self.timestamp < MIN_TIMESTAMP_MS || self.received_at < MIN_TIMESTAMP_MS {
            return Err(ProtocolError::InvalidTimestamp);
        }
        if self.timestamp > self.received_at.saturating_add(limits.max_future_skew_ms) {
            return Err(ProtocolError::TimestampInFuture { skew_ms: limits.max_future_skew_ms });
        }
        if self.params.len() > limits.max_params {
            return Err(ProtocolError::TooManyParams { max: limits.max_params });
        }
        let mut total = self.event_type.len() + self.key_prefix.len() + 64;
        for (k, v) in self.params {
            if !is_valid_name(k, limits.max_param_key_len) {
                return Err(ProtocolError::InvalidParamKey { key: k.to_owned(), max: limits.max_param_key_len });
            }
            if v.len() > limits.max_param_value_len {
                return Err(ProtocolError::ParamValueTooLong { key: k.to_owned(), max: limits.max_param_value_len });
            }
            total += k.len() + v.len();
        }
        for (field, value) in FIELD_NAMES.into_iter().zip(self.fields) {
            if let Some(v) = value {
                if v.len() > limits.max_field_len {
                    return Err(ProtocolError::FieldTooLong { field, max: limits.max_field_len });
                }
                total += v.len();
            }
        }
        if let Some(raw) = self.raw_payload {
            if raw.len() > limits.max_raw_payload_bytes {
                return Err(ProtocolError::RawPayloadTooLarge { max: limits.max_raw_payload_bytes });
            }
            total += raw.len();
        }
        if total > limits.max_event_bytes {
            return Err(ProtocolError::EventTooLarge { max: limits.max_event_bytes });
        }
        Ok(())
    }
}

/// Mints a UUIDv7 from an injected clock reading and injected randomness (the crate never reads either itself).
pub fn new_event_id(unix_ms: i64, random: [u8; 10]) -> Uuid {
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(unix_ms).unwrap_or(0), &random).into_uuid()
}

/// The tenant's partition: FNV-1a (64-bit) of the key prefix modulo the partition count. Stable across processes,
/// versions and languages, so the embedded log, Iggy and any SDK agree on it.
pub fn partition_for(key_prefix: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key_prefix.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

/// A param value as clients send it: strings are kept, numbers and booleans are turned into their JSON text,
/// anything else (null, arrays, objects) is refused with the key named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for ParamMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string, number or boolean values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<ParamValue>()?;
                    let Some(value) = value.0 else {
                        return Err(de::Error::custom(format!("param {key:?} must be a string, number or boolean")));
                    };
                    // the entry, not `insert`: no copy of the key just to name it in an error
                    match out.entry(key) {
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                        std::collections::btree_map::Entry::Occupied(o) => {
                            return Err(de::Error::custom(format!("param {:?} appears more than once", o.key())));
                        }
                    }
                }
                Ok(ParamMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct ParamValue(Option<String>);

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ParamValue, E> {
                Ok(ParamValue(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ParamValue, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(ParamValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamValue, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(ParamValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// What a client sends for one event (`/batch` element, `/ingest` body). Unknown fields are refused so that a typo
/// (or an attempt to set `key_prefix`) is an error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    #[serde(default)]
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub params: Option<ParamMap>,
    #[serde(default)]
    pub raw_payload: Option<RawJson>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub accept_language: Option<String>,
}

impl EventInput {
    /// Parses one event from JSON, turning serde's message into a precise rejection.
    pub fn from_json(bytes: &[u8]) -> Result<EventInput, ProtocolError> {
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::InvalidEventBody { reason: e.to_string() })
    }
}

/// Server-side facts about the request that carried an event.
#[derive(Debug, Clone, Default)]
pub struct IntakeContext<'a> {
    /// The tenant, from the verified credential.
    pub key_prefix: &'a str,
    pub received_at: i64,
    pub auth: Auth,
    pub request_path: Option<&'a str>,
    pub request_host: Option<&'a str>,
}

/// Builds and validates an event from client input. `random` feeds the UUIDv7 when the client sent no id.
pub fn build_event(
    input: EventInput,
    ctx: &IntakeContext<'_>,
    limits: &Limits,
    random: [u8; 10],
) -> Result<Event, ProtocolError> {
    let event_id = match input.event_id.as_deref() {
        Some(s) => parse_event_id(s)?,
        None => new_event_id(ctx.received_at, random),
    };
    let timestamp = input.timestamp.unwrap_or(ctx.received_at);
    let historical = ctx.received_at.saturating_sub(timestamp) > limits.historical_after_ms;
    let event = Event {
        event_id,
        event_type: input.event_type,
        timestamp,
        received_at: ctx.received_at,
        key_prefix: ctx.key_prefix.to_owned(),
        ip: input.ip,
        user_agent: input.user_agent,
        referer: input.referer,
        accept_language: input.accept_language,
        request_path: ctx.request_path.map(str::to_owned),
        request_host: ctx.request_host.map(str::to_owned),
        params: input.params.map(|p| p.0).unwrap_or_default(),
        raw_payload: input.raw_payload,
        auth: ctx.auth,
        historical,
        overflow: false,
    };
    event.validate(limits)?;
    Ok(event)
}

/// A client-supplied event id: any non-nil UUID in hyphenated form.
pub fn parse_event_id(s: &str) -> Result<Uuid, ProtocolError> {
    if s.len() != 36 {
        return Err(ProtocolError::InvalidEventId);
    }
    match Uuid::try_parse(s) {
        Ok(id) if !id.is_nil() => Ok(id),
        _ => Err(ProtocolError::InvalidEventId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_770_704_294_008;

    fn ctx() -> IntakeContext<'static> {
        IntakeContext { key_prefix: "6vct", received_at: NOW, auth: Auth::Token, ..Default::default() }
    }

    fn input(json: &str) -> Result<Event, ProtocolError> {
        build_event(EventInput::from_json(json.as_bytes())?, &ctx(), &Limits::default(), [7; 10])
    }

    #[test]
    fn builds_event_with_v7_id_and_tenant_from_context() {
        let e = input(r#"{"event_type":"click","params":{"sub1":"g","n":3,"ok":true}}"#).unwrap();
        assert_eq!(e.event_id.get_version_num(), 7);
        assert_eq!(e.key_prefix, "6vct");
        assert_eq!(e.timestamp, NOW);
        assert_eq!(e.params.get("n").map(String::as_str), Some("3"));
        assert_eq!(e.params.get("ok").map(String::as_str), Some("true"));
        // the id's embedded time is the received time
        let (secs, nanos) = e.event_id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64 * 1000 + i64::from(nanos / 1_000_000), NOW);
    }

    #[test]
    fn only_a_click_on_a_short_link_names_a_link() {
        let mut e = input(r#"{"event_type":"click","params":{"tu_id":"abc"}}"#).unwrap();
        assert_eq!(e.link(), None, "a tu_id param alone is the tenant's vocabulary, not a click on our link");
        e.request_path = Some("/t/abc".into());
        assert_eq!(e.link(), Some("abc"));
        e.request_path = Some("/t/other".into());
        assert_eq!(e.link(), None);
    }

    #[test]
    fn honours_client_event_id_and_marks_old_events_historical() {
        let e =
            input(r#"{"event_id":"019c4633-5078-7411-8858-4aeafb6298bb","event_type":"x","timestamp":1000000000000}"#)
                .unwrap();
        assert_eq!(e.event_id.to_string(), "019c4633-5078-7411-8858-4aeafb6298bb");
        assert!(e.historical);
    }

    #[test]
    fn each_violation_has_its_own_code() {
        let cases = [
            (r#"{"event_type":"has space"}"#, "invalid_event_type"),
            (r#"{"event_type":""}"#, "invalid_event_type"),
            (r#"{"event_type":"x","key_prefix":"evil"}"#, "invalid_event_body"),
            (r#"{"event_type":"x","params":{"a":{"b":1}}}"#, "invalid_event_body"),
            (r#"{"event_type":"x","params":{"bad key":"v"}}"#, "invalid_param_key"),
            (r#"{"event_type":"x","event_id":"nope"}"#, "invalid_event_id"),
            (r#"{"event_type":"x","event_id":"00000000-0000-0000-0000-000000000000"}"#, "invalid_event_id"),
            (r#"{"event_type":"x","timestamp":1770704}"#, "invalid_timestamp"),
            (r#"{"event_type":"x","timestamp":1870704294008}"#, "timestamp_in_future"),
        ];
        for (json, code) in cases {
            assert_eq!(input(json).unwrap_err().code(), code, "{json}");
        }
        let long = format!(r#"{{"event_type":"x","params":{{"k":"{}"}}}}"#, "v".repeat(1025));
        assert_eq!(input(&long).unwrap_err().code(), "param_value_too_long");
        let many: Vec<String> = (0..65).map(|i| format!(r#""k{i}":"v""#)).collect();
        let many = format!(r#"{{"event_type":"x","params":{{{}}}}}"#, many.join(","));
        assert_eq!(input(&many).unwrap_err().code(), "too_many_params");
        let big = format!(r#"{{"event_type":"x","raw_payload":"{}"}}"#, "a".repeat(17000));
        assert_eq!(input(&big).unwrap_err().code(), "raw_payload_too_large");
        let ua = format!(r#"{{"event_type":"x","user_agent":"{}"}}"#, "a".repeat(3000));
        assert_eq!(input(&ua).unwrap_err().code(), "field_too_long");
    }

    #[test]
    fn raw_payload_round_trips_verbatim() {
        let e = input(r#"{"event_type":"x","raw_payload":{"a":[1,2,{"b":null}]}}"#).unwrap();
        assert_eq!(e.raw_payload.as_ref().map(RawJson::as_str), Some(r#"{"a":[1,2,{"b":null}]}"#));
        let json = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_field("héllo", 2), "h");
        assert_eq!(truncate_field("abc", 10), "abc");
    }

    #[test]
    fn partitions_are_stable() {
        // pinned: FNV-1a 64 of "6vct" mod 24, shared with every producer
        assert_eq!(partition_for("6vct", 24), partition_for("6vct", 24));
        assert!(partition_for("6vct", 24) < 24);
        assert_eq!(partition_for("anything", 1), 0);
    }
}
