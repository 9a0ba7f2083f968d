//! Synthetic events for the benchmarks (archive throughput, cold queries): realistic sizes and cardinalities,
//! the same for every benchmark so their figures compare.

use tracker_protocol::{Auth, Event, Uuid};

/// Event `n` of a stream spread over `tenants` tenants, one every `spacing_us` µs from `start_ms`.
/// One in five is a conversion (token-authenticated), the rest clicks on 2,000 links per tenant; params `tu_id`,
/// `click_id`, `sub1` (3 values), `sub2` (40), `sub3` (700).
pub fn event(n: u64, tenants: u64, start_ms: i64, spacing_us: u64) -> Event {
    let tenant = format!("tenant{:03}", n % tenants);
    let click = !n.is_multiple_of(5);
    let link = format!("L{:05}", (n / tenants) % 2000);
    let ts = start_ms.saturating_add(i64::try_from(n.saturating_mul(spacing_us) / 1000).unwrap_or(i64::MAX));
    Event {
        event_id: Uuid::from_u64_pair(0x0190_0000_0000_7000 | (n >> 40), n),
        event_type: if click { "click".into() } else { "conversion".into() },
        timestamp: ts,
        received_at: ts,
        key_prefix: tenant,
        ip: Some(format!("203.0.{}.{}", (n >> 8) % 256, n % 256)),
        user_agent: Some(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36"
                .into(),
        ),
        referer: click.then(|| "https://news.example.com/article/2026/11/ad".into()),
        accept_language: Some("en-US,en;q=0.9".into()),
        request_path: click.then(|| format!("/t/{link}")),
        request_host: Some("go.example.com".into()),
        params: [
            ("tu_id", link.clone()),
            ("click_id", format!("c{}", n / 3)),
            ("sub1", match n % 3 { 0 => "google", 1 => "meta", _ => "tiktok" }.to_string()),
            ("sub2", format!("campaign-{}", n % 40)),
            ("sub3", format!("creative-{}", n % 700)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        raw_payload: None,
        auth: if click { Auth::Link } else { Auth::Token },
        historical: false,
    }
}
