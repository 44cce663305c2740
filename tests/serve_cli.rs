//! The whole loop against `keyward serve` through the `http` store kind, as a new user
//! would run it: plan with a read token, apply refused with a clear 403, apply with a write
//! token, the delivered secret verifies over `/v1/verify`, disable, rotate with grace
//! (both secrets verify, then only the new one after a restart past the grace), quota.

mod common;
mod serve_common;
use common::Repo;
use serde_json::{Value, json};
use serve_common::*;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    rotation: { every: 90d, grace: 7d, generation: 1 }
  - name: tiny-quota
    store: alma-production
    owner: asmith
    scopes: [analytics:read]
    quota: 2/day
";

fn http_repo(url: &str) -> Repo {
    let r = Repo::new(KEYS);
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  alma-production: {{ kind: http, url: \"{url}\", token_env: KEYWARD_TOKEN, environment: production }}\npolicy:\n  default_lifetime: 365d\n"
        ),
    )
    .unwrap();
    r
}

async fn verify(url: &str, token: &str, key: &str) -> Value {
    let r = client()
        .post(format!("{url}/v1/verify"))
        .bearer_auth(token)
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn plan_apply_verify_disable_rotate_quota_through_serve() {
    let sdir = tempfile::tempdir().unwrap();
    let tokens = sdir.path().join("tokens.yaml");
    let read = make_token(&tokens, "planner", "read");
    let write = make_token(&tokens, "ci-apply", "write");
    let app = make_token(&tokens, "app", "verify");
    let server = Server::start(sdir.path(), &[]);
    let r = http_repo(&server.url);

    // No token in the environment: a clear error naming the variable.
    let o = r.run(&["plan"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("KEYWARD_TOKEN"), "{}", o.stderr);

    // A read token plans.
    let o = r.run_with(
        &["plan", "--detailed-exitcode"],
        &[("KEYWARD_TOKEN", &read)],
        None,
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stdout.contains("+ key \"ill-lookup\""), "{}", o.stdout);

    // ...but cannot apply: 403 with a hint about the role.
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_TOKEN", &read)],
        None,
    );
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("403"), "{}", o.stderr);
    assert!(o.stderr.contains("`write` token"), "{}", o.stderr);
    assert_eq!(
        o.stderr.matches("has too narrow a role").count(),
        1,
        "the 403 is said once:\n{}",
        o.stderr
    );
    assert!(o.stderr.contains(&server.url), "{}", o.stderr);
    assert!(!o.all().contains(&read), "the token leaked into output");

    // A write token applies; the plan is then empty.
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_TOKEN", &write)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let o = r.run_with(
        &["plan", "--detailed-exitcode"],
        &[("KEYWARD_TOKEN", &read)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());

    // The delivered secret verifies for an application.
    let s1 = r.secret("ill-lookup", "alma-production", "jdoe");
    let v = verify(&server.url, &app, &s1).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["key"]["name"], "ill-lookup");
    assert_eq!(v["key"]["owner"], "jdoe");
    // `keyward verify` through the http store works with a write token as well.
    let o = r.run_with(
        &["verify", "--store", "alma-production"],
        &[("KEYWARD_TOKEN", &write)],
        Some(&s1),
    );
    assert_eq!(o.code, 0, "{}", o.all());

    // The events name the token.
    let ev: Value = client()
        .get(format!("{}/v1/events?limit=1000", server.url))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let creates: Vec<&Value> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "create")
        .collect();
    assert_eq!(creates.len(), 2, "{ev}");
    assert!(creates.iter().all(|e| e["who"] == "token:ci-apply"), "{ev}");

    // Quota: two calls a day, then quota_exceeded.
    let q = r.secret("tiny-quota", "alma-production", "asmith");
    assert_eq!(verify(&server.url, &app, &q).await["reason"], "ok");
    assert_eq!(verify(&server.url, &app, &q).await["reason"], "ok");
    let v = verify(&server.url, &app, &q).await;
    assert_eq!(
        (v["valid"].clone(), v["reason"].clone()),
        (json!(false), json!("quota_exceeded"))
    );

    // Disable through the spec.
    r.write_keys(&KEYS.replace(
        "    rotation: { every: 90d, grace: 7d, generation: 1 }\n",
        "    rotation: { every: 90d, grace: 7d, generation: 1 }\n    state: disabled\n",
    ));
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_TOKEN", &write)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(verify(&server.url, &app, &s1).await["reason"], "disabled");

    // Enable and rotate (generation 2): both secrets verify during the grace period.
    r.write_keys(&KEYS.replace("generation: 1 }", "generation: 2 }"));
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[("KEYWARD_TOKEN", &write)],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let s2 = r.secret("ill-lookup", "alma-production", "jdoe");
    assert_ne!(s1, s2);
    assert_eq!(verify(&server.url, &app, &s2).await["reason"], "ok");
    assert_eq!(verify(&server.url, &app, &s1).await["reason"], "ok");
    let log = server.stop();
    for secret in [&s1, &s2, &q] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the server log"
        );
    }
    for t in [&read, &write, &app] {
        assert!(!log.contains(t.as_str()), "a token reached the server log");
    }

    // After the grace period (a restarted server whose clock is 8 days ahead) only the new
    // secret verifies; the database kept everything across the restart.
    let later = (chrono::Utc::now() + chrono::Duration::days(8)).to_rfc3339();
    let server = Server::start(sdir.path(), &[("KEYWARD_NOW", &later)]);
    assert_eq!(verify(&server.url, &app, &s2).await["reason"], "ok");
    assert_eq!(verify(&server.url, &app, &s1).await["reason"], "unknown");
    // The quota is per day: on a new day it is available again.
    assert_eq!(verify(&server.url, &app, &q).await["reason"], "ok");
}

#[tokio::test]
async fn http_store_errors_name_the_store_and_url() {
    // Nothing listens on this port: a clear error, after retries, naming store and URL.
    let r = http_repo("http://127.0.0.1:9");
    let o = r.run_with(&["plan"], &[("KEYWARD_TOKEN", "kwt_x")], None);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stderr.contains("alma-production") && o.stderr.contains("127.0.0.1:9"),
        "{}",
        o.stderr
    );
    // A wrong token: 401 with a hint.
    let sdir = tempfile::tempdir().unwrap();
    make_token(&sdir.path().join("tokens.yaml"), "planner", "read");
    let server = Server::start(sdir.path(), &[]);
    let r = http_repo(&server.url);
    let o = r.run_with(&["plan"], &[("KEYWARD_TOKEN", "kwt_wrong")], None);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stderr.contains("401") && o.stderr.contains("KEYWARD_TOKEN"),
        "{}",
        o.stderr
    );
}

#[tokio::test]
async fn http_store_create_is_idempotent_and_conflicts_map() {
    use keyward::store::http::HttpStore;
    use keyward::store::{Actor, KeyPatch, KeyStatus, KeyWrite, PageAt, Store, StoreError};
    let sdir = tempfile::tempdir().unwrap();
    let write = make_token(&sdir.path().join("tokens.yaml"), "ci-apply", "write");
    let server = Server::start(sdir.path(), &[]);
    let s = HttpStore::new("svc", &server.url, Some(write.clone().into()), "$T").unwrap();
    let (body, secret) = new_key("k", "sandbox", None);
    let key: keyward::store::NewKey = serde_json::from_value(body).unwrap();
    let actor = Actor {
        who: "me".into(),
        commit: Some("abc123".into()),
    };
    let live = s
        .create(key.clone(), keyward::store::Writer::new(&actor))
        .await
        .unwrap();
    assert_eq!(live.version, 1);
    // A second create of the same id is AlreadyExists, never a second key.
    assert!(matches!(
        s.create(key, keyward::store::Writer::new(&actor)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let page = s
        .list(&Default::default(), PageAt::first(10))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // Stale version -> Conflict; fresh -> ok.
    let patch = KeyPatch {
        purpose: Some(Some("new".into())),
        ..Default::default()
    };
    let e = s
        .update(KeyWrite::new(&live.id, 7, &actor), patch.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                expected: 7,
                found: 1,
                ..
            }
        ),
        "{e}"
    );
    let k2 = s
        .update(KeyWrite::new(&live.id, 1, &actor), patch)
        .await
        .unwrap();
    assert_eq!(k2.version, 2);
    assert!(s.get("nope").await.unwrap().is_none());
    assert!(matches!(
        s.set_status(KeyWrite::new("nope", 1, &actor), KeyStatus::Disabled)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The lease maps to Locked with the holder.
    let lease = s
        .lock("alice", chrono::Duration::seconds(60))
        .await
        .unwrap();
    match s.lock("bob", chrono::Duration::seconds(60)).await {
        Err(StoreError::Locked { holder, id, .. }) => {
            assert_eq!(holder, "alice");
            assert_eq!(id, lease.id);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    s.unlock(&lease.id).await.unwrap();
    let v = s.verify(&secret, chrono::Utc::now()).await.unwrap();
    assert!(v.valid);
    let ev = s.events(None, 100).await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.action == "update" && e.commit.as_deref() == Some("abc123"))
    );
    // Debug never shows the token.
    assert!(!format!("{s:?}").contains(&write));
}
