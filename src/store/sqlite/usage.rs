//! The SQL of key usage in the SQLite store (`store::usage` owns the rows): a batch is added
//! in one IMMEDIATE transaction, each row an upsert adding its calls. Must not count calls.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::DbResult;
use crate::store::rules::{parse_ts, to_i64, ts};
use crate::store::usage::{COUNTING_SINCE, Usage, UsageRow};
use crate::store::{StoreError, StoreResult, VerifyReason};

/// Add `rows` to what the file keeps.
pub(super) fn add(conn: &mut Connection, rows: &[UsageRow]) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db("begin usage batch")?;
    if let Some(first) = rows.iter().map(|r| r.last_at).min() {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![COUNTING_SINCE, ts(&first)],
        )
        .db("record when counting began")?;
    }
    {
        let mut st = tx
            .prepare_cached(
                "INSERT INTO key_usage (key_id, day, reason, calls, last_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (key_id, day, reason) DO UPDATE SET \
                 calls = calls + excluded.calls, last_at = max(last_at, excluded.last_at)",
            )
            .db("prepare usage upsert")?;
        for r in rows {
            st.execute(params![
                r.key_id,
                r.day,
                r.reason.as_str(),
                to_i64(r.calls, "calls")?,
                ts(&r.last_at)
            ])
            .db("add usage")?;
        }
    }
    tx.commit().db("commit usage batch")
}

/// Every row from `since` (YYYY-MM-DD) on, and when counting began.
pub(super) fn read(conn: &Connection, since: &str) -> StoreResult<Usage> {
    let began: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![COUNTING_SINCE],
            |r| r.get(0),
        )
        .optional()
        .db("read when counting began")?;
    Ok(Usage {
        counting_since: began.map(|b| parse_ts(&b, "meta")).transpose()?,
        rows: rows(conn, since)?,
        last_use_only: false,
    })
}

fn rows(conn: &Connection, since: &str) -> StoreResult<Vec<UsageRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT key_id, day, reason, calls, last_at FROM key_usage WHERE day >= ?1 \
             ORDER BY key_id, day, reason",
        )
        .db("prepare usage")?;
    let mut found = st.query(params![since]).db("read usage")?;
    let mut out = Vec::new();
    while let Some(r) = found.next().db("read usage row")? {
        let reason: String = r.get(2).db("read usage reason")?;
        let calls: i64 = r.get(3).db("read usage calls")?;
        let last: String = r.get(4).db("read usage time")?;
        out.push(UsageRow {
            key_id: r.get(0).db("read usage key")?,
            day: r.get(1).db("read usage day")?,
            reason: VerifyReason::parse(&reason)
                .ok_or_else(|| StoreError::Backend(format!("unknown usage reason `{reason}`")))?,
            calls: u64::try_from(calls).unwrap_or(0),
            last_at: parse_ts(&last, "last_at")?,
        });
    }
    Ok(out)
}
