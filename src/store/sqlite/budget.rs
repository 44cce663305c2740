//! The SQL of the shared daily budget in the SQLite store (`store::budget` owns the rules):
//! the budget in `meta`, each scope's daily counter reserved from in IMMEDIATE transactions
//! (so processes sharing the file never reserve past the budget), and the alert claims.
//! Must not decide what a key spends from.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbResult;
use crate::store::budget::{self, Alert, Budget, META_KEY, Spent};
use crate::store::rules::{to_i64, ts};
use crate::store::{StoreError, StoreResult};

/// The budget the file holds.
pub(super) fn load(conn: &Connection) -> StoreResult<Option<Budget>> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut st| st.query_row([META_KEY], |r| r.get(0)).optional())
        .db("read the budget")?;
    v.map(|v| {
        serde_json::from_str(&v)
            .map_err(|e| StoreError::Backend(format!("the stored budget is unreadable: {e}")))
    })
    .transpose()
}

/// Write (or remove) the budget; returns the one it replaced.
pub(super) fn save(conn: &Connection, b: Option<&Budget>) -> StoreResult<Option<Budget>> {
    let before = load(conn)?;
    match b {
        Some(b) => {
            let v = serde_json::to_string(b).map_err(|e| StoreError::Invalid(e.to_string()))?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![META_KEY, v],
            )
            .db("write the budget")?;
        }
        None => {
            conn.execute("DELETE FROM meta WHERE key = ?1", [META_KEY])
                .db("remove the budget")?;
        }
    }
    Ok(before)
}

/// Reserve up to `block` calls of `scope`'s `daily` budget on `day` in one IMMEDIATE
/// transaction; returns how many were granted (0: spent).
pub(super) fn reserve(
    conn: &mut Connection,
    scope: &str,
    day: &str,
    daily: u64,
    block: u64,
) -> StoreResult<u64> {
    super::relaxed(conn, |conn| {
        let tx = super::immediate(conn)?;
        let used: Option<i64> = tx
            .prepare_cached("SELECT calls FROM budget_usage WHERE scope = ?1 AND day = ?2")
            .and_then(|mut st| st.query_row(params![scope, day], |r| r.get(0)).optional())
            .db("read budget counter")?;
        let grant = budget::grant(daily, u64::try_from(used.unwrap_or(0)).unwrap_or(0), block);
        if grant > 0 {
            let calls = to_i64(grant, "budget")?;
            tx.prepare_cached(
                "INSERT INTO budget_usage (scope, day, calls) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (scope, day) DO UPDATE SET calls = calls + ?3",
            )
            .and_then(|mut st| st.execute(params![scope, day, calls]))
            .db("reserve budget calls")?;
        }
        tx.commit().db("commit budget reservation")?;
        Ok(grant)
    })
}

/// Give reserved but unused calls back (a process stopping).
pub(super) fn give_back(conn: &Connection, unused: &[(String, String, u64)]) {
    for (scope, day, left) in unused {
        let left = i64::try_from(*left).unwrap_or(i64::MAX);
        if let Err(e) = conn.execute(
            "UPDATE budget_usage SET calls = max(calls - ?3, 0) WHERE scope = ?1 AND day = ?2",
            params![scope, day, left],
        ) {
            tracing::warn!(scope = %scope, error = %e, "unused budget reservation not returned");
        }
    }
}

/// The calls reserved of every scope on `day`.
pub(super) fn spent(conn: &Connection, day: &str) -> StoreResult<Vec<Spent>> {
    let mut st = conn
        .prepare_cached("SELECT scope, calls FROM budget_usage WHERE day = ?1 ORDER BY scope")
        .db("prepare budget counters")?;
    let rows = st
        .query_map([day], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .db("read budget counters")?;
    rows.map(|r| {
        let (scope, calls) = r.db("read budget counter")?;
        Ok(Spent {
            scope,
            calls: u64::try_from(calls).unwrap_or(0),
        })
    })
    .collect()
}

/// Claim (or give back) an alert; true when this call claimed it.
pub(super) fn claim(conn: &Connection, a: &Alert, claim: bool) -> StoreResult<bool> {
    if !claim {
        conn.execute(
            "DELETE FROM budget_alerts WHERE scope = ?1 AND day = ?2 AND percent = ?3",
            params![a.scope, a.day, a.percent],
        )
        .db("give back a budget alert")?;
        return Ok(false);
    }
    let n = conn
        .execute(
            "INSERT INTO budget_alerts (scope, day, percent, at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            params![a.scope, a.day, a.percent, ts(&chrono::Utc::now())],
        )
        .db("claim a budget alert")?;
    Ok(n == 1)
}
