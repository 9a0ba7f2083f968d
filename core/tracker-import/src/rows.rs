//! Rows of an import source turned into events, with the same checks as `/batch` (generic rows) or as the
//! replaced system's own `/batch` (its archive's rows, [`tracker_protocol::v1`]). Every imported event has
//! `auth = import`: the filter spares it the bot and rate rules and meters it as `imported`, not billed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tracker_protocol::event::{MIN_TIMESTAMP_MS, ParamMap};
use tracker_protocol::service::GLOBAL_KEY_PREFIX;
use tracker_protocol::wire::EventView;
use tracker_protocol::{
    Auth, Event, Limits, ProtocolError, RawJson, is_valid_key_prefix, is_valid_name, new_event_id, parse_event_id, v1,
};

/// Why a row was not imported: a machine-readable code (the protocol's, or the import's own) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: &'static str,
    pub message: String,
}

impl From<ProtocolError> for Reject {
    fn from(e: ProtocolError) -> Self {
        Reject { code: e.code(), message: e.to_string() }
    }
}

impl Reject {
    pub fn new(code: &'static str, message: impl Into<String>) -> Reject {
        Reject { code, message: message.into() }
    }
}

/// A row of a generic source: a `/batch` element plus the tenant (`key_prefix` or `tenant`) and the request's
/// path and host. The fields an event of this platform carries and an import sets itself (`received_at`, `auth`,
/// `historical`, `overflow`, `tu_id`) are accepted and ignored, so `/api/events` answers and `tracker-core log dump`
/// lines import as they are. Any other field is refused, as `/batch` refuses it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericRow {
    #[serde(default)]
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default, alias = "tenant")]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub accept_language: Option<String>,
    #[serde(default)]
    pub request_path: Option<String>,
    #[serde(default)]
    pub request_host: Option<String>,
    #[serde(default)]
    pub params: Option<ParamMap>,
    #[serde(default)]
    pub raw_payload: Option<RawJson>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    pub(crate) received_at: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    pub(crate) auth: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    pub(crate) historical: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    pub(crate) overflow: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    pub(crate) tu_id: Option<IgnoredAny>,
}

/// A generic row borrowed from its JSON text where it can be (strings without escapes): the same fields and rules
/// as [`GenericRow`], read without copying, for the sources whose rows are JSON (NDJSON).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowRef<'a> {
    #[serde(default, borrow)]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default, borrow, alias = "tenant")]
    pub key_prefix: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ip: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub referer: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub accept_language: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub request_path: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub request_host: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub params: ParamsRef<'a>,
    #[serde(default, borrow)]
    pub raw_payload: Option<&'a RawValue>,
    /// The raw payload of a row that was not JSON (already checked to be JSON).
    #[serde(skip)]
    pub raw_text: Option<&'a str>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    received_at: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    auth: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    historical: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    overflow: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read: the import sets it
    tu_id: Option<IgnoredAny>,
}

/// A line of `tracker-core log dump`: `{"event": {...}, "offset": n, "partition": n}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpLineRef<'a> {
    #[serde(borrow)]
    pub event: RowRef<'a>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read
    offset: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, never read
    partition: Option<IgnoredAny>,
}

/// Params as `/batch` takes them (text, numbers and booleans as their JSON text; anything else refused with the
/// name, as is a name given twice), borrowed where they are text without escapes, sorted by name.
#[derive(Debug, Default)]
pub struct ParamsRef<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for ParamsRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<'a>(Option<Cow<'a, str>>);
        impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Text<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a string, number or boolean")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Borrowed(v))))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Owned(v.to_owned()))))
                    }
                    fn visit_bool<E>(self, v: bool) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Owned(v.to_string()))))
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Owned(v.to_string()))))
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Owned(v.to_string()))))
                    }
                    fn visit_f64<E>(self, v: f64) -> Result<Text<'de>, E> {
                        Ok(Text(Some(Cow::Owned(v.to_string()))))
                    }
                    fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                        Ok(Text(None))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        Ok(Text(None))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        Ok(Text(None))
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct M;
        impl<'de> serde::de::Visitor<'de> for M {
            type Value = ParamsRef<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of string, number or boolean values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ParamsRef<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, Cow<'de, str>)> = Vec::new();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let key = key.ok_or_else(|| serde::de::Error::custom("param names must be strings"))?;
                    let Text(value) = map.next_value::<Text<'de>>()?;
                    let value = value.ok_or_else(|| {
                        serde::de::Error::custom(format!("param {key:?} must be a string, number or boolean"))
                    })?;
                    out.push((key, value));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                if let Some(w) = out.windows(2).find(|w| w.first().map(|a| &a.0) == w.get(1).map(|b| &b.0)) {
                    let name = w.first().map(|a| a.0.to_string()).unwrap_or_default();
                    return Err(serde::de::Error::custom(format!("param {name:?} appears more than once")));
                }
                Ok(ParamsRef(out))
            }
        }
        d.deserialize_map(M)
    }
}

impl GenericRow {
    /// The row, borrowed, as [`RowContext::view`] takes it.
    pub fn as_row_ref(&self) -> RowRef<'_> {
        fn b(s: &Option<String>) -> Option<Cow<'_, str>> {
            s.as_deref().map(Cow::Borrowed)
        }
        RowRef {
            event_id: b(&self.event_id),
            event_type: Cow::Borrowed(&self.event_type),
            timestamp: self.timestamp,
            key_prefix: b(&self.key_prefix),
            ip: b(&self.ip),
            user_agent: b(&self.user_agent),
            referer: b(&self.referer),
            accept_language: b(&self.accept_language),
            request_path: b(&self.request_path),
            request_host: b(&self.request_host),
            params: ParamsRef(
                self.params
                    .iter()
                    .flat_map(|p| &p.0)
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect(),
            ),
            raw_payload: None,
            raw_text: self.raw_payload.as_ref().map(RawJson::as_str),
            ..RowRef::default()
        }
    }
}

/// A row of the replaced system's archive (its `events` Delta table): every column is text but `timestamp_ms`.
#[derive(Debug, Default, Clone)]
pub struct V1Row {
    pub event_id: String,
    /// Its key prefix, or `_global` for events that named none.
    pub tenant_id: String,
    /// `_no_link` when none.
    pub tu_id: Option<String>,
    pub event_type: String,
    pub timestamp_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub request_path: Option<String>,
    pub request_host: Option<String>,
    /// A JSON object of strings.
    pub params: Option<String>,
    /// JSON text.
    pub raw_payload: Option<String>,
}

/// The tenant that replaced system filed events under when they named none.
pub const V1_GLOBAL_TENANT: &str = "_global";

/// What building an event from a row needs.
#[derive(Debug, Clone)]
pub struct RowContext {
    /// The tenants of this platform.
    pub tenants: HashSet<String>,
    /// The tenant of rows that name none (`--tenant`).
    pub default_tenant: Option<String>,
    /// The tenant of the replaced system's events that named none (the platform's global tenant).
    pub global_tenant: Option<String>,
    /// The run's id: the ids of rows without one are derived from it and the row's number, so a re-run mints the
    /// same ids.
    pub run_id: String,
    pub limits: Limits,
    /// The import's time: the events' `received_at`.
    pub now: i64,
}

impl RowContext {
    /// `p` if it is a tenant of this platform.
    fn check_tenant<'a>(&self, p: &'a str) -> Result<&'a str, Reject> {
        if !is_valid_key_prefix(p) || p == GLOBAL_KEY_PREFIX {
            return Err(ProtocolError::InvalidKeyPrefix.into());
        }
        if !self.tenants.contains(p) {
            return Err(Reject::new("unknown_tenant", format!("no tenant {p:?} on this platform (import it first)")));
        }
        Ok(p)
    }

    fn tenant(&self, named: Option<String>) -> Result<String, Reject> {
        let p = named.filter(|p| !p.is_empty()).or_else(|| self.default_tenant.clone()).ok_or_else(|| {
            Reject::new("missing_key_prefix", "the row names no tenant (key_prefix or tenant); give --tenant")
        })?;
        if !is_valid_key_prefix(&p) || p == GLOBAL_KEY_PREFIX {
            return Err(ProtocolError::InvalidKeyPrefix.into());
        }
        if !self.tenants.contains(&p) {
            return Err(Reject::new("unknown_tenant", format!("no tenant {p:?} on this platform (import it first)")));
        }
        Ok(p)
    }

    /// Ten random-looking bytes for row `row`, the same on every run.
    fn row_bytes(&self, row: u64) -> [u8; 10] {
        let digest = Sha256::digest(format!("{}\0{row}", self.run_id).as_bytes());
        let mut out = [0u8; 10];
        out.copy_from_slice(digest.get(..10).unwrap_or(&[0; 10]));
        out
    }

    /// A generic row as an event, checked as `/batch` checks its elements.
    pub fn generic(&self, row: GenericRow, row_no: u64) -> Result<Event, Reject> {
        Ok(self.view(&row.as_row_ref(), row_no)?.to_event())
    }

    /// A generic row as an event that borrows from it, checked as `/batch` checks its elements: with the tenant
    /// (the row's or `--tenant`), `received_at` now, `auth: import`, an id derived from the run and the row's
    /// number when it has none.
    pub fn view<'a>(&'a self, row: &'a RowRef<'a>, row_no: u64) -> Result<EventView<'a>, Reject> {
        let key_prefix: &'a str = match row.key_prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => self.check_tenant(p)?,
            None => self.check_tenant(self.default_tenant.as_deref().ok_or_else(|| {
                Reject::new("missing_key_prefix", "the row names no tenant (key_prefix or tenant); give --tenant")
            })?)?,
        };
        let timestamp = row.timestamp.unwrap_or(self.now);
        let event_id = match row.event_id.as_deref() {
            Some(id) => parse_event_id(id)?,
            None => new_event_id(timestamp, self.row_bytes(row_no)),
        };
        let raw_payload = match row.raw_payload {
            Some(raw) => Some(RawJson::check(raw.get())?),
            None => row.raw_text,
        };
        let view = EventView {
            event_id,
            event_type: &row.event_type,
            timestamp,
            received_at: self.now,
            key_prefix,
            ip: row.ip.as_deref(),
            user_agent: row.user_agent.as_deref(),
            referer: row.referer.as_deref(),
            accept_language: row.accept_language.as_deref(),
            request_path: row.request_path.as_deref(),
            request_host: row.request_host.as_deref(),
            params: row.params.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect(),
            raw_payload,
            auth: Auth::Import,
            historical: self.now.saturating_sub(timestamp) > self.limits.historical_after_ms,
            overflow: false,
        };
        view.validate(&self.limits)?;
        Ok(view)
    }

    /// A row of the replaced system's archive as an event, read as its `/batch` was: params that do not fit are
    /// kept raw ([`v1::fit`]).
    pub fn v1(&self, row: V1Row) -> Result<Event, Reject> {
        let key_prefix = if row.tenant_id == V1_GLOBAL_TENANT {
            self.global_tenant.clone().ok_or_else(|| {
                Reject::new(
                    "no_global_tenant",
                    "the row belongs to no tenant there: assign one first (tracker-core global assign <prefix>)",
                )
            })?
        } else {
            self.tenant(Some(row.tenant_id))?
        };
        let (event_id, odd_id) = v1::event_id(&key_prefix, &row.event_id);
        if !is_valid_name(&row.event_type, self.limits.max_event_type_len) {
            return Err(ProtocolError::InvalidEventType { max: self.limits.max_event_type_len }.into());
        }
        let tu_id = row.tu_id.filter(|t| !t.is_empty() && t != "_no_link");
        // there a click on a short link recorded the path `/t`; here it is `/t/<tu_id>`, which counts per link
        let request_path = match (&row.request_path, &tu_id) {
            (Some(p), Some(tu)) if p == "/t" && row.event_type == "click" => Some(format!("/t/{tu}")),
            (p, _) => p.clone(),
        };
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let cut = |s: Option<String>| {
            nonempty(s).map(|s| tracker_protocol::truncate_field(&s, self.limits.max_field_len).to_owned())
        };
        let raw_payload = match nonempty(row.raw_payload) {
            Some(text) if text != "null" => Some(RawJson::parse(&text)?),
            _ => None,
        };
        let mut event = Event {
            event_id,
            event_type: row.event_type,
            timestamp: row.timestamp_ms,
            received_at: self.now,
            key_prefix: key_prefix.clone(),
            ip: cut(row.ip),
            user_agent: cut(row.user_agent),
            referer: cut(row.referer),
            accept_language: None,
            request_path: cut(request_path),
            request_host: cut(row.request_host),
            params: BTreeMap::new(),
            raw_payload,
            auth: Auth::Import,
            historical: self.now.saturating_sub(row.timestamp_ms) > self.limits.historical_after_ms
                && row.timestamp_ms >= MIN_TIMESTAMP_MS,
            overflow: false,
        };
        let (mut params, unreadable) = match nonempty(row.params) {
            Some(text) => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
                Ok(map) => v1::object_params(map),
                Err(_) => (Vec::new(), vec![("params".to_owned(), text)]),
            },
            None => (Vec::new(), Vec::new()),
        };
        // the tenant named in its params there is the event's tenant here
        params.retain(|(k, v)| !(k == "key_prefix" && *v == key_prefix));
        // its `tu_id` column is the param it was taken from
        if let Some(tu) = tu_id
            && !params.iter().any(|(k, _)| k == "tu_id")
        {
            params.push(("tu_id".to_owned(), tu));
        }
        let mut extra = serde_json::Map::new();
        if let Some(id) = odd_id {
            extra.insert("v1".into(), serde_json::json!({ "event_id": id }));
        }
        v1::fit(&mut event, params, unreadable, extra, &self.limits);
        event.validate(&self.limits)?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_770_704_294_008;
    /// An event as `/api/events` lists it.
    const LISTED: &str = concat!(
        r#"{"event_id":"019c4633-5078-7411-8858-4aeafb6298bb","event_type":"click","timestamp":1770704290000,"#,
        r#""received_at":1770704290001,"key_prefix":"6vct","params":{},"auth":"link"}"#
    );

    fn ctx() -> RowContext {
        RowContext {
            tenants: ["acme".to_owned(), "6vct".to_owned()].into(),
            default_tenant: None,
            global_tenant: Some("acme".into()),
            run_id: "run".into(),
            limits: Limits::default(),
            now: NOW,
        }
    }

    fn generic(json: &str, row: u64) -> Result<Event, Reject> {
        ctx().generic(serde_json::from_str(json).map_err(|e| Reject::new("invalid_row", e.to_string()))?, row)
    }

    #[test]
    fn generic_rows_are_checked_as_batch_elements_and_get_stable_ids() {
        let e = generic(
            r#"{"event_type":"signup","key_prefix":"acme","timestamp":1700000000000,"params":{"plan":"pro"}}"#,
            7,
        )
        .unwrap();
        assert_eq!((e.auth, e.historical, e.received_at), (Auth::Import, true, NOW));
        let again = generic(r#"{"event_type":"signup","tenant":"acme","timestamp":1700000000000}"#, 7).unwrap();
        assert_eq!(e.event_id, again.event_id, "the same row of the same run gets the same id");
        assert_eq!(generic(r#"{"event_type":"x","key_prefix":"nobody"}"#, 0).unwrap_err().code, "unknown_tenant");
        assert_eq!(generic(r#"{"event_type":"x"}"#, 0).unwrap_err().code, "missing_key_prefix");
        assert_eq!(
            generic(r#"{"event_type":"x","key_prefix":"acme","params":{"a b":"1"}}"#, 0).unwrap_err().code,
            "invalid_param_key"
        );
        // an event of this platform, as /api/events lists it, imports as it is
        assert_eq!(generic(LISTED, 0).unwrap().event_id.to_string(), "019c4633-5078-7411-8858-4aeafb6298bb");
    }

    #[test]
    fn v1_rows_keep_what_they_carried() {
        let row = V1Row {
            event_id: "019c4633-5078-7411-8858-4aeafb6298bb".into(),
            tenant_id: "6vct".into(),
            tu_id: Some("tu_019502a1-7b3c-7def-8abc-1234567890ab".into()),
            event_type: "click".into(),
            timestamp_ms: 1_770_000_000_000,
            ip: Some("203.0.113.9".into()),
            user_agent: Some(String::new()),
            request_path: Some("/t".into()),
            params: Some(
                r#"{"key_prefix":"6vct","tu_id":"tu_019502a1-7b3c-7def-8abc-1234567890ab","utm[s]":"g"}"#.into(),
            ),
            ..V1Row::default()
        };
        let e = ctx().v1(row.clone()).unwrap();
        assert_eq!(e.link(), Some("tu_019502a1-7b3c-7def-8abc-1234567890ab"));
        assert_eq!((e.user_agent.as_deref(), e.auth, e.overflow), (None, Auth::Import, true));
        assert!(!e.params.contains_key("key_prefix"));
        let global = V1Row { tenant_id: "_global".into(), event_id: "not-a-uuid".into(), ..row.clone() };
        let g = ctx().v1(global.clone()).unwrap();
        assert_eq!(g.key_prefix, "acme");
        assert_eq!(g.event_id, ctx().v1(global.clone()).unwrap().event_id, "a text id gives the same UUID each time");
        let unassigned = RowContext { global_tenant: None, ..ctx() };
        assert_eq!(unassigned.v1(global).unwrap_err().code, "no_global_tenant");
    }
}
