//! Monthly allowances: the calendar arithmetic of a billing period (UTC months) and the quota state the core
//! hands the edge with a tenant's record, so both refuse ingestion the same way once a hard-capped tenant is over
//! its allowance.

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (the inverse of [`days_from_civil`]): year, month (1-12), day
/// (1-31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC month holding `ms`, as `(year, month)`.
pub fn month_of(ms: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
    (y, m)
}

/// The start (ms) of the UTC month `(year, month)`.
pub fn month_start_of(year: i64, month: u32) -> i64 {
    days_from_civil(year, month, 1).saturating_mul(DAY_MS)
}

/// The start (ms) of the UTC month holding `ms`.
pub fn month_start(ms: i64) -> i64 {
    let (y, m) = month_of(ms);
    month_start_of(y, m)
}

/// The start (ms) of the UTC month after the one holding `ms`.
pub fn next_month_start(ms: i64) -> i64 {
    let (y, m) = month_of(ms);
    if m == 12 { month_start_of(y + 1, 1) } else { month_start_of(y, m + 1) }
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
    let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then(|| month_start_of(y, m))
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
        // every day of four centuries round-trips
        for d in -146_097..146_097 {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
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
