//! Two real `keyward serve` processes on one PostgreSQL schema, as a team runs them behind a
//! load balancer: creates raced through both (same Idempotency-Key, and same id without
//! one) give one key, PATCHes with the same If-Match give one 200 and 412s, the apply lock
//! is exclusive across the instances, and quotas are exact across them. Skipped with a
//! visible message when `KEYWARD_TEST_POSTGRES_URL` is unset.

mod needs;
mod serve_common;
mod store_common;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use serve_common::{Server, client, make_token, new_key};
use store_common::{PgSchema, pg_url};

struct Pair {
    a: Server,
    b: Server,
    write: String,
    verify: String,
    _schema: PgSchema,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn urls(&self) -> [&str; 2] {
        [&self.a.url, &self.b.url]
    }
}

fn start_pair(url: &str) -> Pair {
    let schema = PgSchema::new(url);
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.yaml");
    let write = make_token(&tokens, "ci-apply", "write");
    let verify = make_token(&tokens, "app", "verify");
    let database = schema.database_url();
    // Both start at once on a new schema: the migration runs once.
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| Server::start_with_database(dir.path(), &database, &[]));
        let hb = s.spawn(|| Server::start_with_database(dir.path(), &database, &[]));
        (ha.join().expect("start a"), hb.join().expect("start b"))
    });
    assert_ne!(a.url, b.url);
    Pair {
        a,
        b,
        write,
        verify,
        _schema: schema,
        _dir: dir,
    }
}

/// Two servers on a fresh schema and an HTTP client; None (skipped) without PostgreSQL.
fn pair_and_client() -> Option<(Pair, reqwest::Client)> {
    let url = pg_url()?;
    Some((start_pair(&url), client()))
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.expect("request");
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_schema_do_not_corrupt_each_other() {
    let Some((p, c)) = pair_and_client() else {
        return;
    };

    // Creates with one Idempotency-Key, through both servers at once: one key, every
    // answer is that key.
    let (body, secret) = new_key("raced-idem", "production", Some(10));
    let id = body["id"].as_str().expect("id").to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let req = c
                .post(format!("{}/v1/keys", p.urls()[i % 2]))
                .bearer_auth(&p.write)
                .header("Idempotency-Key", "apply-42-create-raced-idem")
                .json(&body);
            tokio::spawn(send(req))
        })
        .collect();
    for t in tasks {
        let (status, answer) = t.await.expect("join");
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["id"], id.as_str());
        assert_eq!(answer["version"], 1);
    }

    // Creates of one id without the header: one 201, the others 409 already_exists.
    let (body2, _) = new_key("raced-plain", "production", None);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let req = c
                .post(format!("{}/v1/keys", p.urls()[i % 2]))
                .bearer_auth(&p.write)
                .json(&body2);
            tokio::spawn(send(req))
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let (status, answer) = t.await.expect("join");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => assert_eq!(answer["code"], "already_exists", "{answer}"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(created, 1);

    let (status, list) = send(c.get(format!("{}/v1/keys", p.b.url)).bearer_auth(&p.write)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // PATCHes with one If-Match through both: one 200, the rest 412.
    let mut version = 1;
    for round in 0..3 {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let req = c
                    .patch(format!("{}/v1/keys/{id}", p.urls()[i % 2]))
                    .bearer_auth(&p.write)
                    .header("If-Match", format!("\"{version}\""))
                    .json(&json!({ "labels": { "writer": format!("{round}-{i}") } }));
                tokio::spawn(send(req))
            })
            .collect();
        let mut ok = Vec::new();
        for t in tasks {
            let (status, answer) = t.await.expect("join");
            match status {
                StatusCode::OK => ok.push(answer),
                StatusCode::PRECONDITION_FAILED => {
                    assert_eq!(answer["code"], "version_mismatch", "{answer}")
                }
                other => panic!("unexpected {other}: {answer}"),
            }
        }
        assert_eq!(ok.len(), 1, "round {round}: one PATCH wins");
        version += 1;
        assert_eq!(ok[0]["version"], version);
        let (_, now) = send(
            c.get(format!("{}/v1/keys/{id}", p.a.url))
                .bearer_auth(&p.write),
        )
        .await;
        assert_eq!(
            now["labels"], ok[0]["labels"],
            "both servers see the winner"
        );
    }

    // The apply lock: many takers through both servers, exactly one lease.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let req = c
                .post(format!("{}/v1/locks", p.urls()[i % 2]))
                .bearer_auth(&p.write)
                .json(&json!({ "holder": format!("apply-{i}"), "ttl_seconds": 600 }));
            tokio::spawn(send(req))
        })
        .collect();
    let mut leases = Vec::new();
    let mut holders = BTreeSet::new();
    for t in tasks {
        let (status, answer) = t.await.expect("join");
        match status {
            StatusCode::CREATED => leases.push(answer),
            StatusCode::CONFLICT => {
                assert_eq!(answer["code"], "locked", "{answer}");
                holders.insert(answer["holder"].as_str().unwrap_or_default().to_owned());
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(leases.len(), 1, "exactly one lease");
    let winner = leases[0]["holder"].as_str().expect("holder");
    assert!(holders.iter().all(|h| h == winner), "{holders:?}");
    // Released through the other server, it can be taken again.
    let lease_id = leases[0]["id"].as_str().expect("lease id");
    for u in p.urls() {
        let r = c
            .delete(format!("{u}/v1/locks/{lease_id}"))
            .bearer_auth(&p.write)
            .send()
            .await
            .expect("unlock");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let (status, _) = send(
        c.post(format!("{}/v1/locks", p.a.url))
            .bearer_auth(&p.write)
            .json(&json!({ "holder": "next", "ttl_seconds": 60 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Verify through both: the quota of 10 a day holds across the instances.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let req = c
                .post(format!("{}/v1/verify", p.urls()[i % 2]))
                .bearer_auth(&p.verify)
                .json(&json!({ "key": secret }));
            tokio::spawn(send(req))
        })
        .collect();
    let mut valid = 0;
    for t in tasks {
        let (status, v) = t.await.expect("join");
        assert_eq!(status, StatusCode::OK);
        if v["valid"] == true {
            valid += 1;
        } else {
            assert_eq!(v["reason"], "quota_exceeded", "{v}");
        }
    }
    assert_eq!(valid, 10);

    // The audit log: one create event per key, one update per winning PATCH, numbered
    // without gaps, the token named.
    let (_, events) = send(
        c.get(format!("{}/v1/events?limit=1000", p.b.url))
            .bearer_auth(&p.write),
    )
    .await;
    let items = events["items"].as_array().expect("events");
    let actions: Vec<&str> = items.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "create").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "update").count(),
        3,
        "{actions:?}"
    );
    let seqs: Vec<i64> = items.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(
        items
            .iter()
            .filter(|e| e["action"] == "create")
            .all(|e| e["who"].as_str().is_some_and(|w| w.contains("ci-apply"))),
        "{events}"
    );

    // Neither log holds the secret or the write token.
    let (la, lb) = (p.a.log(), p.b.log());
    for log in [&la, &lb] {
        assert!(!log.contains(&secret) && !log.contains(&p.write));
    }
}

#[test]
fn serve_refuses_a_postgres_database_without_a_pepper_file() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = PgSchema::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.yaml");
    make_token(&tokens, "ci", "write");
    let out = std::process::Command::new(serve_common::bin())
        .arg("-C")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens.yaml",
        ])
        .arg("--database")
        .arg(format!("{}?schema={}", schema.url, schema.schema))
        .env_remove("KEYWARD_PEPPER_FILE")
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pepper_file") && err.contains("KEYWARD_PEPPER_FILE"),
        "{err}"
    );
}

/// One verify through `base`: (valid, reason).
async fn verify_on(c: &reqwest::Client, base: &str, token: &str, secret: &str) -> (bool, String) {
    let (status, v) = send(
        c.post(format!("{base}/v1/verify"))
            .bearer_auth(token)
            .json(&json!({ "key": secret })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    (
        v["valid"] == true,
        v["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Verify through `base` until it refuses (at most 5 s): the time it took and the reason.
async fn refused_after(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    secret: &str,
) -> (std::time::Duration, String) {
    let start = std::time::Instant::now();
    loop {
        let (valid, reason) = verify_on(c, base, token, secret).await;
        if !valid {
            return (start.elapsed(), reason);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "still valid on {base} after 5 s"
        );
    }
}

/// Set key `id`'s status by SQL (the trigger announces it): both servers refuse `secret`
/// with that reason within 1 s (printed).
async fn by_hand(db: &tokio_postgres::Client, p: &Pair, id: &str, secret: &str, status: &str) {
    db.batch_execute(&format!(
        "UPDATE keys SET status = '{status}' WHERE id = '{id}'"
    ))
    .await
    .expect("update by hand");
    let c = client();
    for u in p.urls() {
        let (took, reason) = refused_after(&c, u, &p.verify, secret).await;
        println!(
            "{status} by SQL: refused by {u} {} ms later",
            took.as_millis()
        );
        assert_eq!(reason, status);
        assert!(
            took < std::time::Duration::from_secs(1),
            "{u} took {took:?}"
        );
    }
}

/// The key cache of a serving PostgreSQL store (LISTEN/NOTIFY): two real instances on one
/// schema; a revoke through A and a disable typed into the database by hand are refused by
/// both within 1 s (measured, printed); a change the trigger does not announce (triggers off
/// for that session) shows the cache is really answering; when the listener's connection is
/// killed, the cache is dropped, so even that unannounced change is then seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_or_disable_anywhere_is_refused_by_every_instance_within_a_second() {
    let Some((p, c)) = pair_and_client() else {
        return;
    };
    let db = p._schema.raw().await;
    let mut keys = Vec::new();
    for name in ["cached-a", "cached-b"] {
        let (body, secret) = new_key(name, "production", None);
        let (status, k) = send(
            c.post(format!("{}/v1/keys", p.a.url))
                .bearer_auth(&p.write)
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{k}");
        keys.push((k["id"].as_str().expect("id").to_owned(), secret));
    }
    // Warm both caches (their listeners are up a moment after start).
    let warm = |secret: String| {
        let (c, urls, verify) = (
            c.clone(),
            [p.a.url.clone(), p.b.url.clone()],
            p.verify.clone(),
        );
        async move {
            for _ in 0..50 {
                for u in &urls {
                    assert_eq!(
                        verify_on(&c, u, &verify, &secret).await,
                        (true, "ok".into())
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    warm(keys[0].1.clone()).await;
    warm(keys[1].1.clone()).await;

    // Proof the cache answers: revoked in the database with triggers off for that session
    // (no notification), both instances still say valid.
    let quiet = |sql: String| {
        let db = &db;
        async move {
            db.batch_execute(&format!(
                "BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT"
            ))
            .await
            .expect("quiet update");
        }
    };
    let (id_a, secret_a) = &keys[0];
    quiet(format!(
        "UPDATE keys SET status = 'revoked' WHERE id = '{id_a}'"
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for u in p.urls() {
        assert_eq!(
            verify_on(&c, u, &p.verify, secret_a).await,
            (true, "ok".into()),
            "{u} answered from the database, not its cache"
        );
    }
    quiet(format!(
        "UPDATE keys SET status = 'active' WHERE id = '{id_a}'"
    ))
    .await;

    // A revoke through A: refused by B within 1 s.
    let started = std::time::Instant::now();
    let (status, k) = send(
        c.post(format!("{}/v1/keys/{id_a}/revoke", p.a.url))
            .bearer_auth(&p.write)
            .header("If-Match", "\"1\""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{k}");
    let acked = started.elapsed();
    let (on_b, reason) = refused_after(&c, &p.b.url, &p.verify, secret_a).await;
    assert_eq!(reason, "revoked");
    let (on_a, _) = refused_after(&c, &p.a.url, &p.verify, secret_a).await;
    println!(
        "revoke through A (answered in {} ms): refused by B {} ms later, by A {} ms later",
        acked.as_millis(),
        on_b.as_millis(),
        on_a.as_millis()
    );
    assert!(on_b < std::time::Duration::from_secs(1), "B took {on_b:?}");
    assert!(
        on_a < std::time::Duration::from_millis(200),
        "A took {on_a:?}"
    );

    // A disable typed into the database by hand (the trigger announces it): both refuse
    // within 1 s.
    let (id_b, secret_b) = &keys[1];
    by_hand(&db, &p, id_b, secret_b, "disabled").await;

    // Re-enabled quietly (no notification) and warmed again: the caches hold it as
    // disabled, so both still refuse.
    quiet(format!(
        "UPDATE keys SET status = 'active' WHERE id = '{id_b}'"
    ))
    .await;
    for u in p.urls() {
        assert_eq!(
            verify_on(&c, u, &p.verify, secret_b).await,
            (false, "disabled".into()),
            "{u}: the cache was not in use"
        );
    }
    // The listeners lose their connections: each instance drops its whole cache (and
    // reads the database until it listens again), so the quiet change is now seen.
    let killed = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = left('keyward key cache keyward_keys_' || $1, 63)",
            &[&p._schema.schema],
        )
        .await
        .expect("terminate the listeners");
    assert_eq!(killed.len(), 2, "one listener per instance");
    for u in p.urls() {
        let start = std::time::Instant::now();
        loop {
            if verify_on(&c, u, &p.verify, secret_b).await == (true, "ok".into()) {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(1),
                "{u} kept its cache across a lost listener"
            );
        }
    }
    // And they listen again: a revoke by hand is refused within 1 s.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    warm(secret_b.clone()).await;
    by_hand(&db, &p, id_b, secret_b, "revoked").await;
    let (la, lb) = (p.a.log(), p.b.log());
    assert!(
        la.contains("key cache off") && lb.contains("key cache off"),
        "{la}\n{lb}"
    );
    for log in [&la, &lb] {
        assert!(!log.contains(secret_a.as_str()) && !log.contains(secret_b.as_str()));
    }
}

/// A quota large enough to be reserved in blocks, and reserved ahead in the background as
/// a block runs low (`store::quota`), is still exact across two instances: 2,600 verifies
/// at 16 at a time through both, against 2,000 a day, give exactly 2,000 valid ones, and
/// the database's counter never passes the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_reserved_ahead_in_blocks_stays_exact_across_two_instances() {
    let Some((p, c)) = pair_and_client() else {
        return;
    };
    let (body, secret) = new_key("busy", "production", Some(2_000));
    let (status, answer) = send(
        c.post(format!("{}/v1/keys", p.a.url))
            .bearer_auth(&p.write)
            .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let id = answer["id"].as_str().expect("id").to_owned();
    let urls: Vec<String> = p.urls().iter().map(|u| u.to_string()).collect();
    let mut valid = 0;
    let mut refused = 0;
    for wave in 0..(2_600 / 16) + 1 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let req = c
                    .post(format!("{}/v1/verify", urls[(wave + i) % 2]))
                    .bearer_auth(&p.verify)
                    .json(&json!({ "key": secret }));
                tokio::spawn(send(req))
            })
            .collect();
        for t in tasks {
            let (status, v) = t.await.expect("join");
            assert_eq!(status, StatusCode::OK);
            if v["valid"] == true {
                valid += 1;
            } else {
                assert_eq!(v["reason"], "quota_exceeded", "{v}");
                refused += 1;
            }
        }
    }
    assert_eq!(valid, 2_000, "valid verifies ({refused} refused)");
    let db = p._schema.raw().await;
    let rows = db
        .query("SELECT calls FROM quota_usage WHERE key_id = $1", &[&id])
        .await
        .expect("read the counter");
    let calls: i64 = rows.iter().map(|r| r.get::<_, i64>(0)).sum();
    assert_eq!(calls, 2_000, "the counter reserved exactly the quota");
}
