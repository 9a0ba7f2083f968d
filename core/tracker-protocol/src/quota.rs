//! Monthly allowances: the calendar arithmetic of a billing period (UTC months) and the quota state the core
//! hands the edge with a tenant's record, so both refuse ingestion the same way once a hard-capped tenant is over
//! its allowance.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

/// A tenant over its hard cap, as the tracking endpoints see it (part of the tenant's lookup record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    /// Billable events included per month.
    pub allowance: u64,
    /// Until when (ms since the epoch, the start of the next month) the ingestion API answers `429`.
    pub blocked_until: i64,
}

impl QuotaState {
    /// Whether ingestion is refused at `now_ms`.
    pub fn blocks(&self, now_ms: i64) -> bool {
        now_ms < self.blocked_until
    }

    /// Whole seconds from `now_ms` to the end of the block (at least 1).
    pub fn retry_after_secs(&self, now_ms: i64) -> u64 {
        u64::try_from(self.blocked_until.saturating_sub(now_ms)).unwrap_or(0).div_ceil(1000).max(1)
    }
}

/// The UTC date holding `ms`, clamped to chrono's range (years -262143 to 262142, beyond any clock or
/// accepted timestamp).
fn date(ms: i64) -> NaiveDate {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.date_naive(),
        None if ms < 0 => NaiveDate::MIN,
        None => NaiveDate::MAX,
    }
}

/// The start (ms) of a UTC day.
fn start(day: NaiveDate) -> i64 {
    day.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

/// The UTC date holding `ms`: year, month (1-12), day (1-31).
pub fn ymd(ms: i64) -> (i32, u32, u32) {
    let d = date(ms);
    (d.year(), d.month(), d.day())
}

/// The UTC month holding `ms`, as `(year, month)`.
pub fn month_of(ms: i64) -> (i32, u32) {
    let d = date(ms);
    (d.year(), d.month())
}

/// The start (ms) of the UTC month holding `ms`.
pub fn month_start(ms: i64) -> i64 {
    start(date(ms).with_day(1).unwrap_or(NaiveDate::MIN))
}

/// The start (ms) of the UTC month after the one holding `ms`.
pub fn next_month_start(ms: i64) -> i64 {
    let first = date(ms).with_day(1).unwrap_or(NaiveDate::MIN);
    first.checked_add_months(Months::new(1)).map_or(i64::MAX, start)
}

/// A month as `YYYY-MM` (the billing period's name).
pub fn month_name(ms: i64) -> String {
    let (y, m) = month_of(ms);
    format!("{y:04}-{m:02}")
}

/// The start (ms) of a month named `YYYY-MM`, or `None`.
pub fn parse_month(name: &str) -> Option<i64> {
    let (y, m) = name.split_once('-')?;
    if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1).map(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar() {
        // 2024-02-29T12:00:00Z
        let leap = 1_709_208_000_000;
        assert_eq!(month_name(leap), "2024-02");
        assert_eq!(month_start(leap), 1_706_745_600_000); // 2024-02-01
        assert_eq!(next_month_start(leap), 1_709_251_200_000); // 2024-03-01
        // December rolls into the next year
        let dec = parse_month("2026-12").unwrap();
        assert_eq!(dec, 1_796_083_200_000);
        assert_eq!(next_month_start(dec), parse_month("2027-01").unwrap());
        assert_eq!(month_start(next_month_start(dec) - 1), dec);
        assert_eq!(ymd(leap), (2024, 2, 29));
        assert_eq!(ymd(-1), (1969, 12, 31));
        // the extremes saturate instead of failing
        assert_eq!(next_month_start(i64::MAX), i64::MAX);
        assert!(month_start(i64::MIN) < 0);
        assert_eq!(month_start(0), 0);
        for bad in ["2026-13", "2026-00", "26-01", "2026-1", "2026/01", "abcd-ef", ""] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_block_ends_with_the_month() {
        let q = QuotaState { allowance: 10, blocked_until: 10_000 };
        assert!(q.blocks(9_999));
        assert!(!q.blocks(10_000));
        assert_eq!(q.retry_after_secs(8_500), 2);
        assert_eq!(q.retry_after_secs(9_999), 1);
    }
}
