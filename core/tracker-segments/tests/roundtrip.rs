#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use tracker_protocol::{Auth, Event, RawJson, Uuid};
use tracker_segments::{Key, Segment, build};

fn event(n: u64, tenant: &str, ts: i64, params: &[(&str, &str)]) -> Event {
    Event {
        event_id: Uuid::from_u64_pair(7, n),
        event_type: if n.is_multiple_of(3) { "postback".into() } else { "click".into() },
        timestamp: ts,
        received_at: ts + 5,
        key_prefix: tenant.into(),
        ip: n.is_multiple_of(2).then(|| "203.0.113.9".to_owned()),
        user_agent: Some("Mozilla/5.0".into()),
        referer: None,
        accept_language: Some("fr".into()),
        request_path: Some(format!("/t/{n}")),
        request_host: None,
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        raw_payload: n.is_multiple_of(5).then(|| RawJson::parse(r#"{"v1":{"x":[1,2]}}"#).unwrap()),
        auth: if n.is_multiple_of(2) { Auth::Link } else { Auth::Token },
        historical: n.is_multiple_of(7),
        overflow: n.is_multiple_of(11),
    }
}

#[test]
fn a_segment_gives_back_every_event_sorted_by_tenant_time_and_position() {
    let events: Vec<Event> = (0..500u64)
        .map(|n| {
            let tenant = ["globex", "acme", "initech"][(n % 3) as usize];
            let tu = format!("tu{}", n % 4);
            let click = format!("c{n}");
            let mut e = event(n, tenant, 1_000 + (n as i64 * 37) % 200, &[("click_id", &click), ("sub1", "x")]);
            e.request_path = Some(format!("/t/{tu}"));
            e.params.insert("tu_id".into(), tu);
            e
        })
        .collect();
    let built = build(events.iter().enumerate().map(|(i, e)| (i as i64, e)).collect()).unwrap();
    assert_eq!(built.rows, 500);
    let tenants: Vec<_> = built.tenants.iter().map(|t| (t.tenant.as_str(), t.rows)).collect();
    assert_eq!(tenants, vec![("acme", 167), ("globex", 167), ("initech", 166)]);
    let seg = Segment::decode(&built.bytes).unwrap();
    assert_eq!(seg.len(), 500);
    // every event comes back whole, under its position
    let by_seq: BTreeMap<i64, &Event> = events.iter().enumerate().map(|(i, e)| (i as i64, e)).collect();
    for i in 0..seg.len() {
        assert_eq!(&seg.event(i), by_seq[&seg.seq(i)]);
        assert_eq!(seg.param(i, "click_id"), by_seq[&seg.seq(i)].params.get("click_id").map(String::as_str));
        assert_eq!(seg.param(i, "absent"), None);
    }
    // a tenant's rows in a time range, oldest first, ties in position order
    let rows = seg.rows("globex", 1_050, 1_100);
    let want: Vec<(i64, i64)> = {
        let mut v: Vec<_> = by_seq
            .iter()
            .filter(|(_, e)| e.key_prefix == "globex" && (1_050..1_100).contains(&e.timestamp))
            .map(|(s, e)| (e.timestamp, *s))
            .collect();
        v.sort();
        v
    };
    assert_eq!(rows.clone().map(|i| (seg.ts(i), seg.seq(i))).collect::<Vec<_>>(), want);
    assert!(rows.clone().all(|i| seg.event(i).key_prefix == "globex"));
    assert!(seg.rows("nobody", 0, i64::MAX).is_empty());
    assert!(seg.rows("acme", 2_000, 3_000).is_empty());
    // the filter knows each tenant's values, not another's
    let globex = &built.tenants[1].bloom;
    let theirs = events.iter().filter(|e| e.key_prefix == "globex").map(|e| e.params["click_id"].clone());
    assert!(theirs.clone().all(|c| globex.may_contain(&Key::Param("click_id", &c))));
    assert!(globex.may_contain(&Key::Link("tu1")));
    let others = events.iter().filter(|e| e.key_prefix == "acme").map(|e| e.params["click_id"].clone());
    assert!(others.filter(|c| globex.may_contain(&Key::Param("click_id", c))).count() < 10);
    // times and arrivals per tenant
    let acme = &built.tenants[0];
    let acme_ts = events.iter().filter(|e| e.key_prefix == "acme").map(|e| e.timestamp);
    assert_eq!((acme.ts_min, acme.ts_max), (acme_ts.clone().min().unwrap(), acme_ts.max().unwrap()));
    assert_eq!(acme.received_max, acme.ts_max + 5);
}

#[test]
fn a_segment_is_smaller_than_its_events_as_json() {
    let events: Vec<Event> = (0..10_000u64)
        .map(|n| {
            let click = format!("{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15);
            event(n, "acme", 1_700_000_000_000 + n as i64 * 3, &[("click_id", &click), ("campaign", "spring")])
        })
        .collect();
    let json: usize = events.iter().map(|e| serde_json::to_string(e).unwrap().len()).sum();
    let built = build(events.iter().enumerate().map(|(i, e)| (i as i64, e)).collect()).unwrap();
    // compressed columns: a fraction of the JSON, even with a random id per event
    assert!(built.bytes.len() * 3 < json, "{} bytes against {json} of JSON", built.bytes.len());
}

proptest! {
    #[test]
    fn any_events_come_back_as_they_were(
        rows in prop::collection::vec(
            ("[a-c]{1,3}", -5_000i64..5_000, prop::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..4)),
            1..60,
        ),
        from in -6_000i64..6_000,
        width in 0i64..6_000,
    ) {
        let events: Vec<Event> = rows
            .iter()
            .enumerate()
            .map(|(n, (tenant, ts, params))| {
                let mut e = event(n as u64, tenant, *ts, &[]);
                e.params = params.clone();
                e
            })
            .collect();
        let built = build(events.iter().enumerate().map(|(i, e)| (i as i64, e)).collect()).unwrap();
        let seg = Segment::decode(&built.bytes).unwrap();
        let mut back: Vec<Event> = (0..seg.len()).map(|i| seg.event(i)).collect();
        back.sort_by_key(|e| e.event_id);
        prop_assert_eq!(&back, &events);
        for tenant in ["a", "b", "cc"] {
            let got = seg.rows(tenant, from, from + width).count();
            let want = events
                .iter()
                .filter(|e| e.key_prefix == tenant && e.timestamp >= from && e.timestamp < from + width)
                .count();
            prop_assert_eq!(got, want);
        }
    }
}
