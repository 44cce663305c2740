//! Key usage as a store keeps it: one row per key, UTC day and verify reason with the calls
//! counted and the last call's time, added to (never overwritten) so several `keyward serve`
//! instances on one database add up. The SQL of each backend lives beside its store; this
//! file owns the rows, their merging and the summaries the commands show. Must not count a
//! call itself (the server batches them) and knows nothing about SQL.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::VerifyReason;

/// The key id under which calls that name no existing key (malformed or unknown keys) are
/// counted, so a caller inventing ids cannot grow the table.
pub const NO_KEY: &str = "";

/// Calls of one key on one UTC day that ended with one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The key's id (`NO_KEY` for malformed and unknown keys).
    pub key_id: String,
    /// The UTC day, YYYY-MM-DD.
    pub day: String,
    /// The verify reason (`ok` for a valid call).
    pub reason: VerifyReason,
    pub calls: u64,
    /// The time of the last of these calls.
    pub last_at: DateTime<Utc>,
}

impl VerifyReason {
    /// The reason as the protocol spells it (`ok`, `quota_exceeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyReason::Ok => "ok",
            VerifyReason::Unknown => "unknown",
            VerifyReason::Malformed => "malformed",
            VerifyReason::Expired => "expired",
            VerifyReason::NotYetValid => "not_yet_valid",
            VerifyReason::Disabled => "disabled",
            VerifyReason::Revoked => "revoked",
            VerifyReason::QuotaExceeded => "quota_exceeded",
            VerifyReason::BudgetExceeded => "budget_exceeded",
        }
    }
    /// The reason from its protocol spelling.
    pub fn parse(s: &str) -> Option<VerifyReason> {
        ALL_REASONS.iter().copied().find(|r| r.as_str() == s)
    }
}

/// Every verify reason, in the order reports list them.
pub const ALL_REASONS: [VerifyReason; 9] = [
    VerifyReason::Ok,
    VerifyReason::Unknown,
    VerifyReason::Malformed,
    VerifyReason::Expired,
    VerifyReason::NotYetValid,
    VerifyReason::Disabled,
    VerifyReason::Revoked,
    VerifyReason::QuotaExceeded,
    VerifyReason::BudgetExceeded,
];

/// The UTC day of `t` as stored (YYYY-MM-DD).
pub fn day_of(t: &DateTime<Utc>) -> String {
    t.date_naive().format("%Y-%m-%d").to_string()
}

/// The first day (YYYY-MM-DD) of a window of `days` days ending today.
pub fn since_day(now: DateTime<Utc>, days: u32) -> String {
    let first = now.date_naive() - chrono::Days::new(u64::from(days.saturating_sub(1)));
    first.format("%Y-%m-%d").to_string()
}

/// The usage a store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// When counting began (the first call ever written): a key with no call since is
    /// unused only for the time from then, not since it was made.
    pub counting_since: Option<DateTime<Utc>>,
    /// The rows asked for, sorted by key, day and reason.
    pub rows: Vec<UsageRow>,
    /// The store reports only when each key was last used, not how often (an exec adapter
    /// without calls per day): its rows are one per key, on the day of the last use, with
    /// `calls` 0, and reports show its calls as not counted rather than as none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_use_only: bool,
}

/// The meta entry holding `Usage::counting_since`.
pub const COUNTING_SINCE: &str = "usage_counting_since";

/// The answer of `GET /v1/usage`: whether the served store keeps usage, and its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsagePage {
    pub kept: bool,
    #[serde(default)]
    pub counting_since: Option<DateTime<Utc>>,
    pub items: Vec<UsageRow>,
}

impl UsagePage {
    pub fn of(usage: Option<Usage>) -> UsagePage {
        match usage {
            None => UsagePage {
                kept: false,
                counting_since: None,
                items: Vec::new(),
            },
            Some(u) => UsagePage {
                kept: true,
                counting_since: u.counting_since,
                items: u.rows,
            },
        }
    }
    pub fn usage(self) -> Option<Usage> {
        self.kept.then_some(Usage {
            counting_since: self.counting_since,
            rows: self.items,
            last_use_only: false,
        })
    }
}

/// What a store knows of one key's use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyUse {
    /// The last valid call, if any in the rows read.
    pub last_used: Option<DateTime<Utc>>,
    /// Valid calls.
    pub valid: u64,
    /// Refused calls.
    pub refused: u64,
}

/// Per key id: the last valid call and the counts, from rows of any days.
pub fn per_key(rows: &[UsageRow]) -> BTreeMap<String, KeyUse> {
    let mut out: BTreeMap<String, KeyUse> = BTreeMap::new();
    for r in rows {
        let u = out.entry(r.key_id.clone()).or_default();
        if r.reason == VerifyReason::Ok {
            u.valid += r.calls;
            u.last_used = u.last_used.max(Some(r.last_at));
        } else {
            u.refused += r.calls;
        }
    }
    out
}

/// Whole days a key has not been used at `now`: since its last valid call, or, never used,
/// since the later of its creation and the start of counting. `None` when counting had not
/// begun (nothing can be said).
pub fn days_unused(
    last: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    counting_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<i64> {
    let from = match last {
        Some(l) => l,
        None => created.max(counting_since?),
    };
    Some((now - from).num_days().max(0))
}

/// Sum rows of the same key, day and reason (the later `last_at` wins).
pub fn merge(rows: impl IntoIterator<Item = UsageRow>) -> Vec<UsageRow> {
    let mut m: BTreeMap<(String, String, &'static str), UsageRow> = BTreeMap::new();
    for r in rows {
        let k = (r.key_id.clone(), r.day.clone(), r.reason.as_str());
        match m.get_mut(&k) {
            Some(have) => {
                have.calls += r.calls;
                have.last_at = have.last_at.max(r.last_at);
            }
            None => {
                m.insert(k, r);
            }
        }
    }
    m.into_values().collect()
}

/// Check a day string the protocol received.
pub fn valid_day(s: &str) -> bool {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(key: &str, day: &str, reason: VerifyReason, calls: u64, h: u32) -> UsageRow {
        UsageRow {
            key_id: key.into(),
            day: day.into(),
            reason,
            calls,
            last_at: Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap(),
        }
    }

    #[test]
    fn merge_adds_calls_and_keeps_the_latest_time() {
        let m = merge([
            row("a", "2026-12-01", VerifyReason::Ok, 3, 1),
            row("a", "2026-12-01", VerifyReason::Ok, 4, 5),
            row("a", "2026-12-01", VerifyReason::Disabled, 1, 2),
        ]);
        assert_eq!(m.len(), 2);
        let ok = m.iter().find(|r| r.reason == VerifyReason::Ok).unwrap();
        assert_eq!(ok.calls, 7);
        assert_eq!(ok.last_at.format("%H").to_string(), "05");
    }

    #[test]
    fn per_key_counts_valid_and_refused_and_last_use_is_valid_only() {
        let p = per_key(&[
            row("a", "2026-12-01", VerifyReason::Ok, 3, 1),
            row("a", "2026-12-01", VerifyReason::Revoked, 2, 9),
        ]);
        let a = &p["a"];
        assert_eq!((a.valid, a.refused), (3, 2));
        assert_eq!(a.last_used.unwrap().format("%H").to_string(), "01");
    }

    #[test]
    fn reasons_round_trip_and_windows_count_today() {
        for r in ALL_REASONS {
            assert_eq!(VerifyReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap();
        assert_eq!(since_day(now, 1), "2026-12-04");
        assert_eq!(since_day(now, 30), "2026-11-05");
        assert!(valid_day("2026-12-04") && !valid_day("2026-13-04"));
    }
}
