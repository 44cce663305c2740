//! The SQL of key usage in the PostgreSQL store (`store::usage` owns the rows): a batch is
//! one statement upserting every row (`calls = calls + EXCLUDED.calls`), so instances that
//! flush at once add up instead of overwriting each other. Must not count calls.

use super::DbResult;
use super::rows::get;
use crate::store::rules::{parse_ts, to_i64, ts};
use crate::store::usage::{COUNTING_SINCE, Usage, UsageRow};
use crate::store::{StoreError, StoreResult, VerifyReason};

/// Add `rows` (merged: one row per key, day and reason; in that order, so two instances
/// flushing at once take the row locks in the same order).
pub(super) async fn add(c: &tokio_postgres::Client, rows: &[UsageRow]) -> StoreResult<()> {
    let mut keys = Vec::with_capacity(rows.len());
    let mut days = Vec::with_capacity(rows.len());
    let mut reasons = Vec::with_capacity(rows.len());
    let mut calls = Vec::with_capacity(rows.len());
    let mut lasts = Vec::with_capacity(rows.len());
    for r in rows {
        keys.push(r.key_id.as_str());
        days.push(r.day.as_str());
        reasons.push(r.reason.as_str());
        calls.push(to_i64(r.calls, "calls")?);
        lasts.push(ts(&r.last_at));
    }
    if let Some(first) = rows.iter().map(|r| r.last_at).min() {
        c.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&COUNTING_SINCE, &ts(&first)],
        )
        .await
        .db("record when counting began")?;
    }
    c.execute(
        "INSERT INTO key_usage (key_id, day, reason, calls, last_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) \
         ON CONFLICT (key_id, day, reason) DO UPDATE SET \
         calls = key_usage.calls + EXCLUDED.calls, \
         last_at = GREATEST(key_usage.last_at, EXCLUDED.last_at)",
        &[&keys, &days, &reasons, &calls, &lasts],
    )
    .await
    .db("add usage")?;
    Ok(())
}

/// Every row from `since` (YYYY-MM-DD) on, and when counting began.
pub(super) async fn read(c: &tokio_postgres::Client, since: &str) -> StoreResult<Usage> {
    let began = c
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&COUNTING_SINCE])
        .await
        .db("read when counting began")?;
    let counting_since = match began {
        Some(r) => Some(parse_ts(&get::<String>(&r, 0, "value")?, "meta")?),
        None => None,
    };
    Ok(Usage {
        counting_since,
        rows: rows(c, since).await?,
        last_use_only: false,
    })
}

async fn rows(c: &tokio_postgres::Client, since: &str) -> StoreResult<Vec<UsageRow>> {
    let rows = c
        .query(
            "SELECT key_id, day, reason, calls, last_at FROM key_usage WHERE day >= $1 \
             ORDER BY key_id, day, reason",
            &[&since],
        )
        .await
        .db("read usage")?;
    rows.iter()
        .map(|r| {
            let reason: String = get(r, 2, "reason")?;
            let calls: i64 = get(r, 3, "calls")?;
            Ok(UsageRow {
                key_id: get(r, 0, "key_id")?,
                day: get(r, 1, "day")?,
                reason: VerifyReason::parse(&reason).ok_or_else(|| {
                    StoreError::Backend(format!("unknown usage reason `{reason}`"))
                })?,
                calls: u64::try_from(calls).unwrap_or(0),
                last_at: parse_ts(&get::<String>(r, 4, "last_at")?, "last_at")?,
            })
        })
        .collect()
}
