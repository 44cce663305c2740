//! Idempotency records for `POST /v1/keys` with an `Idempotency-Key` header: the first
//! request claims the header value (with a fingerprint of its body and the key id it
//! creates), then stores its answer; a retry with the same header gets that answer back,
//! never a second key. Records live in the database the server serves (a table beside the
//! store's own), so several server instances on one database share them. Must not hold a
//! secret: bodies stored are key records and error messages only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

/// How long an answer is kept for retries.
pub const RETAIN: chrono::Duration = chrono::Duration::hours(24);
/// A claim older than this whose request never finished (its server died) may be taken over.
pub const STALE_CLAIM: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the header value: do the create, then `complete` or `release`.
    Claimed,
    /// Another request with this header finished: replay its answer.
    Done {
        fingerprint: String,
        status: u16,
        body: String,
    },
    /// Another request with this header is still running (or died), since `since`.
    Pending {
        fingerprint: String,
        key_id: String,
        since: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("idempotency records: {0}")]
pub struct IdemError(pub String);

/// Where idempotency records are kept.
#[async_trait]
pub trait IdempotencyLog: Send + Sync {
    /// Claim `idem` for a request with `fingerprint` creating `key_id`, or report who has it.
    async fn claim(&self, idem: &str, fingerprint: &str, key_id: &str) -> Result<Claim, IdemError>;
    /// Take over a stale pending claim; true when this caller now owns it.
    async fn take_over(&self, idem: &str, seen_since: DateTime<Utc>) -> Result<bool, IdemError>;
    /// Store the answer of a claimed request.
    async fn complete(&self, idem: &str, status: u16, body: &str) -> Result<(), IdemError>;
    /// Drop a claim whose request failed in a way a retry may fix.
    async fn release(&self, idem: &str) -> Result<(), IdemError>;
}

/// Records in a table of the served SQLite database.
pub struct SqliteIdempotency {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS serve_idempotency (
    idem_key    TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    status      INTEGER,
    body        TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS serve_idempotency_created ON serve_idempotency (created_at);
";

fn db<T>(r: rusqlite::Result<T>, what: &str) -> Result<T, IdemError> {
    r.map_err(|e| IdemError(format!("{what}: {e}")))
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl SqliteIdempotency {
    /// Open the records table in the SQLite file at `path` (created if missing).
    pub fn open(path: &Path) -> Result<SqliteIdempotency, IdemError> {
        let conn = db(Connection::open(path), "open database")?;
        db(
            conn.busy_timeout(std::time::Duration::from_secs(5)),
            "busy timeout",
        )?;
        db(conn.execute_batch(SCHEMA), "create table")?;
        Ok(SqliteIdempotency {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, IdemError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, IdemError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| IdemError(format!("task failed: {e}")))?
    }
}

impl std::fmt::Debug for SqliteIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteIdempotency")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyLog for SqliteIdempotency {
    async fn claim(&self, idem: &str, fingerprint: &str, key_id: &str) -> Result<Claim, IdemError> {
        let (idem, fingerprint, key_id) =
            (idem.to_owned(), fingerprint.to_owned(), key_id.to_owned());
        self.run(move |conn| {
            let tx = db(
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate),
                "begin",
            )?;
            let now = Utc::now();
            let oldest = now - RETAIN;
            db(
                tx.execute(
                    "DELETE FROM serve_idempotency WHERE created_at < ?1",
                    [ts(&oldest)],
                ),
                "prune",
            )?;
            let found = db(
                tx.query_row(
                    "SELECT fingerprint, key_id, state, status, body, updated_at \
                     FROM serve_idempotency WHERE idem_key = ?1",
                    [&idem],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional(),
                "read record",
            )?;
            let claim = match found {
                Some((fp, _, state, Some(status), Some(body), _)) if state == "done" => {
                    Claim::Done {
                        fingerprint: fp,
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    }
                }
                Some((fp, kid, _, _, _, since)) => Claim::Pending {
                    fingerprint: fp,
                    key_id: kid,
                    since: DateTime::parse_from_rfc3339(&since)
                        .map(|d| d.with_timezone(&Utc))
                        .unwrap_or(now),
                },
                None => {
                    db(
                        tx.execute(
                            "INSERT INTO serve_idempotency \
                             (idem_key, fingerprint, key_id, state, created_at, updated_at) \
                             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                            params![idem, fingerprint, key_id, ts(&now)],
                        ),
                        "write claim",
                    )?;
                    Claim::Claimed
                }
            };
            db(tx.commit(), "commit")?;
            Ok(claim)
        })
        .await
    }

    async fn take_over(&self, idem: &str, seen_since: DateTime<Utc>) -> Result<bool, IdemError> {
        let idem = idem.to_owned();
        self.run(move |conn| {
            let n = db(
                conn.execute(
                    "UPDATE serve_idempotency SET updated_at = ?1 \
                     WHERE idem_key = ?2 AND state = 'pending' AND updated_at = ?3",
                    params![ts(&Utc::now()), idem, ts(&seen_since)],
                ),
                "take over claim",
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn complete(&self, idem: &str, status: u16, body: &str) -> Result<(), IdemError> {
        let (idem, body) = (idem.to_owned(), body.to_owned());
        self.run(move |conn| {
            db(
                conn.execute(
                    "UPDATE serve_idempotency SET state = 'done', status = ?1, body = ?2, \
                     updated_at = ?3 WHERE idem_key = ?4",
                    params![i64::from(status), body, ts(&Utc::now()), idem],
                ),
                "store answer",
            )?;
            Ok(())
        })
        .await
    }

    async fn release(&self, idem: &str) -> Result<(), IdemError> {
        let idem = idem.to_owned();
        self.run(move |conn| {
            db(
                conn.execute(
                    "DELETE FROM serve_idempotency WHERE idem_key = ?1 AND state = 'pending'",
                    [idem],
                ),
                "release claim",
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_complete_replay_across_two_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let a = SqliteIdempotency::open(&path).unwrap();
        let b = SqliteIdempotency::open(&path).unwrap();
        assert_eq!(a.claim("k1", "fp", "id1").await.unwrap(), Claim::Claimed);
        assert!(matches!(
            b.claim("k1", "fp", "id1").await.unwrap(),
            Claim::Pending { .. }
        ));
        a.complete("k1", 201, "{}").await.unwrap();
        assert_eq!(
            b.claim("k1", "fp", "id1").await.unwrap(),
            Claim::Done {
                fingerprint: "fp".into(),
                status: 201,
                body: "{}".into()
            }
        );
        assert_eq!(b.claim("k2", "fp", "id2").await.unwrap(), Claim::Claimed);
        b.release("k2").await.unwrap();
        assert_eq!(a.claim("k2", "fp", "id2").await.unwrap(), Claim::Claimed);
        let Claim::Pending { since, .. } = b.claim("k2", "fp", "id2").await.unwrap() else {
            panic!("expected pending");
        };
        assert!(b.take_over("k2", since).await.unwrap());
        assert!(
            !a.take_over("k2", since).await.unwrap(),
            "only one takes over"
        );
    }
}
