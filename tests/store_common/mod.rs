//! Shared helpers for the store tests: key records, and PostgreSQL test schemas (a fresh
//! schema per test on the database named by `KEYWARD_TEST_POSTGRES_URL`, dropped when the
//! guard goes out of scope, also when the test fails), and the search of a database's raw
//! contents for secrets.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use keyward::secret::{self, Secret};
use keyward::store::postgres::{PostgresOptions, PostgresStore};
use keyward::store::{Actor, KeyStatus, KeyWrite, MANAGED_BY, NewKey, Rotate, Store};
use rand::RngCore;

pub fn actor() -> Actor {
    Actor {
        who: "alice".into(),
        commit: Some("0123abcd".into()),
    }
}

/// A fixed instant with sub-second precision, to check timestamps round-trip exactly.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26)
        .single()
        .expect("valid date")
        + Duration::nanoseconds(535_897_932)
}

/// A moment when keys from `new_key` are valid.
pub fn valid_now() -> DateTime<Utc> {
    t0() + Duration::days(1)
}

pub fn new_key(name: &str) -> (NewKey, Secret) {
    let id = secret::new_key_id();
    let s = secret::generate("production", &id);
    let key = NewKey {
        id,
        name: name.into(),
        environment: "production".into(),
        owner: "jdoe".into(),
        purpose: Some("ILLiad \"Alma Barcode Lookup\" add-on".into()),
        scopes: vec!["users:read".into(), "bibs:read".into(), "users:read".into()],
        labels: BTreeMap::from([
            ("ticket".into(), "LSIS-1234".into()),
            ("team".into(), "ill".into()),
        ]),
        status: KeyStatus::Active,
        issued_at: t0(),
        expires_at: Some(t0() + Duration::days(180)),
        lifetime: Some("180d".into()),
        generation: 1,
        spec_generation: 3,
        recipients: BTreeMap::from([("jdoe".into(), "age1fingerprint".into())]),
        quota_per_day: None,
        protected: false,
        managed_by: Some(MANAGED_BY.into()),
        applied_digest: None,
        secret_hash: s.hash(),
    };
    (key, s)
}

pub fn rotation(id: &str, until: Option<DateTime<Utc>>) -> (Rotate, Secret) {
    let s = secret::generate("production", id);
    let r = Rotate {
        secret_hash: s.hash(),
        previous_valid_until: until,
        issued_at: valid_now(),
        expires_at: Some(valid_now() + Duration::days(90)),
        generation: 2,
        spec_generation: 4,
        recipients: BTreeMap::from([
            ("jdoe".into(), "age1new".into()),
            ("svc".into(), "age1svc".into()),
        ]),
    };
    (r, s)
}

/// Whether `s` verifies on `store` at `valid_now()` (a store error fails the test).
pub async fn verifies<S: Store + ?Sized>(store: &S, s: &Secret) -> bool {
    store
        .verify(s.expose(), valid_now())
        .await
        .expect("verify")
        .valid
}

/// Creates `n` keys and rotates each with a week's grace, checking that both secrets of
/// each verify; returns every secret (old and new) to search the database for.
pub async fn keys_with_rotated_secrets(store: &dyn Store, n: usize) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for i in 0..n {
        let (nk, s) = new_key(&format!("k{i}"));
        let k = store
            .create(nk, keyward::store::Writer::new(&actor()))
            .await
            .expect("create");
        let (rot, new) = rotation(&k.id, Some(valid_now() + Duration::days(7)));
        store
            .rotate(KeyWrite::new(&k.id, 1, &actor()), rot)
            .await
            .expect("rotate");
        for s in [&s, &new] {
            assert!(verifies(store, s).await);
        }
        secrets.push(s);
        secrets.push(new);
    }
    secrets
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of a SQLite database's files: the database, its write-ahead log and its
/// shared-memory index (those that exist).
pub fn sqlite_files(db: &Path) -> Vec<Vec<u8>> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::fs::read(PathBuf::from(p)).ok()
        })
        .collect()
}

/// Panics if any of `contents` holds one of `secrets`, its hash (hex, either case) or the
/// raw digest. `when` names the moment in the message.
pub fn assert_no_secret_in(contents: &[Vec<u8>], secrets: &[Secret], when: &str) {
    assert!(!contents.is_empty(), "nothing to search ({when})");
    for s in secrets {
        let hex = s.hash().0;
        let raw = hex::decode(&hex).expect("hex");
        for c in contents {
            assert!(
                !contains(c, s.expose().as_bytes()),
                "secret in the database ({when})"
            );
            assert!(
                !contains(c, hex.as_bytes()),
                "secret hash in the database ({when})"
            );
            assert!(
                !contains(c, hex.to_uppercase().as_bytes()),
                "secret hash in the database ({when})"
            );
            assert!(
                !contains(c, &raw),
                "raw secret digest in the database ({when})"
            );
        }
    }
}

/// The PostgreSQL URL, or None after the visible SKIP line of `needs` (a failure under
/// CI=true).
#[track_caller]
pub fn pg_url() -> Option<String> {
    crate::needs::postgres_url()
}

/// A fresh PostgreSQL schema with a pepper file in a temporary directory; the schema is
/// dropped on drop.
pub struct PgSchema {
    pub url: String,
    pub schema: String,
    pub dir: tempfile::TempDir,
}

impl PgSchema {
    pub fn new(url: &str) -> PgSchema {
        let mut b = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut b);
        PgSchema {
            url: url.to_owned(),
            schema: format!("kwtest_{}", hex::encode(b)),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn pepper_file(&self) -> PathBuf {
        self.dir.path().join("store.pepper")
    }

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            url: self.url.clone(),
            schema: self.schema.clone(),
            pepper_file: self.pepper_file(),
            pool_size: 8,
            key_cache: true,
        }
    }

    /// The `--database` form of this schema (keyward's URL parameters included).
    pub fn database_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}schema={}&pepper_file={}",
            self.url,
            self.schema,
            self.pepper_file().display()
        )
    }

    pub async fn connect(&self, name: &str) -> PostgresStore {
        PostgresStore::connect_with(name, self.options())
            .await
            .expect("connect to PostgreSQL")
    }

    /// A plain driver connection with `search_path` set to this schema.
    pub async fn raw(&self) -> tokio_postgres::Client {
        raw_connect(&self.url, Some(&self.schema)).await
    }
}

pub async fn raw_connect(url: &str, schema: Option<&str>) -> tokio_postgres::Client {
    let mut cfg: tokio_postgres::Config = url.parse().expect("test URL");
    if let Some(s) = schema {
        cfg.options(format!("-c search_path={s}"));
    }
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let client = raw_connect(&url, None).await;
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            });
        })
        .join();
    }
}
