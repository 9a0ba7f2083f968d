//! # The filter's decisions
//!
//! What the filter consumer (raw events to filtered events) decides for one event, with no I/O: known bots by user
//! agent, and the tenant's own rules (the platform API's filter rules), each ending in `drop` or `flag`.
//!
//! Bots are judged by what a request can fake cheaply, so only events that are not authenticated are: a postback
//! signed with a v2 signature or an ingest token is the tenant's own server talking (often through an HTTP library
//! whose user agent looks like a bot), and is judged by its credentials, not its user agent.

use std::net::IpAddr;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexBuilder};
use tracker_protocol::{Auth, Event};

/// User-agent fragments of crawlers, monitors, link previewers and automation (matched case-insensitively as
/// substrings, all at once).
pub const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "crawl",
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "lighthouse",
    "pingdom",
    "uptimerobot",
    "statuscake",
    "facebookexternalhit",
    "embedly",
    "quora link preview",
    "whatsapp",
    "skypeuripreview",
    "bitlybot",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "libwww-perl",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "scrapy",
    "httpclient",
    "apache-httpclient",
    "feedfetcher",
    "mediapartners-google",
    "adsbot",
    "preview",
];

/// Bot detection on user agents.
#[derive(Debug, Clone)]
pub struct Bots {
    matcher: AhoCorasick,
}

impl Default for Bots {
    fn default() -> Self {
        Bots::new(BOT_MARKERS)
    }
}

impl Bots {
    pub fn new(markers: &[&str]) -> Bots {
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(markers)
            .unwrap_or_else(|_| {
                AhoCorasick::new(Vec::<&str>::new()).unwrap_or_else(|_| unreachable!("empty automaton"))
            });
        Bots { matcher }
    }

    /// Whether the user agent is a bot's (an empty or missing one counts: browsers always send one).
    pub fn is_bot(&self, user_agent: Option<&str>) -> bool {
        match user_agent.map(str::trim) {
            None | Some("") => true,
            Some(ua) => self.matcher.is_match(ua),
        }
    }
}

/// What a rule does on a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drop,
    Flag,
}

#[derive(Debug, Clone)]
enum Matcher {
    Equals(String),
    Contains(String),
    StartsWith(String),
    Regex(Regex),
    Cidr(IpAddr, u8),
    IsEmpty,
}

/// A tenant rule, compiled once when rules are (re)loaded.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    field: String,
    matcher: Matcher,
    pub action: Action,
}

/// Why a rule cannot be compiled (the platform API refuses such rules, so this means stored data changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRule(pub String);

impl Rule {
    /// Compiles a rule as the platform API stores it (`field`, `operator`, `value`, `action`).
    pub fn compile(id: &str, field: &str, operator: &str, value: Option<&str>, action: &str) -> Result<Rule, BadRule> {
        let need = || value.map(str::to_owned).ok_or_else(|| BadRule(format!("{operator} needs a value")));
        let matcher = match operator {
            "equals" => Matcher::Equals(need()?),
            "contains" => Matcher::Contains(need()?),
            "starts_with" => Matcher::StartsWith(need()?),
            "regex" => Matcher::Regex(
                RegexBuilder::new(&need()?).size_limit(256 * 1024).build().map_err(|e| BadRule(e.to_string()))?,
            ),
            "cidr" => {
                let v = need()?;
                let (addr, len) = v.split_once('/').ok_or_else(|| BadRule(format!("{v:?} is not a CIDR")))?;
                let addr: IpAddr = addr.parse().map_err(|_| BadRule(format!("{v:?} is not a CIDR")))?;
                let len: u8 = len.parse().map_err(|_| BadRule(format!("{v:?} is not a CIDR")))?;
                if len > if addr.is_ipv4() { 32 } else { 128 } {
                    return Err(BadRule(format!("{v:?} has too long a prefix")));
                }
                Matcher::Cidr(addr, len)
            }
            "is_empty" => Matcher::IsEmpty,
            other => return Err(BadRule(format!("unknown operator {other:?}"))),
        };
        let action = match action {
            "drop" => Action::Drop,
            "flag" => Action::Flag,
            other => return Err(BadRule(format!("unknown action {other:?}"))),
        };
        Ok(Rule { id: id.to_owned(), field: field.to_owned(), matcher, action })
    }

    fn field<'e>(&self, e: &'e Event) -> Option<&'e str> {
        match self.field.as_str() {
            "user_agent" => e.user_agent.as_deref(),
            "ip" => e.ip.as_deref(),
            "referer" => e.referer.as_deref(),
            "event_type" => Some(e.event_type.as_str()),
            "host" => e.request_host.as_deref(),
            "path" => e.request_path.as_deref(),
            "accept_language" => e.accept_language.as_deref(),
            "key_prefix" => Some(e.key_prefix.as_str()),
            other => other.strip_prefix("param:").and_then(|k| e.params.get(k)).map(String::as_str),
        }
    }

    /// Whether the rule matches the event.
    pub fn matches(&self, e: &Event) -> bool {
        let value = self.field(e);
        match &self.matcher {
            Matcher::IsEmpty => value.is_none_or(str::is_empty),
            _ => {
                let Some(v) = value else { return false };
                match &self.matcher {
                    Matcher::Equals(x) => v == x,
                    Matcher::Contains(x) => v.contains(x.as_str()),
                    Matcher::StartsWith(x) => v.starts_with(x.as_str()),
                    Matcher::Regex(r) => r.is_match(v),
                    Matcher::Cidr(net, len) => v.parse().is_ok_and(|ip| in_cidr(ip, *net, *len)),
                    Matcher::IsEmpty => v.is_empty(),
                }
            }
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
        (IpAddr::V6(a), IpAddr::V4(b)) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            None => return false,
        },
        _ => return false,
    };
    let len = u32::from(len);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (ip >> shift) == (net >> shift)
}

/// The filter's decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, with the ids of the rules that flagged it (and `"bot"` when a bot was flagged rather than dropped).
    Keep { flags: Vec<String> },
    /// Dropped: `"origin"`, `"bot"` or the id of the rule that dropped it.
    Drop { reason: String },
}

/// A beacon from a site its tenant does not accept (marked so at intake, where the tenant's list is read; see
/// `tracker_protocol::origins`). Only unauthenticated events: a token's events carry their sender's own payload.
fn refused_origin(e: &Event) -> bool {
    e.auth == Auth::None
        && e.raw_payload.as_ref().is_some_and(|raw| {
            raw.as_str().contains(tracker_protocol::origins::REFUSED_ORIGIN)
                && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.as_str())
                    .is_ok_and(|m| m.contains_key(tracker_protocol::origins::REFUSED_ORIGIN))
        })
}

/// Judges one event: beacons from refused origins first, then bots (unauthenticated events only), then the
/// tenant's rules in order; the first `drop` wins, every `flag` is collected.
pub fn judge(e: &Event, bots: &Bots, rules: &[Rule]) -> Verdict {
    if refused_origin(e) {
        return Verdict::Drop { reason: tracker_protocol::origins::DROP_REASON.into() };
    }
    let authenticated = matches!(e.auth, Auth::Token | Auth::Signature | Auth::Import);
    if !authenticated && bots.is_bot(e.user_agent.as_deref()) {
        return Verdict::Drop { reason: "bot".into() };
    }
    let mut flags = Vec::new();
    for rule in rules {
        if rule.matches(e) {
            match rule.action {
                Action::Drop => return Verdict::Drop { reason: rule.id.clone() },
                Action::Flag => flags.push(rule.id.clone()),
            }
        }
    }
    Verdict::Keep { flags }
}

/// Rate rules with bounded memory: at most `per_ip_per_minute` unauthenticated events per tenant and client IP in
/// a minute, and at most a tenant's own limit of events per second. Counters live in a fixed table of slots
/// (direct-mapped by a hash of the key, each remembering a 64-bit fingerprint of its key), so memory never grows
/// with the number of IPs or tenants: when two keys meet in one slot the newer takes it over and starts from zero,
/// which can only let an event through, never drop one wrongly. Windows follow the events' `received_at`, so a
/// replay of the same events judges them the same way.
#[derive(Debug, Clone)]
pub struct RateRules {
    per_ip_per_minute: u32,
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    fingerprint: u64,
    window: i64,
    count: u32,
}

/// Slots in a [`RateRules`] table (24 bytes each: 1.5 MiB).
pub const RATE_SLOTS: usize = 1 << 16;

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl RateRules {
    /// `per_ip_per_minute` 0 turns the per-IP rule off.
    pub fn new(per_ip_per_minute: u32) -> RateRules {
        RateRules { per_ip_per_minute, slots: vec![Slot::default(); RATE_SLOTS] }
    }

    fn count(&mut self, fingerprint: u64, window: i64) -> u32 {
        let i = usize::try_from(fingerprint % RATE_SLOTS as u64).unwrap_or(0);
        let Some(slot) = self.slots.get_mut(i) else { return 0 };
        if slot.fingerprint != fingerprint || slot.window != window {
            *slot = Slot { fingerprint, window, count: 0 };
        }
        slot.count = slot.count.saturating_add(1);
        slot.count
    }

    /// Counts the event and says which rule it breaks, if any: `"rate_ip"` or `"rate_tenant"`
    /// (`tenant_per_second` 0 = no tenant limit).
    pub fn check(&mut self, e: &Event, tenant_per_second: u32) -> Option<&'static str> {
        let authenticated = matches!(e.auth, Auth::Token | Auth::Signature | Auth::Import);
        if tenant_per_second > 0 {
            let fp = fnv(&[b"tenant", e.key_prefix.as_bytes()]);
            if self.count(fp, e.received_at.div_euclid(1000)) > tenant_per_second {
                return Some("rate_tenant");
            }
        }
        if self.per_ip_per_minute > 0
            && !authenticated
            && let Some(ip) = e.ip.as_deref()
        {
            // an IPv6 client counts by its /64: it has 2^64 addresses to rotate through
            let fp = fnv(&[b"ip", e.key_prefix.as_bytes(), tracker_protocol::client_ip::rate_key(ip).as_bytes()]);
            if self.count(fp, e.received_at.div_euclid(60_000)) > self.per_ip_per_minute {
                return Some("rate_ip");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(ua: Option<&str>, auth: Auth) -> Event {
        Event {
            event_id: tracker_protocol::Uuid::from_u64_pair(1, 1),
            event_type: "click".into(),
            timestamp: 0,
            received_at: 0,
            key_prefix: "acme".into(),
            ip: Some("203.0.113.9".into()),
            user_agent: ua.map(String::from),
            referer: None,
            accept_language: None,
            request_path: Some("/t".into()),
            request_host: None,
            params: [("utm_source".to_string(), "spamnet".to_string())].into(),
            raw_payload: None,
            auth,
            historical: false,
            overflow: false,
        }
    }

    const CHROME: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

    #[test]
    fn beacons_from_refused_origins_are_dropped_and_only_unauthenticated_ones() {
        let refused = tracker_protocol::RawJson::parse(r#"{"refused_origin":"https://evil.example"}"#).unwrap();
        let beacon = Event { raw_payload: Some(refused.clone()), ..event(Some(CHROME), Auth::None) };
        assert_eq!(judge(&beacon, &Bots::default(), &[]), Verdict::Drop { reason: "origin".into() });
        // a token's event may carry any payload of its sender's, that key included: judged as usual
        let sent = Event { raw_payload: Some(refused), ..event(Some(CHROME), Auth::Token) };
        assert_eq!(judge(&sent, &Bots::default(), &[]), Verdict::Keep { flags: vec![] });
        let mentioned = tracker_protocol::RawJson::parse(r#"{"v1":{"note":"refused_origin"}}"#).unwrap();
        let other = Event { raw_payload: Some(mentioned), ..event(Some(CHROME), Auth::None) };
        assert_eq!(judge(&other, &Bots::default(), &[]), Verdict::Keep { flags: vec![] });
    }

    #[test]
    fn bots_are_dropped_unless_the_event_is_authenticated() {
        let bots = Bots::default();
        let keep = Verdict::Keep { flags: vec![] };
        assert_eq!(judge(&event(Some(CHROME), Auth::Link), &bots, &[]), keep);
        for ua in [Some("Googlebot/2.1"), Some("python-requests/2.31"), Some("curl/8.4.0"), Some(""), None] {
            assert_eq!(judge(&event(ua, Auth::Link), &bots, &[]), Verdict::Drop { reason: "bot".into() }, "{ua:?}");
        }
        // a server-to-server postback from an HTTP library is judged by its credentials
        assert_eq!(judge(&event(Some("python-requests/2.31"), Auth::Token), &bots, &[]), keep);
        assert_eq!(judge(&event(None, Auth::Signature), &bots, &[]), keep);
    }

    #[test]
    fn tenant_rules_drop_on_the_first_match_and_collect_flags() {
        let bots = Bots::default();
        let rules = [
            Rule::compile("r1", "param:utm_source", "equals", Some("spamnet"), "flag").unwrap(),
            Rule::compile("r2", "ip", "cidr", Some("203.0.113.0/24"), "flag").unwrap(),
            Rule::compile("r3", "referer", "is_empty", None, "flag").unwrap(),
            Rule::compile("r4", "user_agent", "regex", Some("(?i)linux"), "drop").unwrap(),
        ];
        let e = event(Some(CHROME), Auth::Link);
        assert_eq!(judge(&e, &bots, &rules), Verdict::Drop { reason: "r4".into() });
        assert_eq!(
            judge(&e, &bots, rules.get(..3).unwrap()),
            Verdict::Keep { flags: vec!["r1".into(), "r2".into(), "r3".into()] }
        );
        let outside = Rule::compile("r5", "ip", "cidr", Some("198.51.100.0/24"), "drop").unwrap();
        assert!(!outside.matches(&e));
        let v6 = Rule::compile("r6", "ip", "cidr", Some("2001:db8::/32"), "drop").unwrap();
        let mut e6 = event(Some(CHROME), Auth::Link);
        e6.ip = Some("2001:db8::42".into());
        assert!(v6.matches(&e6) && !v6.matches(&e));
        assert!(Rule::compile("x", "ip", "cidr", Some("10.0.0.0/40"), "drop").is_err());
        assert!(Rule::compile("x", "ip", "regex", Some("("), "drop").is_err());
        assert!(Rule::compile("x", "ip", "equals", None, "drop").is_err());
    }

    #[test]
    fn rate_rules_drop_past_the_limit_per_window_and_spare_authenticated_postbacks() {
        let mut rates = RateRules::new(3);
        let mut e = event(Some(CHROME), Auth::Link);
        e.received_at = 60_000;
        let verdicts: Vec<_> = (0..5).map(|_| rates.check(&e, 0)).collect();
        assert_eq!(verdicts, [None, None, None, Some("rate_ip"), Some("rate_ip")]);
        // another IP, another tenant and the next minute each start afresh
        let mut other = e.clone();
        other.ip = Some("198.51.100.1".into());
        assert_eq!(rates.check(&other, 0), None);
        other.key_prefix = "beta".into();
        other.ip = e.ip.clone();
        assert_eq!(rates.check(&other, 0), None);
        e.received_at = 120_000;
        assert_eq!(rates.check(&e, 0), None);
        // a server's token postbacks are not limited per IP
        let mut post = event(Some("python-requests/2.31"), Auth::Token);
        post.received_at = 60_000;
        assert!((0..10).all(|_| rates.check(&post, 0).is_none()));
        // the tenant's own limit, per second
        let mut t = RateRules::new(0);
        let got: Vec<_> = (0..4).map(|_| t.check(&post, 2)).collect();
        assert_eq!(got, [None, None, Some("rate_tenant"), Some("rate_tenant")]);
    }

    #[test]
    fn an_ipv6_client_rotating_through_its_64_is_one_client() {
        let mut rates = RateRules::new(3);
        let verdicts: Vec<_> = (1..=5)
            .map(|n| {
                let mut e = event(Some(CHROME), Auth::Link);
                e.ip = Some(format!("2001:db8:7:8::{n:x}"));
                rates.check(&e, 0)
            })
            .collect();
        assert_eq!(verdicts, [None, None, None, Some("rate_ip"), Some("rate_ip")]);
        let mut next_door = event(Some(CHROME), Auth::Link);
        next_door.ip = Some("2001:db8:7:9::1".into());
        assert_eq!(rates.check(&next_door, 0), None, "another /64 is another client");
    }
}
