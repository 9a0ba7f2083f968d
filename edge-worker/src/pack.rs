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
const SUFFIX: &str = "]}";

/// Serialises events into as few message bodies as fit.
pub fn pack(events: &[Event]) -> Result<Vec<String>, serde_json::Error> {
    let mut out = Vec::new();
    let mut current = String::from(PREFIX);
    let mut in_current = 0usize;
    for event in events {
        let json = serde_json::to_string(event)?;
        if in_current > 0 && current.len() + 1 + json.len() + SUFFIX.len() > MAX_MESSAGE_BYTES {
            current.push_str(SUFFIX);
            out.push(std::mem::replace(&mut current, String::from(PREFIX)));
            in_current = 0;
        }
        if in_current > 0 {
            current.push(',');
        }
        current.push_str(&json);
        in_current += 1;
    }
    if in_current > 0 {
        current.push_str(SUFFIX);
        out.push(current);
    }
    Ok(out)
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
        }
    }

    #[test]
    fn a_thousand_events_are_a_few_messages_that_round_trip_with_their_params() {
        let events: Vec<Event> = (0..1000).map(|i| event(i, 150)).collect();
        let messages = pack(&events).unwrap();
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
        assert!(pack(&[]).unwrap().is_empty());
    }

    #[test]
    fn batch_ids_are_valid_for_the_core_and_refused_events_can_be_picked() {
        let id = batch_id("a1b2/c3 d4");
        assert_eq!(id, "q-a1b2c3d4");
        assert!(tracker_protocol::intake::is_valid_batch_id(&id));
        let body = pack(&[event(0, 1), event(1, 1), event(2, 1)]).unwrap().remove(0);
        let picked = pick(&body, &[2, 7]);
        assert_eq!(picked.len(), 1);
        assert!(picked[0].contains("\"n\":\"2\""));
    }
}
