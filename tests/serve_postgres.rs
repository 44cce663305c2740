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

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.expect("request");
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_schema_do_not_corrupt_each_other() {
    let Some(url) = pg_url() else {
        return;
    };
    let p = start_pair(&url);
    let c = client();

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
