//! Usage counted at `/v1/verify`: every verdict is tallied in memory (per key, UTC day and
//! reason, with the last call's time) and the tally is written to the store in one batch at
//! most every flush interval and when the server stops, never once per request. A failed
//! write puts the batch back, so it is tried again with the next one. Must not hold or log a
//! presented secret: only key ids (taken from the secret's public format) are kept, and calls
//! naming no existing key are counted under `store::usage::NO_KEY`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::usage::{NO_KEY, UsageRow};
use crate::store::{Store, Verdict, VerifyReason};

/// How often the tally is written by default.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(2);

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Count {
    day: NaiveDate,
    reason: VerifyReason,
    calls: u64,
    last_at: DateTime<Utc>,
}

/// The calls counted since the last flush.
#[derive(Debug)]
pub struct Tally {
    /// Sharded by key id, so verifies of different keys rarely wait on one lock.
    shards: [Mutex<HashMap<String, Vec<Count>>>; SHARDS],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

fn shard(id: &str) -> usize {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % SHARDS as u64) as usize
}

/// The key id a verdict is counted under: the key's own for a valid call and for a refusal
/// of a key the store holds; `NO_KEY` when the key is malformed or unknown (its id may be
/// invented).
pub fn counted_id<'a>(presented: &str, verdict: &'a Verdict) -> std::borrow::Cow<'a, str> {
    if let Some(k) = &verdict.key {
        return std::borrow::Cow::Borrowed(k.id.as_str());
    }
    match verdict.reason {
        VerifyReason::Unknown | VerifyReason::Malformed => std::borrow::Cow::Borrowed(NO_KEY),
        _ => crate::secret::parse(presented)
            .map(|p| std::borrow::Cow::Owned(p.id))
            .unwrap_or(std::borrow::Cow::Borrowed(NO_KEY)),
    }
}

impl Tally {
    /// Count one call of `id` that ended with `reason` at `at`.
    pub fn count(&self, id: &str, reason: VerifyReason, at: DateTime<Utc>) {
        self.add(id, reason, at.date_naive(), 1, at);
    }

    fn add(&self, id: &str, reason: VerifyReason, day: NaiveDate, calls: u64, at: DateTime<Utc>) {
        let mut m = self.shards[shard(id)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let counts = match m.get_mut(id) {
            Some(c) => c,
            None => m.entry(id.to_owned()).or_default(),
        };
        match counts
            .iter_mut()
            .find(|c| c.day == day && c.reason == reason)
        {
            Some(c) => {
                c.calls += calls;
                c.last_at = c.last_at.max(at);
            }
            None => counts.push(Count {
                day,
                reason,
                calls,
                last_at: at,
            }),
        }
    }

    /// Take everything counted so far, as rows sorted by key, day and reason.
    pub fn take(&self) -> Vec<UsageRow> {
        let mut rows = Vec::new();
        for s in &self.shards {
            let drained: Vec<_> = s
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .collect();
            for (id, counts) in drained {
                rows.extend(counts.into_iter().map(|c| UsageRow {
                    key_id: id.clone(),
                    day: c.day.format("%Y-%m-%d").to_string(),
                    reason: c.reason,
                    calls: c.calls,
                    last_at: c.last_at,
                }));
            }
        }
        rows.sort_by(|a, b| {
            (&a.key_id, &a.day, a.reason.as_str()).cmp(&(&b.key_id, &b.day, b.reason.as_str()))
        });
        rows
    }

    /// Put rows back (a write that failed), to go out with the next batch.
    pub fn put_back(&self, rows: Vec<UsageRow>) {
        for r in rows {
            if let Ok(day) = NaiveDate::parse_from_str(&r.day, "%Y-%m-%d") {
                self.add(&r.key_id, r.reason, day, r.calls, r.last_at);
            }
        }
    }
}

/// Write what `tally` holds to `store` (nothing when it holds nothing); on failure the rows
/// go back into the tally. Returns how many calls were written.
pub async fn flush(tally: &Tally, store: &dyn Store) -> u64 {
    let rows = tally.take();
    if rows.is_empty() {
        return 0;
    }
    let calls = rows.iter().map(|r| r.calls).sum();
    match store.add_usage(&rows).await {
        Ok(()) => calls,
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "usage not written; retrying with the next batch");
            tally.put_back(rows);
            0
        }
    }
}

/// Flush `tally` to `store` every `every` until the process stops (the server flushes once
/// more after it stops listening).
pub fn spawn_flusher(tally: Arc<Tally>, store: Arc<dyn Store>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            flush(&tally, store.as_ref()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tally_sums_per_key_day_and_reason_and_puts_back() {
        let t = Tally::default();
        let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        for _ in 0..3 {
            t.count("a", VerifyReason::Ok, at(1, 1));
        }
        t.count("a", VerifyReason::Ok, at(1, 4));
        t.count("a", VerifyReason::Disabled, at(1, 2));
        t.count("a", VerifyReason::Ok, at(2, 0));
        t.count("b", VerifyReason::Ok, at(1, 3));
        let rows = t.take();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.key_id.as_str(), r.day.as_str(), r.reason, r.calls))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "2026-12-01", VerifyReason::Disabled, 1),
                ("a", "2026-12-01", VerifyReason::Ok, 4),
                ("a", "2026-12-02", VerifyReason::Ok, 1),
                ("b", "2026-12-01", VerifyReason::Ok, 1),
            ]
        );
        assert_eq!(rows[1].last_at, at(1, 4));
        assert!(t.take().is_empty(), "taking empties the tally");
        t.put_back(rows.clone());
        t.count("b", VerifyReason::Ok, at(1, 5));
        let again = t.take();
        assert_eq!(again.iter().map(|r| r.calls).sum::<u64>(), 8);
    }

    #[test]
    fn invented_ids_are_not_kept() {
        let v = Verdict {
            valid: false,
            reason: VerifyReason::Unknown,
            key: None,
        };
        assert_eq!(counted_id("kw_live_whatever", &v), NO_KEY);
    }
}
