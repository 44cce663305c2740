//! The `postgres-roles` store against a throwaway PostgreSQL cluster that only accepts
//! SCRAM-SHA-256 (initdb into a temp dir, a free port, stopped afterwards; the machine's
//! shared server trusts every local connection, so it could not show a password is
//! checked). Real client logins prove: the delivered secret logs in, a wrong one is
//! refused, the old one stops at rotation (no overlap), disable/revoke/expiry refuse it,
//! the memberships match the scopes through the grants table; the server holds a verifier,
//! never the secret; roles without keyward's marker are never touched; the kit passes.

mod adapters_common;
mod needs;

use adapters_common::{actor, new_key, rotation};

use std::collections::BTreeMap;

use adapters_common::ScramCluster;
use chrono::{Duration, Utc};
use keyward::secret::{self, Secret};
use keyward::store::pg_roles::{MARKER, PgRolesOptions, PgRolesStore};
use keyward::store::{KeyStatus, KeyWrite, ListFilter, Store, list_all};

fn store(c: &ScramCluster) -> PgRolesStore {
    PgRolesStore::new(
        "warehouse",
        PgRolesOptions {
            url: c.admin_url(),
            role_prefix: "kw_".into(),
            grants: BTreeMap::from([
                ("bibs:read".to_string(), vec!["bibs_reader".to_string()]),
                ("users:read".to_string(), vec!["users_reader".to_string()]),
            ]),
            timeout: std::time::Duration::from_secs(10),
        },
    )
    .expect("store settings")
}

/// Group roles and tables the grants point at.
async fn schema(c: &ScramCluster) {
    c.admin()
        .await
        .batch_execute(
            "CREATE ROLE bibs_reader NOLOGIN; CREATE ROLE users_reader NOLOGIN;
             CREATE TABLE bibs (id int); INSERT INTO bibs VALUES (1), (2);
             CREATE TABLE users_t (id int);
             GRANT SELECT ON bibs TO bibs_reader; GRANT SELECT ON users_t TO users_reader;",
        )
        .await
        .expect("set up group roles");
}

async fn can_login(c: &ScramCluster, role: &str, s: &Secret) -> Result<(), String> {
    c.login(role, s.expose()).await.map(|_| ()).map_err(|e| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    })
}

async fn memberships(c: &ScramCluster, role: &str) -> Vec<String> {
    let rows = c
        .admin()
        .await
        .query(
            "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
             JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 ORDER BY 1",
            &[&role],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn postgres_roles_logins_follow_the_key_through_its_life() {
    let Some(c) = ScramCluster::start() else {
        return;
    };
    schema(&c).await;
    let s = store(&c);
    let role = s.role_for("reports");
    let mut transcript = Vec::new();

    // create: the delivered secret logs in; the grants follow the scopes
    let (nk, first) = new_key(
        &s,
        "production",
        "reports",
        &["bibs:read"],
        Duration::days(30),
    );
    let k = s
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    can_login(&c, &role, &first)
        .await
        .expect("the delivered secret logs in");
    let wrong = secret::generate("production", &k.id);
    let refused = can_login(&c, &role, &wrong)
        .await
        .expect_err("a wrong secret");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    let client = c.login(&role, first.expose()).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM bibs", &[])
        .await
        .expect("bibs:read reads bibs")
        .get(0);
    assert_eq!(n, 2);
    let denied = client
        .query_one("SELECT count(*) FROM users_t", &[])
        .await
        .expect_err("no users:read");
    assert!(
        denied
            .as_db_error()
            .is_some_and(|d| d.code().code() == "42501"),
        "{denied}"
    );
    assert_eq!(memberships(&c, &role).await, ["bibs_reader"]);
    transcript.push(format!("create {role}: login with delivered secret OK, wrong secret refused ({refused}), SELECT bibs ok, SELECT users_t permission denied, member of [bibs_reader]"));

    // the server holds a SCRAM verifier and keyward's marker, never the secret
    let admin = c.admin().await;
    let row = admin
        .query_one(
            "SELECT rolpassword, shobj_description(oid, 'pg_authid') FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    let (verifier, comment): (String, String) = (row.get(0), row.get(1));
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "a verifier");
    assert!(comment.starts_with(MARKER));
    for text in [&verifier, &comment] {
        assert!(!text.contains(first.expose()) && !text.contains(&first.hash().0));
    }
    transcript.push("pg_authid: rolpassword SCRAM-SHA-256$4096:..., COMMENT keyward:v1 {...}; no secret, no sha256 of it".into());

    // update the scopes in place: memberships follow
    let patch = keyward::store::KeyPatch {
        scopes: Some(vec!["bibs:read".into(), "users:read".into()]),
        ..Default::default()
    };
    let k = s
        .update(KeyWrite::new(&k.id, k.version, &actor()), patch)
        .await
        .expect("update scopes");
    assert_eq!(
        memberships(&c, &role).await,
        ["bibs_reader", "users_reader"]
    );

    // rotate: no overlap, the old secret stops at once
    let (rot, sec2) = rotation(&s, "production", &k.id, Duration::days(7));
    let k = s
        .rotate(KeyWrite::new(&k.id, k.version, &actor()), rot)
        .await
        .expect("rotate");
    assert_eq!(k.previous_valid_until, None, "no overlap");
    can_login(&c, &role, &sec2)
        .await
        .expect("the new secret logs in");
    assert!(
        can_login(&c, &role, &first).await.is_err(),
        "the old one stopped at once"
    );
    transcript
        .push("rotate: login with new OK, old refused at once (rotation overlap: none)".into());

    // disable / enable / revoke
    let d = s
        .set_status(
            KeyWrite::new(&k.id, k.version, &actor()),
            KeyStatus::Disabled,
        )
        .await
        .expect("disable");
    let why = can_login(&c, &role, &sec2).await.expect_err("disabled");
    assert!(why.contains("not permitted to log in"), "{why}");
    assert!(
        memberships(&c, &role).await.is_empty(),
        "a disabled role is in no group"
    );
    let e = s
        .set_status(KeyWrite::new(&k.id, d.version, &actor()), KeyStatus::Active)
        .await
        .expect("enable");
    can_login(&c, &role, &sec2).await.expect("enabled again");
    assert_eq!(
        memberships(&c, &role).await,
        ["bibs_reader", "users_reader"]
    );
    let r = s
        .set_status(
            KeyWrite::new(&k.id, e.version, &actor()),
            KeyStatus::Revoked,
        )
        .await
        .expect("revoke");
    assert_eq!(r.status, KeyStatus::Revoked);
    assert!(
        can_login(&c, &role, &sec2).await.is_err(),
        "revoked: refused"
    );
    assert!(memberships(&c, &role).await.is_empty());
    transcript.push(format!("disable: refused ({why}), no memberships; enable: login OK; revoke: refused, no memberships, no password"));

    // expiry: VALID UNTIL
    let (nk, short) = new_key(
        &s,
        "production",
        "short",
        &["bibs:read"],
        Duration::seconds(2),
    );
    s.create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create short-lived");
    let short_role = s.role_for("short");
    can_login(&c, &short_role, &short)
        .await
        .expect("before expiry");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(
        can_login(&c, &short_role, &short).await.is_err(),
        "after VALID UNTIL: refused"
    );
    assert!(!s.verify(short.expose(), Utc::now()).await.unwrap().valid);
    transcript.push("expiry (native, VALID UNTIL): login OK before, refused after".into());
    println!("{}", transcript.join("\n"));

    // roles without the marker are listed as unmanaged and never touched
    admin.batch_execute("CREATE ROLE kw_legacy LOGIN PASSWORD 'legacy-password'; GRANT bibs_reader TO kw_legacy").await.unwrap();
    let before: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'kw_legacy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let all = list_all(&s, &ListFilter::default()).await.unwrap();
    let legacy = all.iter().find(|k| k.name == "legacy").expect("listed");
    assert!(!legacy.is_managed());
    assert!(
        s.set_status(
            KeyWrite::new(&legacy.id, legacy.version, &actor()),
            KeyStatus::Revoked
        )
        .await
        .is_err()
    );
    assert!(
        s.delete(KeyWrite::new(&legacy.id, legacy.version, &actor()))
            .await
            .is_err()
    );
    let (nk, _) = new_key(
        &s,
        "production",
        "legacy",
        &["bibs:read"],
        Duration::days(1),
    );
    let e = s
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect_err("the role exists unmanaged");
    assert!(e.to_string().contains("not managed by keyward"), "{e}");
    let after: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'kw_legacy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    assert_eq!(memberships(&c, "kw_legacy").await, ["bibs_reader"]);
}

#[tokio::test]
async fn postgres_roles_passes_the_store_check() {
    let Some(c) = ScramCluster::start() else {
        return;
    };
    schema(&c).await;
    let s = store(&c);
    let keys = std::env::var("KEYWARD_TEST_PAGING_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let report = keyward::store::check::run(
        &s,
        &adapters_common::kit("production", &["bibs:read"], keys),
    )
    .await;
    adapters_common::assert_passed(&report);
    let left = c
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kw_kwcheck%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>(0), 0, "the kit removed its roles");
}
