//! Packing events into Cloudflare Queue messages. Queues bill per message and cap a message at 128 KB and a
//! `sendBatch` at 100 messages and 256 KB, so events travel many to a message: a 1,000-event `/batch` is a handful
//! of messages, not 1,000. Messages are JSON text (`{"events":[...]}`) sent with the `text` content type: a JSON
//! content type would go through `serde_wasm_bindgen`, which turns maps into JS `Map`s that stringify as `{}`.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use tracker_protocol::Event;

/// Room left under the 128 KB message limit for the envelope.
pub const MAX_MESSAGE_BYTES: usize = 120 * 1024;
pub const MAX_SEND_BATCH_MESSAGES: usize = 100;
/// Under the 256 KB `sendBatch` limit with room for per-message overhead.
pub const MAX_SEND_BATCH_BYTES: usize = 230 * 1024;

const PREFIX: &str = "{\"events\":[";
/// Room for `]`, the optional batch id and `}`.
const SUFFIX_ROOM: usize = 200;

/// Serialises events into as few message bodies as fit. With `batch_key` (derived from a client's
/// `Idempotency-Key`), message `i` carries `"batch_id": "<batch_key>-<i>"`, which the consumer uses as the core
/// intake's batch id: a retried request is then stored once, like the core's own `/batch`.
pub fn pack(events: &[Event], batch_key: Option<&str>) -> Result<Vec<String>, serde_json::Error> {
    let mut messages = Messages::new(batch_key);
    let mut out = Vec::new();
    for event in events {
        out.extend(messages.push(&serde_json::to_string(event)?));
    }
    out.extend(messages.finish());
    Ok(out)
}

/// Message bodies built one serialised event at a time: [`Messages::push`] hands back the message it closed when
/// the next event would not fit in it.
#[derive(Debug)]
pub struct Messages<'k> {
    batch_key: Option<&'k str>,
    current: String,
    in_current: usize,
    closed: usize,
}

impl<'k> Messages<'k> {
    pub fn new(batch_key: Option<&'k str>) -> Self {
        Messages { batch_key, current: String::from(PREFIX), in_current: 0, closed: 0 }
    }

    /// Adds one event's JSON; returns the message it closed first if the event would not fit in it.
    pub fn push(&mut self, json: &str) -> Option<String> {
        let full = self.in_current > 0 && self.current.len() + 1 + json.len() + SUFFIX_ROOM > MAX_MESSAGE_BYTES;
        let closed = if full { self.finish() } else { None };
        if self.in_current > 0 {
            self.current.push(',');
        }
        self.current.push_str(json);
        self.in_current += 1;
        closed
    }

    /// Closes the message being built and starts the next; `None` if it holds no event.
    pub fn finish(&mut self) -> Option<String> {
        if self.in_current == 0 {
            return None;
        }
        self.current.push(']');
        if let Some(key) = self.batch_key {
            self.current.push_str(&format!(",\"batch_id\":\"{key}-{}\"", self.closed));
        }
        self.current.push('}');
        self.closed += 1;
        self.in_current = 0;
        Some(std::mem::replace(&mut self.current, String::from(PREFIX)))
    }
}

/// Groups of messages that fit in one `sendBatch` call each.
pub fn send_groups(messages: &[String]) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, m) in messages.iter().enumerate() {
        if i > start && (i - start >= MAX_SEND_BATCH_MESSAGES || bytes + m.len() > MAX_SEND_BATCH_BYTES) {
            groups.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += m.len();
    }
    if start < messages.len() {
        groups.push(start..messages.len());
    }
    groups
}

/// The batch key of a client's idempotency key: scoped to the tenant, opaque, valid as an intake batch id prefix.
pub fn batch_key(key_prefix: &str, idempotency_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{key_prefix}\0{idempotency_key}").as_bytes());
    format!("k-{}", hex::encode(digest.get(..16).unwrap_or_default()))
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: &'a RawValue,
    #[serde(default)]
    batch_id: Option<String>,
    /// Elements of the client's request the edge refused: `{"key_prefix", "count"}`, metered by the core.
    #[serde(default, borrow)]
    invalid: Option<&'a RawValue>,
}

/// A message with no events that tells the core how many elements of a tenant's request the edge refused (its
/// `dropped_invalid` usage). With `batch_key` (from the client's `Idempotency-Key`) a retried request is counted
/// once.
pub fn invalid_message(key_prefix: &str, count: usize, batch_key: Option<&str>) -> String {
    let mut m = serde_json::json!({ "events": [], "invalid": { "key_prefix": key_prefix, "count": count } });
    if let (Some(key), Some(obj)) = (batch_key, m.as_object_mut()) {
        obj.insert("batch_id".into(), format!("{key}-invalid").into());
    }
    m.to_string()
}

/// What the consumer sends to the core for a message: the intake batch id (the message's own, or the queue message
/// id) and the `{"events": [...]}` body. `None` if the message is not an events envelope.
pub fn intake_body(body: &str, message_id: &str) -> Option<(String, String)> {
    let env: Envelope<'_> = serde_json::from_str(body).ok()?;
    let id =
        env.batch_id.filter(|b| tracker_protocol::intake::is_valid_batch_id(b)).unwrap_or_else(|| batch_id(message_id));
    let body = match env.invalid {
        Some(inv) => format!("{{\"events\":{},\"invalid\":{}}}", env.events.get(), inv.get()),
        None => format!("{{\"events\":{}}}", env.events.get()),
    };
    Some((id, body))
}

/// A core intake batch id from a queue message id (stable across the queue's retries, so a retried message is
/// answered from the core's idempotency record instead of being stored twice).
pub fn batch_id(message_id: &str) -> String {
    let clean: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        .take(120)
        .collect();
    format!("q-{clean}")
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The events of a message body at the given indices (those the core refused), as JSON text.
pub fn pick(body: &str, indices: &[usize]) -> Vec<String> {
    let Ok(parsed) = serde_json::from_str::<Body<'_>>(body) else { return Vec::new() };
    indices.iter().filter_map(|i| parsed.events.get(*i).map(|e| e.get().to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use tracker_protocol::{Auth, Uuid};

    use super::*;

    fn event(i: u32, pad: usize) -> Event {
        Event {
            event_id: Uuid::from_u128(u128::from(i) + 1),
            event_type: "purchase".into(),
            timestamp: 1_770_704_294_008,
            received_at: 1_770_704_294_008,
            key_prefix: "acme".into(),
            ip: None,
            user_agent: Some("x".repeat(pad)),
            referer: None,
            accept_language: None,
            request_path: None,
            request_host: None,
            params: [("n".to_string(), i.to_string()), ("k".to_string(), "v".to_string())].into(),
            raw_payload: None,
            auth: Auth::Token,
            historical: false,
            overflow: false,
        }
    }

    #[test]
    fn a_thousand_events_are_a_few_messages_that_round_trip_with_their_params() {
        let events: Vec<Event> = (0..1000).map(|i| event(i, 150)).collect();
        let messages = pack(&events, None).unwrap();
        assert!(messages.len() <= 4, "{} messages", messages.len());
        assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE_BYTES));
        let mut back = Vec::new();
        for m in &messages {
            #[derive(Deserialize)]
            struct Owned {
                events: Vec<Event>,
            }
            back.extend(serde_json::from_str::<Owned>(m).unwrap().events);
        }
        assert_eq!(back, events, "every event arrives whole, params included");
        let groups = send_groups(&messages);
        assert_eq!(groups.first().map(|g| g.start), Some(0));
        assert_eq!(groups.last().map(|g| g.end), Some(messages.len()));
        assert!(groups.windows(2).all(|w| w[0].end == w[1].start), "contiguous");
        assert!(
            groups.iter().all(|g| messages[g.clone()].iter().map(String::len).sum::<usize>() <= MAX_SEND_BATCH_BYTES)
        );
    }

    #[test]
    fn groups_respect_message_and_byte_limits() {
        let small: Vec<String> = (0..250).map(|_| "x".repeat(10)).collect();
        assert_eq!(send_groups(&small), vec![0..100, 100..200, 200..250]);
        let big: Vec<String> = (0..3).map(|_| "x".repeat(MAX_MESSAGE_BYTES)).collect();
        assert_eq!(send_groups(&big), vec![0..1, 1..2, 2..3]);
        assert!(send_groups(&[]).is_empty());
        assert!(pack(&[], None).unwrap().is_empty());
    }

    #[test]
    fn refused_elements_travel_as_a_message_of_their_own() {
        let m = invalid_message("acme", 3, Some("k-1"));
        let (id, body) = intake_body(&m, "ignored").unwrap();
        assert_eq!(id, "k-1-invalid");
        assert!(tracker_protocol::intake::is_valid_batch_id(&id));
        assert_eq!(body, r#"{"events":[],"invalid":{"count":3,"key_prefix":"acme"}}"#);
        let (id, _) = intake_body(&invalid_message("acme", 1, None), "m7").unwrap();
        assert_eq!(id, "q-m7", "without a key, the queue message id");
    }

    #[test]
    fn idempotent_requests_carry_stable_batch_ids_per_message() {
        let events: Vec<Event> = (0..1000).map(|i| event(i, 150)).collect();
        let key = batch_key("acme", "order-42");
        assert_eq!(key, batch_key("acme", "order-42"));
        assert_ne!(key, batch_key("beta", "order-42"), "scoped to the tenant");
        let messages = pack(&events, Some(&key)).unwrap();
        for (i, m) in messages.iter().enumerate() {
            let (id, body) = intake_body(m, "ignored").unwrap();
            assert_eq!(id, format!("{key}-{i}"));
            assert!(tracker_protocol::intake::is_valid_batch_id(&id));
            assert!(body.starts_with("{\"events\":[") && !body.contains("batch_id"));
            assert!(m.len() <= MAX_MESSAGE_BYTES);
        }
        let plain = pack(&events[..1], None).unwrap().remove(0);
        assert_eq!(intake_body(&plain, "m1").unwrap(), ("q-m1".to_owned(), plain.clone()));
        assert!(intake_body("not json", "m1").is_none());
    }

    #[test]
    fn batch_ids_are_valid_for_the_core_and_refused_events_can_be_picked() {
        let id = batch_id("a1b2/c3 d4");
        assert_eq!(id, "q-a1b2c3d4");
        assert!(tracker_protocol::intake::is_valid_batch_id(&id));
        let body = pack(&[event(0, 1), event(1, 1), event(2, 1)], None).unwrap().remove(0);
        let picked = pick(&body, &[2, 7]);
        assert_eq!(picked.len(), 1);
        assert!(picked[0].contains("\"n\":\"2\""));
    }
}
