//! The Worker's settings, from `wrangler.toml` vars and secrets.

use tracker_protocol::service::ServiceConfig;
use tracker_protocol::settings::{Section, Settings, var};
use tracker_protocol::{Limits, LinkKey, Secret, V1Mode};

/// The Worker's variables (`wrangler.toml` `[vars]` and secrets): the one declaration of their defaults, rendered in
/// the README's edge table (a test keeps them equal).
pub const SETTINGS: Section = Section {
    title: "Edge Worker",
    variables: &[
        var("CORE_URLS", "", "core nodes, comma-separated, tried in turn"),
        var("EDGE_SHARED_SECRET", "", "secret: signs batches and lookups; one of the core's `EDGE_SHARED_SECRETS`"),
        var("HMAC_SECRET", "", "secret: global key for v1 links signed without a key prefix"),
        var("ENCRYPTION_KEY", "", "secret: global key for v1 encrypted links (64 hex, or 32 characters used as bytes)"),
        var("URL_MODE", "signed", "v1 click formats accepted (`signed`, `encrypted`, `any`)"),
        var("MAX_BATCH_SIZE", "10000", "most events in one `/batch`"),
        var("CACHE_TTL_MS", "5000", "isolate cache of tenants, short links and tokens"),
        var(
            "KV_FILL_TTL_SECS",
            "60",
            "how long a record filled into KV from the core is fresh (tenants and short links are then served as they \
             were while the core cannot be reached)",
        ),
        var(
            "COALESCE_MS",
            "200",
            "clicks, pixels and beacons an isolate takes within this window share one queue message (0: one each); \
             the answer never waits",
        ),
        var("RATE_LIMIT_TENANT_PER_SEC", "5000", "events per second per tenant and isolate (bursts of twice)"),
        var("RATE_LIMIT_IP_PER_SEC", "50", "requests per second per tenant, client IP and isolate"),
        var(
            "RATE_LIMIT_LOOKUP_MISS_PER_SEC",
            "10",
            "lookups per client IP and isolate that miss KV and ask the core (bursts of twice)",
        ),
        var(
            "RATE_LIMIT_API_IP_PER_SEC",
            "50",
            "platform API requests per client IP and isolate (a flood shield; plan limits are the core's)",
        ),
        var("DLQ_NAME", "tracker-events-dlq", "the dead-letter queue, whose consumer parks messages in KV"),
        var(
            "RETRY_MIN_DELAY_SECS",
            "10",
            "shortest wait before a message the core did not take is tried again (then as long as the message is old)",
        ),
        var("RETRY_MAX_DELAY_SECS", "900", "longest wait between two attempts at a message"),
        var(
            "FAILOVER_AFTER_SECS",
            "60",
            "a message goes to its batch's home core node until it is this old, then to any (a batch is never split)",
        ),
        var(
            "PARK_AFTER_SECS",
            "1800",
            "a message still not taken this long after it was sent is parked in KV, and replayed once the core answers",
        ),
    ],
};

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Core nodes, tried in turn (failover) for forwarding and lookups.
    pub core_urls: Vec<String>,
    /// `EDGE_SHARED_SECRET`: signs batches and lookups sent to the core.
    pub edge_secret: Option<Secret<Vec<u8>>>,
    pub service: ServiceConfig,
    /// V1 links without a key prefix (`HMAC_SECRET`, `ENCRYPTION_KEY` secrets).
    pub global_keys: Vec<LinkKey>,
    /// How long an isolate keeps a tenant, short link or token (and a "not found").
    pub cache_ttl_ms: i64,
    /// How long a record the Worker fills into KV from the core is fresh (the bound on changes made in the core
    /// reaching the edge while nothing purges KV). Past it the core is asked again; tenants and short links are
    /// served as they were while it cannot be reached.
    pub kv_fill_ttl_secs: u64,
    /// How long an isolate collects clicks, pixels and beacons into one queue message (`COALESCE_MS`; 0 sends each
    /// on its own).
    pub coalesce_ms: u32,
    /// Events per second per tenant, per isolate.
    pub tenant_rate: f64,
    /// Requests per second per tenant and client IP, per isolate.
    pub ip_rate: f64,
    /// Lookups per second per client IP that miss KV and ask the core, per isolate.
    pub miss_rate: f64,
    /// Platform API requests per second per client IP, per isolate (a flood shield; the per-plan limits are
    /// the core's).
    pub api_ip_rate: f64,
    /// Name of the dead-letter queue (its consumer parks messages in KV).
    pub dlq_name: String,
    /// Waits between attempts at a message the core did not take (`RETRY_MIN_DELAY_SECS`, `RETRY_MAX_DELAY_SECS`).
    pub retry_min_delay_secs: u32,
    pub retry_max_delay_secs: u32,
    /// Age past which a message is offered to other core nodes than its home node (`FAILOVER_AFTER_SECS`).
    pub failover_after_secs: u32,
    /// Age past which a message that fails again is parked in KV for replay (`PARK_AFTER_SECS`).
    pub park_after_secs: u32,
}

impl EdgeConfig {
    /// `EDGE_SHARED_SECRET`'s bytes, if set.
    pub fn shared_secret(&self) -> Option<&[u8]> {
        self.edge_secret.as_ref().map(|s| s.expose().as_slice())
    }

    /// Reads every setting through `get` (vars and secrets of the Worker's environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<EdgeConfig, String> {
        let sections = [SETTINGS];
        let src = Settings::new(&sections, get);
        let get = |name: &str| src.get(name);
        let core_urls: Vec<String> = get("CORE_URLS")
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if let Some(bad) = core_urls.iter().find(|u| !tracker_protocol::intake::is_service_url(u)) {
            return Err(format!("CORE_URLS: {bad:?} must be an https URL (http only to this machine)"));
        }
        let v1_mode: V1Mode = src.value("URL_MODE").map_err(|e| e.to_string())?;
        let hmac_secret = get("HMAC_SECRET");
        let encryption_key = match get("ENCRYPTION_KEY") {
            Some(k) => Some(
                tracker_protocol::v1::global_encryption_key(&k)
                    .ok_or("ENCRYPTION_KEY: must be 64 hex characters, or 32 characters used as the key's bytes")?,
            ),
            None => None,
        };
        let global_keys = if hmac_secret.is_some() || encryption_key.is_some() {
            vec![LinkKey { kid: "global".into(), signing_secret: hmac_secret, encryption_key, retires_at_ms: None }]
        } else {
            Vec::new()
        };
        let edge_secret = get("EDGE_SHARED_SECRET").map(String::into_bytes);
        if edge_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("EDGE_SHARED_SECRET: must be at least 32 characters".into());
        }
        let rate = |name: &'static str| src.number(name, 0.001..=1e9);
        let settings = || -> Result<EdgeConfig, tracker_protocol::settings::SettingError> {
            Ok(EdgeConfig {
                core_urls,
                edge_secret: edge_secret.map(Secret::new),
                service: ServiceConfig {
                    v1_mode,
                    limits: Limits::default(),
                    max_batch_size: src.number("MAX_BATCH_SIZE", 1..=1_000_000)?,
                },
                global_keys,
                // at most a day: the isolate cache is the bound on how long a revoked record is still honoured
                cache_ttl_ms: src.number("CACHE_TTL_MS", 0..=86_400_000)?,
                kv_fill_ttl_secs: src.number::<u64>("KV_FILL_TTL_SECS", 0..=31_536_000)?.max(1),
                // the Workers runtime keeps waitUntil work alive for 30 s after the answer
                coalesce_ms: src.number("COALESCE_MS", 0..=5_000)?,
                tenant_rate: rate("RATE_LIMIT_TENANT_PER_SEC")?,
                ip_rate: rate("RATE_LIMIT_IP_PER_SEC")?,
                miss_rate: rate("RATE_LIMIT_LOOKUP_MISS_PER_SEC")?,
                api_ip_rate: rate("RATE_LIMIT_API_IP_PER_SEC")?,
                dlq_name: src.value("DLQ_NAME")?,
                // Cloudflare Queues delay a retry by at most 12 hours
                retry_min_delay_secs: src.number("RETRY_MIN_DELAY_SECS", 0..=43_200)?,
                retry_max_delay_secs: src.number("RETRY_MAX_DELAY_SECS", 0..=43_200)?,
                park_after_secs: src.number("PARK_AFTER_SECS", 0..=31_536_000)?,
                failover_after_secs: src.number("FAILOVER_AFTER_SECS", 0..=31_536_000)?,
            })
        };
        settings().map_err(|e| e.to_string())
    }
}

/// The path and query of an absolute URL as the runtime serialises it (WHATWG: the path starts at the first `/`
/// after the authority; `?` and `#` inside it are percent-encoded), without parsing the whole URL again.
pub fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = url.get(after_scheme..).unwrap_or_default();
    let rest = rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/");
    let rest = rest.split('#').next().unwrap_or_default();
    match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<EdgeConfig, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EdgeConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn splits_runtime_urls_into_path_and_query() {
        assert_eq!(split_url("https://edge.test/t?url=a&sig=b#frag"), ("/t", "url=a&sig=b"));
        assert_eq!(split_url("http://127.0.0.1:8787/t/tu_1"), ("/t/tu_1", ""));
        assert_eq!(split_url("https://edge.test"), ("/", ""));
        assert_eq!(split_url("https://edge.test/?"), ("/", ""));
        assert_eq!(split_url("https://edge.test/p%3F?x=%23"), ("/p%3F", "x=%23"));
    }

    /// The README's edge table is the declaration, rendered.
    #[test]
    fn the_readme_shows_the_declared_variables() {
        let readme = include_str!("../../README.md");
        let table = tracker_protocol::settings::markdown(&[SETTINGS]);
        assert!(readme.contains(&table), "README.md's edge table should be:\n{table}");
    }

    #[test]
    fn reads_settings_and_names_bad_ones() {
        let c = cfg(&[
            ("CORE_URLS", "http://127.0.0.1:1/, https://b"),
            ("HMAC_SECRET", "s"),
            ("RATE_LIMIT_IP_PER_SEC", "9"),
        ])
        .unwrap();
        assert_eq!(c.core_urls, vec!["http://127.0.0.1:1", "https://b"]);
        assert_eq!(c.global_keys.len(), 1);
        assert_eq!(c.ip_rate, 9.0);
        assert_eq!(c.kv_fill_ttl_secs, 60);
        assert!(cfg(&[("CORE_URLS", "ftp://x")]).unwrap_err().starts_with("CORE_URLS"));
        // service traffic in the clear only on this machine
        assert!(cfg(&[("CORE_URLS", "http://core.example")]).unwrap_err().contains("https"));
        assert!(cfg(&[("EDGE_SHARED_SECRET", "short")]).unwrap_err().starts_with("EDGE_SHARED_SECRET"));
        assert!(cfg(&[("URL_MODE", "weird")]).is_err());
        assert!(cfg(&[("MAX_BATCH_SIZE", "many")]).unwrap_err().starts_with("MAX_BATCH_SIZE"));
        let defaults = cfg(&[]).unwrap();
        assert_eq!((defaults.cache_ttl_ms, defaults.tenant_rate), (5_000, 5_000.0), "the declared defaults");
        assert_eq!(defaults.dlq_name, "tracker-events-dlq");
        assert_eq!(defaults.coalesce_ms, 200);
        assert!(cfg(&[("COALESCE_MS", "60000")]).unwrap_err().starts_with("COALESCE_MS"), "past waitUntil's 30 s");
        assert!(cfg(&[("RATE_LIMIT_IP_PER_SEC", "-1")]).unwrap_err().starts_with("RATE_LIMIT_IP_PER_SEC"));
        assert!(cfg(&[("CACHE_TTL_MS", "99999999999999999")]).unwrap_err().starts_with("CACHE_TTL_MS"));
    }
}
