//! The SQL of the shared daily budget in the PostgreSQL store (`store::budget` owns the
//! rules): the budget in `meta`, each scope's daily counter reserved from in a transaction
//! holding its row `FOR UPDATE` (so instances never reserve past the budget between them),
//! and the alert claims (one instance wins each). Must not decide what a key spends from.

use deadpool_postgres::GenericClient;

use super::DbResult;
use super::rows::get;
use crate::store::budget::{self, Alert, Budget, META_KEY, Spent};
use crate::store::rules::ts;
use crate::store::{StoreError, StoreResult};

/// The budget the schema holds.
pub(super) async fn load<C: GenericClient>(c: &C) -> StoreResult<Option<Budget>> {
    let row = c
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&META_KEY])
        .await
        .db("read the budget")?;
    row.map(|r| {
        let v: String = get(&r, 0, "value")?;
        serde_json::from_str(&v)
            .map_err(|e| StoreError::Backend(format!("the stored budget is unreadable: {e}")))
    })
    .transpose()
}

/// Write (or remove) the budget; returns the one it replaced.
pub(super) async fn save<C: GenericClient>(
    c: &C,
    b: Option<&Budget>,
) -> StoreResult<Option<Budget>> {
    let before = load(c).await?;
    match b {
        Some(b) => {
            let v = serde_json::to_string(b).map_err(|e| StoreError::Invalid(e.to_string()))?;
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&META_KEY, &v],
            )
            .await
            .db("write the budget")?;
        }
        None => {
            c.execute("DELETE FROM meta WHERE key = $1", &[&META_KEY])
                .await
                .db("remove the budget")?;
        }
    }
    Ok(before)
}

/// Reserve up to `block` calls of `scope`'s `daily` budget on `day`; returns how many were
/// granted (0: spent).
pub(super) async fn reserve(
    c: &mut deadpool_postgres::Object,
    scope: &str,
    day: &str,
    daily: u64,
    block: u64,
) -> StoreResult<u64> {
    let tx = c.transaction().await.db("begin budget reservation")?;
    tx.execute(
        "INSERT INTO budget_usage (scope, day, calls) VALUES ($1, $2, 0) \
         ON CONFLICT (scope, day) DO NOTHING",
        &[&scope, &day],
    )
    .await
    .db("open budget counter")?;
    let row = tx
        .query_one(
            "SELECT calls FROM budget_usage WHERE scope = $1 AND day = $2 FOR UPDATE",
            &[&scope, &day],
        )
        .await
        .db("read budget counter")?;
    let used: i64 = get(&row, 0, "calls")?;
    let grant = budget::grant(daily, u64::try_from(used).unwrap_or(0), block);
    if grant > 0 {
        let add = i64::try_from(grant).unwrap_or(i64::MAX);
        tx.execute(
            "UPDATE budget_usage SET calls = calls + $3 WHERE scope = $1 AND day = $2",
            &[&scope, &day, &add],
        )
        .await
        .db("reserve budget calls")?;
    }
    tx.commit().await.db("commit budget reservation")?;
    Ok(grant)
}

/// Give reserved but unused calls back (an instance stopping).
pub(super) async fn give_back<C: GenericClient>(
    c: &C,
    unused: &[(String, String, u64)],
) -> StoreResult<()> {
    for (scope, day, left) in unused {
        let left = i64::try_from(*left).unwrap_or(i64::MAX);
        c.execute(
            "UPDATE budget_usage SET calls = GREATEST(calls - $3, 0) WHERE scope = $1 AND day = $2",
            &[scope, day, &left],
        )
        .await
        .db("return unused budget reservations")?;
    }
    Ok(())
}

/// The calls reserved of every scope on `day`.
pub(super) async fn spent<C: GenericClient>(c: &C, day: &str) -> StoreResult<Vec<Spent>> {
    let rows = c
        .query(
            "SELECT scope, calls FROM budget_usage WHERE day = $1 ORDER BY scope",
            &[&day],
        )
        .await
        .db("read budget counters")?;
    rows.iter()
        .map(|r| {
            let calls: i64 = get(r, 1, "calls")?;
            Ok(Spent {
                scope: get(r, 0, "scope")?,
                calls: u64::try_from(calls).unwrap_or(0),
            })
        })
        .collect()
}

/// Claim (or give back) an alert; true when this call claimed it.
pub(super) async fn claim<C: GenericClient>(c: &C, a: &Alert, claim: bool) -> StoreResult<bool> {
    let percent = i32::from(a.percent);
    if !claim {
        c.execute(
            "DELETE FROM budget_alerts WHERE scope = $1 AND day = $2 AND percent = $3",
            &[&a.scope, &a.day, &percent],
        )
        .await
        .db("give back a budget alert")?;
        return Ok(false);
    }
    let n = c
        .execute(
            "INSERT INTO budget_alerts (scope, day, percent, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&a.scope, &a.day, &percent, &ts(&chrono::Utc::now())],
        )
        .await
        .db("claim a budget alert")?;
    Ok(n == 1)
}
