//! Idempotency records of `keyward serve` in PostgreSQL: the `serve_idempotency` table of the
//! store's schema (created by the store's migrations), shared by every server instance on
//! that schema. Same semantics as `SqliteIdempotency`; a claim is one `INSERT ... ON CONFLICT
//! DO NOTHING`, so two instances claiming one header value at once get one `Claimed` and
//! one `Pending`. Must not hold a secret: bodies stored are key records and error messages.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::idempotency::{Claim, IdemError, IdempotencyLog, RETAIN};
use crate::store::postgres::PostgresStore;

/// Records in the PostgreSQL schema of the served store.
pub struct PostgresIdempotency {
    pool: Pool,
}

impl std::fmt::Debug for PostgresIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresIdempotency")
            .finish_non_exhaustive()
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn db<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> Result<T, IdemError> {
    use std::error::Error as _;
    r.map_err(|e| match e.source() {
        Some(cause) => IdemError(format!("{what}: {e}: {cause}")),
        None => IdemError(format!("{what}: {e}")),
    })
}

impl PostgresIdempotency {
    /// Use the pool (and so the schema) of `store`.
    pub fn new(store: &PostgresStore) -> PostgresIdempotency {
        PostgresIdempotency {
            pool: store.pool().clone(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, IdemError> {
        self.pool
            .get()
            .await
            .map_err(|e| IdemError(format!("cannot reach PostgreSQL: {e}")))
    }
}

#[async_trait]
impl IdempotencyLog for PostgresIdempotency {
    async fn claim(&self, idem: &str, fingerprint: &str, key_id: &str) -> Result<Claim, IdemError> {
        let mut c = self.client().await?;
        let tx = db(c.transaction().await, "begin")?;
        let now = Utc::now();
        db(
            tx.execute(
                "DELETE FROM serve_idempotency WHERE created_at < $1",
                &[&ts(&(now - RETAIN))],
            )
            .await,
            "prune",
        )?;
        let inserted = db(
            tx.query_opt(
                "INSERT INTO serve_idempotency \
                 (idem_key, fingerprint, key_id, state, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $4) \
                 ON CONFLICT (idem_key) DO NOTHING RETURNING 1",
                &[&idem, &fingerprint, &key_id, &ts(&now)],
            )
            .await,
            "write claim",
        )?;
        let claim = if inserted.is_some() {
            Claim::Claimed
        } else {
            let row = db(
                tx.query_one(
                    "SELECT fingerprint, key_id, state, status, body, updated_at \
                     FROM serve_idempotency WHERE idem_key = $1",
                    &[&idem],
                )
                .await,
                "read record",
            )?;
            let get = |e: tokio_postgres::Error| IdemError(format!("read record: {e}"));
            let fp: String = row.try_get(0).map_err(get)?;
            let kid: String = row.try_get(1).map_err(get)?;
            let state: String = row.try_get(2).map_err(get)?;
            let status: Option<i32> = row.try_get(3).map_err(get)?;
            let body: Option<String> = row.try_get(4).map_err(get)?;
            let since: String = row.try_get(5).map_err(get)?;
            match (state.as_str(), status, body) {
                ("done", Some(status), Some(body)) => Claim::Done {
                    fingerprint: fp,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                },
                _ => Claim::Pending {
                    fingerprint: fp,
                    key_id: kid,
                    since: DateTime::parse_from_rfc3339(&since)
                        .map(|d| d.with_timezone(&Utc))
                        .unwrap_or(now),
                },
            }
        };
        db(tx.commit().await, "commit")?;
        Ok(claim)
    }

    async fn take_over(&self, idem: &str, seen_since: DateTime<Utc>) -> Result<bool, IdemError> {
        let c = self.client().await?;
        let n = db(
            c.execute(
                "UPDATE serve_idempotency SET updated_at = $1 \
                 WHERE idem_key = $2 AND state = 'pending' AND updated_at = $3",
                &[&ts(&Utc::now()), &idem, &ts(&seen_since)],
            )
            .await,
            "take over claim",
        )?;
        Ok(n == 1)
    }

    async fn complete(&self, idem: &str, status: u16, body: &str) -> Result<(), IdemError> {
        let c = self.client().await?;
        db(
            c.execute(
                "UPDATE serve_idempotency SET state = 'done', status = $1, body = $2, \
                 updated_at = $3 WHERE idem_key = $4",
                &[&i32::from(status), &body, &ts(&Utc::now()), &idem],
            )
            .await,
            "store answer",
        )?;
        Ok(())
    }

    async fn release(&self, idem: &str) -> Result<(), IdemError> {
        let c = self.client().await?;
        db(
            c.execute(
                "DELETE FROM serve_idempotency WHERE idem_key = $1 AND state = 'pending'",
                &[&idem],
            )
            .await,
            "release claim",
        )?;
        Ok(())
    }
}
