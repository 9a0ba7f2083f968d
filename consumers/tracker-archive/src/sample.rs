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
            concat!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ",
                "Chrome/128.0 Safari/537.36"
            )
            .into(),
        ),
        referer: click.then(|| "https://news.example.com/article/2026/11/ad".into()),
        accept_language: Some("en-US,en;q=0.9".into()),
        request_path: click.then(|| format!("/t/{link}")),
        request_host: Some("go.example.com".into()),
        params: [
            ("tu_id", link.clone()),
            ("click_id", format!("c{}", n / 3)),
            (
                "sub1",
                match n % 3 {
                    0 => "google",
                    1 => "meta",
                    _ => "tiktok",
                }
                .to_string(),
            ),
            ("sub2", format!("campaign-{}", n % 40)),
            ("sub3", format!("creative-{}", n % 700)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        raw_payload: None,
        auth: if click { Auth::Link } else { Auth::Token },
        historical: false,
        overflow: false,
    }
}

/// Appends sample events `0..total` to `log` as the filter would (record sets of up to 1,000 events per
/// partition), calling `each` on every event; returns each partition's end offset.
pub async fn fill(
    log: &dyn tracker_log::EventLog,
    total: u64,
    tenants: u64,
    start_ms: i64,
    spacing_us: u64,
    mut each: impl FnMut(&Event),
) -> Result<Vec<u64>, tracker_log::LogError> {
    use tracker_log::RecordSet;
    use tracker_protocol::wire::RecordSetBuilder;
    let partitions = log.partitions();
    let set =
        |p: u32, b: RecordSetBuilder| RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() };
    let mut n = 0;
    while n < total {
        let chunk = (total - n).min(100_000);
        let mut builders: Vec<RecordSetBuilder> = (0..partitions).map(|_| RecordSetBuilder::default()).collect();
        let mut sets = Vec::new();
        for i in n..n + chunk {
            let e = event(i, tenants, start_ms, spacing_us);
            each(&e);
            let p = tracker_protocol::partition_for(&e.key_prefix, partitions);
            if let Some(b) = builders.get_mut(p as usize) {
                b.push(&e);
                if b.len() >= 1000 {
                    sets.push(set(p, std::mem::take(b)));
                }
            }
        }
        for (p, b) in (0..partitions).zip(builders) {
            if !b.is_empty() {
                sets.push(set(p, b));
            }
        }
        log.append(sets, None).await?;
        n += chunk;
    }
    let mut ends = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        ends.push(log.end_offset(p).await?);
    }
    Ok(ends)
}

/// Waits until the archiver's consumer group has read every partition up to `ends` (its group offsets follow
/// what it read; a stop then makes it commit what it holds).
pub async fn wait_read(log: &dyn tracker_log::EventLog, ends: &[u64]) -> Result<(), tracker_log::LogError> {
    loop {
        let mut read = true;
        for (p, end) in (0u32..).zip(ends) {
            read &= log.committed_offset(crate::GROUP, p).await?.unwrap_or(0) >= *end;
        }
        if read {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
