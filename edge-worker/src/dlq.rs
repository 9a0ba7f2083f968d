//! Events the core fleet could not take for a long while: how long the queue waits between attempts, when a message
//! is parked in Workers KV instead, and how a parked message is replayed, exactly once, when the core answers again.
//!
//! A message that fails is retried with a delay as long as the message is old (so the waits double: 10 s, 20 s,
//! 40 s, ...) within `RETRY_MIN_DELAY_SECS` and `RETRY_MAX_DELAY_SECS`. Once it is older than `PARK_AFTER_SECS` it
//! is parked under `dlq:<ms>:<batch id>` with the batch id it was always sent with, so a replay of a message the
//! core did store after all (its answer lost on the way) is answered from the core's idempotency record, not stored
//! twice. A scheduled run (and `POST /internal/v1/dlq/replay`) replays parked messages oldest first and stops at the
//! first failure: the core is still away, try again at the next run.
//! Events the core refused for good (or messages that are not events) are kept under `refused:` for inspection,
//! never replayed (they would be refused again).

use serde_json::Value;

/// KV prefix of parked messages, replayed when the core answers again.
pub const PARKED_PREFIX: &str = "dlq:";
/// KV prefix of what is kept for inspection only.
pub const REFUSED_PREFIX: &str = "refused:";

/// The delay before the next attempt at a message first sent `age_ms` ago.
pub fn retry_delay_secs(age_ms: i64, min_secs: u32, max_secs: u32) -> u32 {
    let age = u32::try_from(age_ms.max(0) / 1000).unwrap_or(u32::MAX);
    age.clamp(min_secs, max_secs.max(min_secs))
}

/// Whether a message first sent `age_ms` ago that failed again is parked instead of retried.
pub fn should_park(age_ms: i64, park_after_secs: u32) -> bool {
    age_ms >= i64::from(park_after_secs) * 1000
}

/// The KV key of a message parked at `now_ms` (keys sort oldest first).
pub fn parked_key(now_ms: i64, batch_id: &str) -> String {
    format!("{PARKED_PREFIX}{:013}:{batch_id}", now_ms.max(0))
}

/// The KV key of a letter kept for inspection.
pub fn refused_key(now_ms: i64, id: &str) -> String {
    format!("{REFUSED_PREFIX}{:013}:{id}", now_ms.max(0))
}

/// A queue message's body as it is parked: the envelope with the batch id it was sent with (added when the message
/// carried none), so its replay is idempotent at the core. `None` if the body is not an events envelope.
pub fn park_body(body: &str, batch_id: &str) -> Option<String> {
    let mut envelope: Value = serde_json::from_str(body).ok()?;
    let obj = envelope.as_object_mut()?;
    if !obj.get("events").is_some_and(Value::is_array) {
        return None;
    }
    obj.entry("batch_id").or_insert_with(|| Value::from(batch_id));
    Some(envelope.to_string())
}

/// What a dead-letter queue message is: an envelope the queue gave up on (parked for replay) or a letter kept for
/// inspection (events the core refused, or anything else).
pub fn is_replayable(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.get("events").is_some_and(Value::is_array) && !o.contains_key("reason")))
        .unwrap_or(false)
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Replay {
    /// Messages the core took (or had taken already).
    pub replayed: u32,
    /// Messages whose events the core refused for good (kept under `refused:`).
    pub refused: u32,
    /// Whether the run stopped at a message the core could not take (it is still away).
    pub core_unavailable: bool,
    /// Parked messages left (at most the listing's page).
    pub left: u32,
}

/// What `/health` and `/metrics` say of dead letters: messages parked for replay, letters kept for inspection, and
/// whether both counts are whole (one listing shows at most 1000).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetters {
    pub parked: u32,
    pub refused: u32,
    pub complete: bool,
}

impl DeadLetters {
    /// The counts in the Prometheus text format (`GET /metrics` at the edge).
    pub fn prometheus(&self) -> String {
        format!(
            "# HELP tracker_edge_dead_letters Messages in KV: parked (replayed once the core answers) or refused \
             (kept for inspection).\n\
             # TYPE tracker_edge_dead_letters gauge\n\
             tracker_edge_dead_letters{{state=\"parked\"}} {}\n\
             tracker_edge_dead_letters{{state=\"refused\"}} {}\n\
             # HELP tracker_edge_dead_letters_complete 1 if both counts are whole (a listing shows at most 1000).\n\
             # TYPE tracker_edge_dead_letters_complete gauge\n\
             tracker_edge_dead_letters_complete {}\n",
            self.parked,
            self.refused,
            u8::from(self.complete)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_the_messages_age_within_bounds_then_it_is_parked() {
        assert_eq!(retry_delay_secs(0, 10, 3600), 10);
        assert_eq!(retry_delay_secs(25_000, 10, 3600), 25);
        assert_eq!(retry_delay_secs(10_000_000, 10, 3600), 3600);
        assert_eq!(retry_delay_secs(-5, 10, 3600), 10, "a clock behind the message's is no reason to hurry");
        // each retry waits as long as the message is old: the message's age doubles
        let mut age = 0;
        let waits: Vec<u32> = (0..5)
            .map(|_| {
                let w = retry_delay_secs(age, 10, 3600);
                age += i64::from(w) * 1000;
                w
            })
            .collect();
        assert_eq!(waits, [10, 10, 20, 40, 80]);
        assert!(!should_park(3_599_999, 3600) && should_park(3_600_000, 3600));
    }

    #[test]
    fn a_parked_message_keeps_the_batch_id_it_was_sent_with() {
        let plain = r#"{"events":[{"event_type":"click"}]}"#;
        let parked = park_body(plain, "q-msg-1").unwrap();
        let (id, forward) = crate::pack::intake_body(&parked, "another-message-id").unwrap();
        assert_eq!(id, "q-msg-1", "the replay's batch id is the original's");
        assert_eq!(forward, plain);
        let keyed = r#"{"events":[],"batch_id":"k-abc-0"}"#;
        let (id, _) = crate::pack::intake_body(&park_body(keyed, "q-other").unwrap(), "x").unwrap();
        assert_eq!(id, "k-abc-0", "a client's idempotency key wins");
        assert_eq!(park_body("not json", "q"), None);
        assert_eq!(park_body(r#"{"reason":"x"}"#, "q"), None);
        assert!(parked_key(5, "q-1") < parked_key(10, "q-0"), "oldest first");
    }

    #[test]
    fn refusals_are_kept_for_inspection_and_never_replayed() {
        assert!(is_replayable(r#"{"events":[1],"batch_id":"q-1"}"#));
        assert!(!is_replayable(r#"{"reason":"refused_by_core","events":[1]}"#));
        assert!(!is_replayable("garbage"));
        assert!(refused_key(1, "m").starts_with(REFUSED_PREFIX));
    }

    #[test]
    fn dead_letters_read_as_prometheus_gauges() {
        let text = DeadLetters { parked: 7, refused: 2, complete: false }.prometheus();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "tracker_edge_dead_letters{state=\"parked\"} 7",
                "tracker_edge_dead_letters{state=\"refused\"} 2",
                "tracker_edge_dead_letters_complete 0",
            ]
        );
        assert!(text.lines().filter(|l| l.starts_with("# TYPE")).all(|l| l.ends_with(" gauge")));
    }
}
