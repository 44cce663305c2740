//! The `redis-acl` store against the machine's real Redis (`KEYWARD_TEST_REDIS_URL`,
//! default 127.0.0.1:6379), each test under its own user prefix and cleaning up: the
//! conformance kit passes, and real `AUTH` logins follow the key through create, rotation
//! with grace, disable, enable, revoke and emulated expiry; the grants table becomes ACL
//! rules; `ACL GETUSER` never shows a plaintext secret; ACL users keyward did not make are
//! listed as unmanaged and never touched.

mod adapters_common;
mod needs;

use adapters_common::{actor, new_key, rotation};

use std::collections::BTreeMap;

use adapters_common::{RedisCleanup, redis_auth, redis_url, resp, resp_all, unique};
use chrono::{Duration, Utc};
use keyward::secret::{self, Secret};
use keyward::store::redis_acl::{RedisAclOptions, RedisAclStore};
use keyward::store::{KeyStatus, KeyWrite, ListFilter, Store, list_all};

fn store(url: &str, prefix: &str) -> RedisAclStore {
    RedisAclStore::new(
        "cache",
        RedisAclOptions {
            url: url.into(),
            user_prefix: prefix.into(),
            grants: BTreeMap::from([
                (
                    "bibs:read".to_string(),
                    vec!["+@read".to_string(), "~bibs:*".to_string()],
                ),
                (
                    "users:read".to_string(),
                    vec!["+get".to_string(), "~users:*".to_string()],
                ),
            ]),
            timeout: std::time::Duration::from_secs(5),
        },
    )
    .expect("store settings")
}

fn addr(url: &str) -> String {
    url.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

/// `AUTH` as `user`: true when Redis says OK.
fn logs_in(addr: &str, user: &str, s: &Secret) -> bool {
    redis_auth(addr, user, s.expose()).0 == "+OK"
}

#[tokio::test]
async fn redis_acl_passes_the_store_check() {
    let Some(url) = redis_url() else {
        return;
    };
    let prefix = unique("kwt-");
    let _cleanup = RedisCleanup {
        addr: addr(&url),
        prefix: prefix.clone(),
    };
    let s = store(&url, &prefix);
    let report =
        keyward::store::check::run(&s, &adapters_common::kit("sandbox", &["bibs:read"], 2000))
            .await;
    adapters_common::assert_passed(&report);
    assert_eq!(report.checks.len(), 13);
}

#[tokio::test]
async fn redis_logins_follow_the_key_through_its_life() {
    let Some(url) = redis_url() else {
        return;
    };
    let a = addr(&url);
    let prefix = unique("kwt-");
    let _cleanup = RedisCleanup {
        addr: a.clone(),
        prefix: prefix.clone(),
    };
    let s = store(&url, &prefix);
    let user = s.user_for("reader");
    let mut transcript = Vec::new();

    // create: the delivered secret logs in, with exactly the granted rules
    let (nk, first) = new_key(&s, "sandbox", "reader", &["bibs:read"], Duration::days(30));
    let k = s
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create");
    assert!(logs_in(&a, &user, &first), "the delivered secret logs in");
    let wrong = secret::generate("sandbox", &k.id);
    assert!(!logs_in(&a, &user, &wrong), "a wrong secret is refused");
    let (_, mut c) = redis_auth(&a, &user, first.expose());
    assert!(
        resp(&mut c, &["GET", "bibs:1"]).starts_with('$'),
        "bibs:read may read bibs:*"
    );
    assert!(
        resp(&mut c, &["SET", "bibs:1", "x"]).starts_with("-NOPERM"),
        "but not write"
    );
    assert!(
        resp(&mut c, &["GET", "users:1"]).starts_with("-NOPERM"),
        "nor read users:*"
    );
    transcript.push(format!("create {user}: AUTH with delivered secret OK, wrong secret WRONGPASS, GET bibs:1 ok, SET bibs:1 NOPERM, GET users:1 NOPERM"));

    // ACL GETUSER / ACL LIST: the SHA-256 only, never the secret
    let getuser = resp_all(&a, &["ACL", "GETUSER", &user]);
    let list = resp_all(&a, &["ACL", "LIST"]);
    for raw in [&getuser, &list] {
        assert!(
            !raw.windows(first.expose().len())
                .any(|w| w == first.expose().as_bytes())
        );
    }
    assert!(
        String::from_utf8_lossy(&getuser).contains(&first.hash().0),
        "the password is its sha256"
    );
    transcript.push("ACL GETUSER/ACL LIST: the sha256 of the secret only, no plaintext".into());

    // rotate with a short grace: both log in; when the grace is over and enforce ran, only the new
    let (rot, second) = rotation(&s, "sandbox", &k.id, Duration::seconds(3));
    let r = s
        .rotate(KeyWrite::new(&k.id, k.version, &actor()), rot)
        .await
        .expect("rotate");
    assert!(
        logs_in(&a, &user, &first) && logs_in(&a, &user, &second),
        "both during the grace"
    );
    assert!(s.verify(first.expose(), Utc::now()).await.unwrap().valid);
    transcript.push("rotate (grace 3s): AUTH with old OK, AUTH with new OK".into());
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert!(
        !s.verify(first.expose(), Utc::now()).await.unwrap().valid,
        "keyward's verify: grace over"
    );
    let done = s.enforce(Utc::now()).await.expect("enforce");
    assert!(
        done.iter()
            .any(|l| l.contains(&user) && l.contains("grace")),
        "{done:?}"
    );
    assert!(
        !logs_in(&a, &user, &first),
        "the old secret stops after the grace"
    );
    assert!(logs_in(&a, &user, &second), "the new one works");
    transcript.push("grace over + enforce: AUTH with old WRONGPASS, new OK".into());

    // disable / enable / revoke
    let d = s
        .set_status(
            KeyWrite::new(&k.id, r.version, &actor()),
            KeyStatus::Disabled,
        )
        .await
        .expect("disable");
    assert!(!logs_in(&a, &user, &second), "disabled: off");
    let e = s
        .set_status(KeyWrite::new(&k.id, d.version, &actor()), KeyStatus::Active)
        .await
        .expect("enable");
    assert!(logs_in(&a, &user, &second), "enabled again");
    let v = s
        .set_status(
            KeyWrite::new(&k.id, e.version, &actor()),
            KeyStatus::Revoked,
        )
        .await
        .expect("revoke");
    assert_eq!(v.status, KeyStatus::Revoked);
    assert!(!logs_in(&a, &user, &second), "revoked: refused");
    let after = String::from_utf8_lossy(&resp_all(&a, &["ACL", "GETUSER", &user])).into_owned();
    assert!(
        !after.contains(&second.hash().0),
        "a revoked user holds no password"
    );
    transcript.push(
        "disable: AUTH refused; enable: AUTH OK; revoke: AUTH refused, no password left".into(),
    );

    // emulated expiry: expired users are switched off by enforce (apply / nightly)
    let (nk, short) = new_key(&s, "sandbox", "short", &["bibs:read"], Duration::seconds(2));
    s.create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect("create short-lived");
    let short_user = s.user_for("short");
    assert!(logs_in(&a, &short_user, &short));
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let v = s.verify(short.expose(), Utc::now()).await.unwrap();
    assert_eq!(v.reason, keyward::store::VerifyReason::Expired);
    let done = s.enforce(Utc::now()).await.expect("enforce");
    assert!(
        done.iter()
            .any(|l| l.contains(&short_user) && l.contains("expired")),
        "{done:?}"
    );
    assert!(
        !logs_in(&a, &short_user, &short),
        "after emulated expiry AUTH fails"
    );
    transcript
        .push("expiry (emulated): AUTH OK before; after expiry + enforce AUTH refused".into());
    println!("{}", transcript.join("\n"));
}

#[tokio::test]
async fn acl_users_keyward_did_not_make_are_never_touched() {
    let Some(url) = redis_url() else {
        return;
    };
    let a = addr(&url);
    let prefix = unique("kwt-");
    let _cleanup = RedisCleanup {
        addr: a.clone(),
        prefix: prefix.clone(),
    };
    let s = store(&url, &prefix);
    let foreign = s.user_for("legacy");
    let mut c = adapters_common::redis_conn(&a);
    assert_eq!(
        resp(
            &mut c,
            &["ACL", "SETUSER", &foreign, "on", ">hunter2hunter2", "+ping"]
        ),
        "+OK"
    );
    let before = resp_all(&a, &["ACL", "GETUSER", &foreign]);
    let listed = list_all(&s, &ListFilter::default()).await.expect("list");
    let k = listed.iter().find(|k| k.name == "legacy").expect("listed");
    assert!(!k.is_managed());
    assert!(
        s.set_status(
            KeyWrite::new(&k.id, k.version, &actor()),
            KeyStatus::Disabled
        )
        .await
        .is_err()
    );
    assert!(
        s.delete(KeyWrite::new(&k.id, k.version, &actor()))
            .await
            .is_err()
    );
    let (nk, _) = new_key(&s, "sandbox", "legacy", &["bibs:read"], Duration::days(1));
    let refused = s
        .create(nk, keyward::store::Writer::new(&actor()))
        .await
        .expect_err("the name is taken by a foreign user");
    assert!(
        refused.to_string().contains("not managed by keyward"),
        "{refused}"
    );
    assert_eq!(
        resp_all(&a, &["ACL", "GETUSER", &foreign]),
        before,
        "the foreign user is unchanged"
    );
}
