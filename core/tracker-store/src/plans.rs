//! Plans: what a tenant pays for and may use. The built-in `free`, `pro` and `enterprise` plans can be changed,
//! and plans of any other name added, in the node's configuration (`[plans.<name>]` tables in the config file, or
//! `PLANS` as JSON); a tenant names its plan, and its `limits` override some of the plan's values.
//!
//! Every field is used somewhere: the monthly allowance and its overage price or hard cap by the filter consumer
//! (which drops events past a hard cap as `quota`) and the invoice preview, the ingestion rate by the filter, the
//! retention by the archive, the query tiers by `/api/query`, the counts of webhooks and links by the platform API
//! when they are created, and the API rate by its rate limiter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::TenantLimits;

/// The largest monthly allowance a plan may have (a quadrillion: far past any real plan, far below overflow).
pub const MAX_MONTHLY_EVENTS: u64 = 1_000_000_000_000_000;

/// The query tiers a plan can allow.
pub const TIERS: &[&str] = &["hot", "warm", "cold"];

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Billable events (events the filter kept) included per calendar month (UTC).
    pub monthly_events: u64,
    /// The plan's price per month, in cents.
    #[serde(default)]
    pub price_cents: u64,
    /// Price per million billable events past the allowance, in cents. Absent: a hard cap (events past the
    /// allowance are dropped as `quota`, and ingestion answers `429`, until the month ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_cents_per_million: Option<u64>,
    /// Events per second the filter keeps per tenant (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// Days the archive keeps events (absent: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Which of `hot`, `warm`, `cold` `/api/query` may use.
    pub query_tiers: Vec<String>,
    /// Most webhook endpoints (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_webhooks: Option<u32>,
    /// Most tracking links (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_links: Option<u32>,
    /// Platform API requests per minute.
    pub api_requests_per_minute: u32,
}

impl Plan {
    /// Whether events past the allowance are dropped (rather than billed as overage).
    pub fn hard_cap(&self) -> bool {
        self.overage_cents_per_million.is_none()
    }

    /// The block on ingestion once `kept` billable events were kept in the month holding `now`: on a hard cap, at
    /// the allowance, until the next month.
    pub fn block(&self, kept: i64, now: i64) -> Option<tracker_protocol::quota::QuotaState> {
        (self.hard_cap() && u64::try_from(kept).unwrap_or(0) >= self.monthly_events).then(|| {
            tracker_protocol::quota::QuotaState {
                allowance: self.monthly_events,
                blocked_until: tracker_protocol::quota::next_month_start(now),
            }
        })
    }

    /// The plan's values with a tenant's overrides.
    pub fn with_limits(&self, limits: &TenantLimits) -> Plan {
        let mut p = self.clone();
        if let Some(n) = limits.api_requests_per_minute {
            p.api_requests_per_minute = n;
        }
        p.events_per_second = limits.events_per_second.or(p.events_per_second);
        p.retention_days = limits.retention_days.or(p.retention_days);
        p
    }

    /// The price of `events` billable events in one month, in cents: the plan's price, plus the overage, rounded
    /// up to the cent.
    pub fn price_cents(&self, events: u64) -> u64 {
        let over = events.saturating_sub(self.monthly_events);
        let overage = match self.overage_cents_per_million {
            Some(per_million) => {
                u64::try_from((u128::from(over) * u128::from(per_million)).div_ceil(1_000_000)).unwrap_or(u64::MAX)
            }
            None => 0,
        };
        self.price_cents.saturating_add(overage)
    }

    fn check(&self, name: &str) -> Result<(), String> {
        if !(1..=MAX_MONTHLY_EVENTS).contains(&self.monthly_events) {
            return Err(format!("plan {name}: monthly_events must be 1 to {MAX_MONTHLY_EVENTS}"));
        }
        if self.query_tiers.iter().any(|t| !TIERS.contains(&t.as_str())) {
            return Err(format!("plan {name}: query_tiers may hold only hot, warm and cold"));
        }
        if !(1..=1_000_000).contains(&self.api_requests_per_minute) {
            return Err(format!("plan {name}: api_requests_per_minute must be 1 to 1000000"));
        }
        if self.events_per_second.is_some_and(|n| n == 0 || n > 1_000_000) {
            return Err(format!("plan {name}: events_per_second must be 1 to 1000000"));
        }
        if self.retention_days.is_some_and(|n| n == 0 || n > 36_500) {
            return Err(format!("plan {name}: retention_days must be 1 to 36500"));
        }
        Ok(())
    }
}

/// The plans tenants can be on, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(BTreeMap<String, Plan>);

impl Default for Plans {
    /// The built-in plans.
    fn default() -> Self {
        let tiers = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect();
        Plans(BTreeMap::from([
            (
                "free".to_owned(),
                Plan {
                    monthly_events: 1_000_000,
                    price_cents: 0,
                    overage_cents_per_million: None,
                    events_per_second: None,
                    retention_days: None,
                    query_tiers: tiers(&["hot", "warm"]),
                    max_webhooks: Some(5),
                    max_links: Some(1_000),
                    api_requests_per_minute: 60,
                },
            ),
            (
                "pro".to_owned(),
                Plan {
                    monthly_events: 50_000_000,
                    price_cents: 9_900,
                    overage_cents_per_million: Some(200),
                    events_per_second: None,
                    retention_days: None,
                    query_tiers: tiers(TIERS),
                    max_webhooks: Some(50),
                    max_links: Some(100_000),
                    api_requests_per_minute: 600,
                },
            ),
            (
                "enterprise".to_owned(),
                Plan {
                    monthly_events: 1_000_000_000,
                    price_cents: 150_000,
                    overage_cents_per_million: Some(100),
                    events_per_second: None,
                    retention_days: None,
                    query_tiers: tiers(TIERS),
                    max_webhooks: None,
                    max_links: None,
                    api_requests_per_minute: 6_000,
                },
            ),
        ]))
    }
}

impl Plans {
    /// The built-in plans with `custom` added (a custom plan named like a built-in one replaces it); every plan
    /// checked.
    pub fn with(custom: BTreeMap<String, Plan>) -> Result<Plans, String> {
        let mut plans = Plans::default();
        for (name, plan) in custom {
            if !is_plan_name(&name) {
                return Err(format!("plan name {name:?} must be 1 to 64 characters from [a-z0-9_-]"));
            }
            plan.check(&name)?;
            plans.0.insert(name, plan);
        }
        Ok(plans)
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.0.get(name)
    }

    /// The plan of `name`, or the most restrictive fallback for a name no longer configured (a tenant whose plan
    /// was removed from the configuration keeps working on the free plan's terms).
    pub fn or_free(&self, name: &str) -> &Plan {
        self.0.get(name).or_else(|| self.0.get("free")).unwrap_or_else(|| FALLBACK.get_or_init(fallback))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Plan)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Plan names: 1 to 64 characters from `[a-z0-9_-]`.
pub fn is_plan_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

static FALLBACK: std::sync::OnceLock<Plan> = std::sync::OnceLock::new();

fn fallback() -> Plan {
    Plans::default().0.remove("free").unwrap_or(Plan {
        monthly_events: 1,
        price_cents: 0,
        overage_cents_per_million: None,
        events_per_second: None,
        retention_days: None,
        query_tiers: Vec::new(),
        max_webhooks: Some(0),
        max_links: Some(0),
        api_requests_per_minute: 60,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overage_is_billed_per_million_rounded_up_and_a_hard_cap_bills_nothing_past_the_allowance() {
        let plans = Plans::default();
        let pro = plans.get("pro").unwrap();
        assert_eq!(pro.price_cents(0), 9_900);
        assert_eq!(pro.price_cents(50_000_000), 9_900);
        // 1.5 M over at 200 cents per million: 300 cents
        assert_eq!(pro.price_cents(51_500_000), 10_200);
        // one event over: a fraction of a cent, rounded up
        assert_eq!(pro.price_cents(50_000_001), 9_901);
        let free = plans.get("free").unwrap();
        assert!(free.hard_cap());
        assert_eq!(free.price_cents(5_000_000), 0);
        assert_eq!(Plan { overage_cents_per_million: Some(u64::MAX), ..pro.clone() }.price_cents(u64::MAX), u64::MAX);
    }

    #[test]
    fn configured_plans_are_checked_and_replace_or_add_to_the_built_in_ones() {
        let small: Plan = serde_json::from_str(
            r#"{"monthly_events": 100, "query_tiers": ["hot"], "api_requests_per_minute": 30, "max_links": 3}"#,
        )
        .unwrap();
        let plans = Plans::with(BTreeMap::from([("small".to_owned(), small.clone())])).unwrap();
        assert_eq!(plans.get("small"), Some(&small));
        assert!(plans.get("small").unwrap().hard_cap());
        assert_eq!(plans.names().collect::<Vec<_>>(), ["enterprise", "free", "pro", "small"]);
        let free = Plan { monthly_events: 10, ..plans.get("free").unwrap().clone() };
        let plans = Plans::with(BTreeMap::from([("free".to_owned(), free)])).unwrap();
        assert_eq!(plans.get("free").unwrap().monthly_events, 10);
        assert_eq!(plans.or_free("gone").monthly_events, 10);

        for (name, plan, why) in [
            ("x", Plan { monthly_events: 0, ..small.clone() }, "monthly_events"),
            ("x", Plan { monthly_events: MAX_MONTHLY_EVENTS + 1, ..small.clone() }, "monthly_events"),
            ("x", Plan { query_tiers: vec!["lukewarm".into()], ..small.clone() }, "query_tiers"),
            ("x", Plan { api_requests_per_minute: 0, ..small.clone() }, "api_requests_per_minute"),
            ("Bad Name", small.clone(), "plan name"),
        ] {
            let e = Plans::with(BTreeMap::from([(name.to_owned(), plan)])).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(
            serde_json::from_str::<Plan>(
                r#"{"monthly_events": 1, "query_tiers": [], "api_requests_per_minute": 1, "typo": 1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_tenants_limits_override_its_plan() {
        let plans = Plans::default();
        let limits =
            TenantLimits { api_requests_per_minute: Some(5), events_per_second: Some(7), retention_days: None };
        let p = plans.or_free("pro").with_limits(&limits);
        assert_eq!((p.api_requests_per_minute, p.events_per_second, p.retention_days), (5, Some(7), None));
    }
}
