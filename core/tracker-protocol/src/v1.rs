//! What the clients of the system this one replaces send ("v1"), read the way that system read it, so that its
//! beacons, SDK batches, postbacks, pixels and links keep working unchanged.
//!
//! That system stored whatever a request carried: params of any name and length, repeated names (the last value
//! kept), unknown beacon fields. Our events are stricter (see [`crate::Limits`]), so [`fit`] puts each param where
//! it can go: as a param when it is valid, otherwise kept raw in the event's `raw_payload` under `overflow`
//! (`{"overflow": {"params": [[name, value], ...], "dropped": n}}`, `dropped` counting what did not fit even
//! there), and marks the event [`Event::overflow`] so that the filter lists it in the drop ledger as flagged.
//! Nothing a visitor's browser sends is refused for its params.
//!
//! The replaced system's own request fields that ours takes from the request instead (a batch event's
//! `request_path` and `request_host`, an `event_id` that is not a UUID) are kept raw under `v1`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{Auth, Event, Limits, MIN_TIMESTAMP_MS, RawJson, is_valid_name};
use crate::{ProtocolError, Uuid};

/// Bytes `validate` counts for an event before its params and raw payload.
fn base_size(e: &Event) -> usize {
    let fields = [&e.ip, &e.user_agent, &e.referer, &e.accept_language, &e.request_path, &e.request_host];
    e.event_type.len()
        + e.key_prefix.len()
        + 64
        + fields.iter().filter_map(|f| f.as_deref()).map(str::len).sum::<usize>()
}

/// JSON text length of one `[name, value]` pair and the comma before it.
fn pair_json_len(k: &str, v: &str) -> usize {
    serde_json::to_string(&[k, v]).map_or(usize::MAX / 4, |s| s.len() + 1)
}

/// Puts `params` (the winning value of each name) and `shadowed` (earlier values of repeated names) on `event`:
/// each valid param that fits the limits as a param, the rest under `raw_payload.overflow` as far as that fits,
/// with `extra` (already-built entries such as `v1`) at the top of the raw payload. The event then passes
/// [`Event::validate`]'s params and size checks. An event that already has a raw payload (a client's own) keeps
/// it untouched, and what does not fit as params is dropped and counted only through the flag.
pub fn fit(
    event: &mut Event,
    params: impl IntoIterator<Item = (String, String)>,
    shadowed: Vec<(String, String)>,
    mut extra: Map<String, Value>,
    limits: &Limits,
) {
    let mut size = base_size(event) + event.params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let mut left = shadowed;
    for (k, v) in params {
        let fits = is_valid_name(&k, limits.max_param_key_len)
            && v.len() <= limits.max_param_value_len
            && event.params.len() < limits.max_params
            && size + k.len() + v.len() <= limits.max_event_bytes
            && !event.params.contains_key(&k);
        if fits {
            size += k.len() + v.len();
            event.params.insert(k, v);
        } else {
            left.push((k, v));
        }
    }
    if !left.is_empty() {
        event.overflow = true;
    }
    if event.raw_payload.is_some() || (left.is_empty() && extra.is_empty()) {
        return;
    }
    let budget = limits.max_raw_payload_bytes.min(limits.max_event_bytes.saturating_sub(size));
    let base = serde_json::to_string(&extra).map_or(usize::MAX / 4, |s| s.len());
    // `,"overflow":{"params":[...],"dropped":n}` costs about 40 bytes besides the pairs
    let mut used = base + 48;
    let mut kept = 0;
    for (k, v) in &left {
        let n = pair_json_len(k, v);
        if used + n > budget {
            break;
        }
        used += n;
        kept += 1;
    }
    if !left.is_empty() {
        let dropped = left.len() - kept;
        let pairs: Vec<Value> =
            left.into_iter().take(kept).map(|(k, v)| Value::Array(vec![Value::String(k), Value::String(v)])).collect();
        let mut overflow = Map::new();
        overflow.insert("params".into(), Value::Array(pairs));
        if dropped > 0 {
            overflow.insert("dropped".into(), Value::from(dropped));
        }
        extra.insert("overflow".into(), Value::Object(overflow));
    }
    match serde_json::to_string(&extra) {
        Ok(text) if text.len() <= budget => event.raw_payload = Some(RawJson::checked(text)),
        // the raw entries themselves do not fit (not reachable with truncated request fields): flag, keep none
        _ => event.overflow = true,
    }
}

/// The replaced system's `/t/auto` body (what its `t.js` sends with `navigator.sendBeacon`) and ours, read
/// together: the tenant (`key` or `key_prefix`), `event_type` (default `pageview`), `referrer` (the event's
/// referer), `params` (an object), and every other field as a param as that system stored it (`page`, `href`,
/// `text`, `session_id`, `screen_width`, `ad_click_id`, `url`, `title`, or any other).
#[derive(Debug)]
pub struct Beacon {
    pub key_prefix: String,
    pub event_type: Option<String>,
    pub referrer: Option<String>,
    /// In body order, numbers and booleans as their JSON text, then the `params` object's entries.
    pub params: Vec<(String, String)>,
    /// Fields that are not text, numbers or booleans (objects, arrays, null), kept raw.
    pub unreadable: Vec<(String, String)>,
}

impl Beacon {
    pub fn parse(body: &[u8]) -> Result<Beacon, ProtocolError> {
        let bad = |reason: String| ProtocolError::InvalidBeacon { reason };
        let fields: Vec<(String, Value)> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            Ok(_) => return Err(bad("the body must be a JSON object".into())),
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut key_prefix: Option<String> = None;
        let (mut event_type, mut referrer) = (None, None);
        let (mut params, mut unreadable, mut nested) = (Vec::new(), Vec::new(), Vec::new());
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("key" | "key_prefix", Value::String(k)) => {
                    if key_prefix.as_ref().is_some_and(|p| *p != k) {
                        return Err(bad("key and key_prefix name different tenants".into()));
                    }
                    key_prefix = Some(k);
                }
                ("key" | "key_prefix", _) => return Err(bad(format!("{name} must be a string"))),
                ("event_type", Value::String(t)) => event_type = Some(t),
                ("referrer", Value::String(r)) => referrer = Some(r),
                ("params", Value::Object(map)) => nested.extend(map),
                (_, value) => match scalar(&value) {
                    Some(text) => params.push((name, text)),
                    None => unreadable.push((name, value.to_string())),
                },
            }
        }
        for (name, value) in nested {
            match scalar(&value) {
                Some(text) => params.push((name, text)),
                None => unreadable.push((name, value.to_string())),
            }
        }
        let key_prefix = key_prefix.ok_or_else(|| bad("key (or key_prefix) is missing".into()))?;
        Ok(Beacon { key_prefix, event_type, referrer, params, unreadable })
    }
}

/// Text, numbers and booleans as param values; anything else is not one.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One event of the replaced system's `/batch` (its SDK's `TrackerClient` sends arrays of these): every field of
/// its `TrackingEvent`, each optional here.
#[derive(Debug, Deserialize)]
pub struct BatchEvent<'a> {
    #[serde(default)]
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub timestamp: Option<i64>,
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
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub raw_payload: Option<&'a RawValue>,
}

/// The event id of a v1 event: its UUID as given, or, for any other text (that system took any string), a UUID
/// derived from the tenant and the text, so a resent event still has one id; the text is kept under `v1`.
pub fn event_id(key_prefix: &str, given: &str) -> (Uuid, Option<String>) {
    match crate::parse_event_id(given) {
        Ok(id) => (id, None),
        Err(_) => {
            let digest = Sha256::digest(format!("v1-event-id\0{key_prefix}\0{given}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
            (uuid::Builder::from_custom_bytes(bytes).into_uuid(), Some(given.to_owned()))
        }
    }
}

fn batch_event_id(key_prefix: &str, given: Option<&str>, now: i64, random: [u8; 10]) -> (Uuid, Option<String>) {
    match given {
        None => (crate::new_event_id(now, random), None),
        Some(s) => event_id(key_prefix, s),
    }
}

/// The global `ENCRYPTION_KEY` as the replaced system read it: 64 hex characters, or else any text of exactly 32
/// bytes, used as the key itself.
pub fn global_encryption_key(text: &str) -> Option<[u8; 32]> {
    crate::parse_encryption_key(text).or_else(|| text.as_bytes().try_into().ok())
}

/// Name and value pairs, in order.
pub type Pairs = Vec<(String, String)>;

/// Text, numbers and booleans of a JSON object as params, the rest (objects, arrays, null) as JSON text for the
/// overflow: `(params, unreadable)`.
pub fn object_params(map: Map<String, Value>) -> (Pairs, Pairs) {
    let (mut params, mut unreadable) = (Vec::new(), Vec::new());
    for (k, v) in map {
        match scalar(&v) {
            Some(text) => params.push((k, text)),
            None => unreadable.push((k, v.to_string())),
        }
    }
    (params, unreadable)
}

/// Builds a v1 batch event for the tenant of the credential (`key_prefix`, which a `key_prefix` param may repeat
/// but not contradict). Empty strings (that system's "absent") are absent.
pub fn batch_event(
    raw: &[u8],
    key_prefix: &str,
    request: &crate::service::RequestInfo,
    limits: &Limits,
    now: i64,
    random: [u8; 10],
) -> Result<Event, ProtocolError> {
    let input: BatchEvent<'_> =
        serde_json::from_slice(raw).map_err(|e| ProtocolError::InvalidEventBody { reason: e.to_string() })?;
    let (mut pairs, mut shadowed) = (Vec::new(), Vec::new());
    if let Some(p) = input.params {
        let map: Map<String, Value> = serde_json::from_str(p.get())
            .map_err(|_| ProtocolError::InvalidEventBody { reason: "params must be an object".into() })?;
        (pairs, shadowed) = object_params(map);
    }
    if let Some(i) = pairs.iter().position(|(k, _)| k == "key_prefix") {
        let (_, named) = pairs.remove(i);
        if named != key_prefix {
            return Err(ProtocolError::TenantMismatch);
        }
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let truncate = |s: Option<String>| nonempty(s).map(|s| crate::truncate_field(&s, limits.max_field_len).to_owned());
    let (event_id, odd_id) = batch_event_id(key_prefix, input.event_id.as_deref(), now, random);
    let timestamp = input.timestamp.unwrap_or(now);
    let mut v1 = Map::new();
    for (name, value) in
        [("request_path", input.request_path), ("request_host", input.request_host), ("event_id", odd_id)]
    {
        if let Some(v) = truncate(value) {
            v1.insert(name.into(), Value::String(v));
        }
    }
    let raw_payload = match input.raw_payload {
        Some(r) if r.get() != "null" => Some(RawJson::parse(r.get())?),
        _ => None,
    };
    let mut event = Event {
        event_id,
        event_type: input.event_type,
        timestamp,
        received_at: now,
        key_prefix: key_prefix.to_owned(),
        ip: truncate(input.ip),
        user_agent: truncate(input.user_agent),
        referer: truncate(input.referer),
        accept_language: truncate(input.accept_language),
        request_path: Some(request.path.clone()),
        request_host: request.host.clone(),
        params: BTreeMap::new(),
        raw_payload,
        auth: Auth::Token,
        historical: now.saturating_sub(timestamp) > limits.historical_after_ms && timestamp >= MIN_TIMESTAMP_MS,
        overflow: false,
    };
    let mut extra = Map::new();
    if !v1.is_empty() {
        if event.raw_payload.is_some() {
            // the client's own payload stays as it was: these fields are not kept
            event.overflow = true;
        } else {
            extra.insert("v1".into(), Value::Object(v1));
        }
    }
    fit(&mut event, pairs, shadowed, extra, limits);
    event.validate(limits)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::RequestInfo;

    const NOW: i64 = 1_770_704_294_008;
    /// What the replaced system's `t.js` sends for an outbound click (and a field it never sends).
    const BEACON: &str = concat!(
        r#"{"event_type":"outbound_click","key_prefix":"6vct","page":"/pricing?x=1","session_id":"9f","#,
        r#""screen_width":1280,"ad_click_id":"019c","href":"https://out.example/","text":"Go","extra":{"a":1}}"#
    );
    /// An event of the replaced system's SDK batch.
    const SDK_EVENT: &str = concat!(
        r#"{"event_id":"3b241101-e2bb-4255-8caf-4136c566a962","event_type":"postback","timestamp":1770704290000,"#,
        r#""ip":"203.0.113.1","user_agent":"Mozilla/5.0","request_path":"/p","request_host":"track.example.com","#,
        r#""params":{"click_id":"abc","key_prefix":"6vct","payout":2.5}}"#
    );

    fn event() -> Event {
        Event {
            event_id: Uuid::from_u128(1),
            event_type: "click".into(),
            timestamp: NOW,
            received_at: NOW,
            key_prefix: "6vct".into(),
            ip: None,
            user_agent: None,
            referer: None,
            accept_language: None,
            request_path: Some("/t".into()),
            request_host: None,
            params: BTreeMap::new(),
            raw_payload: None,
            auth: Auth::Link,
            historical: false,
            overflow: false,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn params_that_do_not_fit_are_kept_raw_and_flagged() {
        let mut e = event();
        let long = "v".repeat(2000);
        let params = pairs(&[("sub1", "a"), ("utm[source]", "g"), ("long", &long), ("", "empty")]);
        fit(&mut e, params, pairs(&[("sub1", "first")]), Map::new(), &Limits::default());
        assert_eq!(e.params, BTreeMap::from([("sub1".to_owned(), "a".to_owned())]));
        assert!(e.overflow);
        let raw: Value = serde_json::from_str(e.raw_payload.as_ref().unwrap().as_str()).unwrap();
        let kept = &raw["overflow"]["params"];
        assert_eq!(kept[0], serde_json::json!(["sub1", "first"]));
        assert_eq!(kept[1], serde_json::json!(["utm[source]", "g"]));
        assert_eq!(kept[2][1].as_str().unwrap().len(), 2000);
        assert_eq!(kept[3], serde_json::json!(["", "empty"]));
        assert!(raw["overflow"].get("dropped").is_none());
        e.validate(&Limits::default()).unwrap();
    }

    #[test]
    fn whatever_the_params_the_event_validates() {
        let limits = Limits::default();
        // far more than an event can hold: 200 params of 1 KiB under names that are not allowed
        let params: Vec<(String, String)> = (0..200).map(|i| (format!("p[{i}]"), "x".repeat(1024))).collect();
        let mut e = event();
        fit(&mut e, params, Vec::new(), Map::new(), &limits);
        e.validate(&limits).unwrap();
        assert!(e.overflow);
        let raw: Value = serde_json::from_str(e.raw_payload.as_ref().unwrap().as_str()).unwrap();
        let kept = raw["overflow"]["params"].as_array().unwrap().len();
        assert!(kept > 0 && kept < 200);
        assert_eq!(raw["overflow"]["dropped"], 200 - kept);
        // valid ones first fill the params, up to the limit of 64
        let many: Vec<(String, String)> = (0..100).map(|i| (format!("p{i}"), "x".into())).collect();
        let mut e = event();
        fit(&mut e, many, Vec::new(), Map::new(), &limits);
        assert_eq!(e.params.len(), 64);
        e.validate(&limits).unwrap();
    }

    #[test]
    fn a_global_key_is_hex_or_32_bytes_of_text() {
        assert_eq!(global_encryption_key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(
            global_encryption_key("0123456789abcdefghijklmnopqrstuv"),
            Some(*b"0123456789abcdefghijklmnopqrstuv")
        );
        assert_eq!(global_encryption_key("short"), None);
    }

    #[test]
    fn nothing_to_keep_adds_nothing() {
        let mut e = event();
        fit(&mut e, pairs(&[("a", "1")]), Vec::new(), Map::new(), &Limits::default());
        assert!(!e.overflow && e.raw_payload.is_none());
    }

    #[test]
    fn the_replaced_beacon_body_reads_as_params() {
        let b = Beacon::parse(BEACON.as_bytes()).unwrap();
        assert_eq!(b.key_prefix, "6vct");
        assert_eq!(b.event_type.as_deref(), Some("outbound_click"));
        let params: BTreeMap<&str, &str> = b.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let names: Vec<&str> = params.keys().copied().collect();
        assert_eq!(names, ["ad_click_id", "href", "page", "screen_width", "session_id", "text"]);
        assert_eq!(params["screen_width"], "1280");
        assert_eq!(b.unreadable, vec![("extra".to_owned(), r#"{"a":1}"#.to_owned())]);
        for bad in [&b"[]"[..], b"{}", b"{\"key\":1}", b"{\"key\":\"a\",\"key_prefix\":\"b\"}", b"nope"] {
            assert_eq!(Beacon::parse(bad).unwrap_err().code(), "invalid_beacon");
        }
    }

    #[test]
    fn the_replaced_sdk_batch_event_is_kept_whole() {
        let req = RequestInfo { path: "/v1/batch".into(), host: Some("t.example".into()), ..Default::default() };
        let e = batch_event(SDK_EVENT.as_bytes(), "6vct", &req, &Limits::default(), NOW, [0; 10]).unwrap();
        assert_eq!(e.event_id.to_string(), "3b241101-e2bb-4255-8caf-4136c566a962");
        assert_eq!(e.params.get("payout").map(String::as_str), Some("2.5"));
        assert!(!e.params.contains_key("key_prefix"));
        assert_eq!((e.request_path.as_deref(), e.auth, e.overflow), (Some("/v1/batch"), Auth::Token, false));
        let raw: Value = serde_json::from_str(e.raw_payload.unwrap().as_str()).unwrap();
        assert_eq!(raw, serde_json::json!({"v1": {"request_path": "/p", "request_host": "track.example.com"}}));
        // another tenant named inside the event is refused; a text id becomes a stable UUID
        let other = br#"{"event_type":"x","params":{"key_prefix":"zzzz"}}"#;
        assert_eq!(
            batch_event(other, "6vct", &req, &Limits::default(), NOW, [0; 10]).unwrap_err().code(),
            "tenant_mismatch"
        );
        let odd = br#"{"event_id":"order-17","event_type":"sale"}"#;
        let a = batch_event(odd, "6vct", &req, &Limits::default(), NOW, [1; 10]).unwrap();
        let b = batch_event(odd, "6vct", &req, &Limits::default(), NOW + 5, [2; 10]).unwrap();
        assert_eq!(a.event_id, b.event_id);
        assert!(a.raw_payload.unwrap().as_str().contains("order-17"));
    }
}
