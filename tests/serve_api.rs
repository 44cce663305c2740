//! The `/v1` protocol through the real `keyward serve` binary: tokens and roles, ETags and
//! If-Match, idempotent creates, verify reasons, events naming the token, and hostile
//! input (never a 5xx, never a secret or token in a response or log line).

mod serve_common;
use reqwest::StatusCode;
use serde_json::{Value, json};
use serve_common::*;

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    read: String,
    write: String,
    verify: String,
    api: Api,
}

impl std::ops::Deref for Fixture {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("tokens.yaml");
    let read = make_token(&t, "planner", "read");
    let write = make_token(&t, "ci-apply", "write");
    let verify = make_token(&t, "app", "verify");
    let server = Server::start(dir.path(), &[]);
    Fixture {
        _dir: dir,
        api: Api::new(&server),
        server,
        read,
        write,
        verify,
    }
}

impl Fixture {
    async fn create(&self, body: &Value, idem: Option<&str>) -> reqwest::Response {
        let mut r = self.post("/v1/keys", &self.write).json(body);
        if let Some(i) = idem {
            r = r.header("Idempotency-Key", i);
        }
        send(r).await
    }
    /// Creates a sandbox key named `name` (no idempotency key), asserting 201; returns its
    /// request body, id and secret.
    async fn create_key(&self, name: &str, quota: Option<u64>) -> (Value, String, String) {
        let (body, secret) = new_key(name, "sandbox", quota);
        let r = self.create(&body, None).await;
        assert_eq!(r.status(), StatusCode::CREATED, "create {name}");
        let id = body["id"].as_str().unwrap().to_string();
        (body, id, secret)
    }
    async fn verify(&self, key: &str) -> Value {
        let r = send(
            self.post("/v1/verify", &self.verify)
                .json(&json!({ "key": key })),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
    async fn post_status(&self, id: &str, what: &str, version: u64) -> reqwest::Response {
        let path = format!("/v1/keys/{id}/{what}");
        send(
            self.post(&path, &self.write)
                .header("If-Match", format!("\"{version}\"")),
        )
        .await
    }
    /// `GET /v1/keys{query}` with the read token: must answer 200; the page as JSON.
    async fn list(&self, query: &str) -> Value {
        let r = send(self.get(&format!("/v1/keys{query}"), &self.read)).await;
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        r.json().await.unwrap()
    }
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let s = r.status();
    let body: Value = r.json().await.expect("error bodies are JSON");
    assert!(body["message"].is_string(), "{body}");
    (s, body["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn tokens_and_roles() {
    let f = fixture();
    // No token, a malformed header, an unknown token: 401 with a JSON body.
    let r = send(f.c.get(f.url("/v1/keys"))).await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let basic =
        f.c.get(f.url("/v1/keys"))
            .header("Authorization", "Basic abc");
    assert_eq!(status_of(basic).await, StatusCode::UNAUTHORIZED);
    let unknown = f.get("/v1/keys", "kwt_0000");
    assert_eq!(status_of(unknown).await, StatusCode::UNAUTHORIZED);
    // Roles: read lists; read cannot create or lock; verify cannot list; write does both.
    assert_eq!(status_of(f.get("/v1/keys", &f.read)).await, StatusCode::OK);
    let (body, _) = new_key("k", "sandbox", None);
    let (s, code) = error_code(send(f.post("/v1/keys", &f.read).json(&body)).await).await;
    assert_eq!((s, code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let lock = f
        .post("/v1/locks", &f.read)
        .json(&json!({"holder": "x", "ttl_seconds": 5}));
    assert_eq!(status_of(lock).await, StatusCode::FORBIDDEN);
    let list = f.get("/v1/keys", &f.verify);
    assert_eq!(status_of(list).await, StatusCode::FORBIDDEN);
    let verify = f.post("/v1/verify", &f.read).json(&json!({"key": "x"}));
    assert_eq!(status_of(verify).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status_of(f.get("/v1/events", &f.write)).await,
        StatusCode::OK
    );
    // healthz needs no token.
    assert_eq!(status_of(f.c.get(f.url("/healthz"))).await, StatusCode::OK);

    // Revoking a token takes effect on the running server.
    let o = std::process::Command::new(bin())
        .args(["token", "revoke", "planner", "--tokens"])
        .arg(f.server.dir.join("tokens.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let list = std::process::Command::new(bin())
        .args(["token", "list", "--tokens"])
        .arg(f.server.dir.join("tokens.yaml"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("ci-apply\twrite") && !listed.contains("planner"),
        "{listed}"
    );
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if status_of(f.get("/v1/keys", &f.read)).await == StatusCode::UNAUTHORIZED {
            gone = true;
            break;
        }
    }
    assert!(gone, "a revoked token kept working");
    let log = f.server.stop();
    for t in [&f.read, &f.write, &f.verify] {
        assert!(!log.contains(t.as_str()), "a token reached the log");
    }
}

#[tokio::test]
async fn keys_lifecycle_etags_and_events() {
    let f = fixture();
    let (body, secret) = new_key("ill-lookup", "sandbox", None);
    let id = body["id"].as_str().unwrap().to_string();
    let r = f.create(&body, Some("req-1")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/v1/keys/{id}")
    );
    let k: Value = r.json().await.unwrap();
    assert_eq!(k["version"], 1);
    assert!(
        !k.to_string()
            .contains(body["secret_hash"].as_str().unwrap())
    );

    // The same request again (a client retry): the first answer, not a second key.
    let r = f.create(&body, Some("req-1")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], k["id"]);
    // The same header with another body is refused; the same id without a header is a 409.
    let (other, _) = new_key("other", "sandbox", None);
    let (s, code) = error_code(f.create(&other, Some("req-1")).await).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let (s, code) = error_code(f.create(&body, None).await).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "already_exists"));
    let list = f.list("?owner=jdoe").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // GET with ETag and If-None-Match.
    let path = format!("/v1/keys/{id}");
    let r = send(f.get(&path, &f.read)).await;
    assert_eq!(r.headers()["etag"], "\"1\"");
    let unchanged = f.get(&path, &f.read).header("If-None-Match", "\"1\"");
    assert_eq!(status_of(unchanged).await, StatusCode::NOT_MODIFIED);
    let r = send(f.get("/v1/keys/nope", &f.read)).await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );

    // PATCH: 428 without If-Match, 412 when stale, 200 and a new ETag when current.
    let patch = json!({ "scopes": ["bibs:read", "users:read"] });
    let patch_at = |version: Option<&str>| {
        let r = f.patch(&path, &f.write).json(&patch);
        send(match version {
            Some(v) => r.header("If-Match", v),
            None => r,
        })
    };
    assert_eq!(
        error_code(patch_at(None).await).await,
        (
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required".into()
        )
    );
    assert_eq!(
        error_code(patch_at(Some("\"7\"")).await).await,
        (StatusCode::PRECONDITION_FAILED, "version_mismatch".into())
    );
    let r = patch_at(Some("\"1\"")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    // The same version again is now stale.
    let r = patch_at(Some("\"1\"")).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Verify, disable, enable, revoke, each with If-Match.
    assert_eq!(f.verify(&secret).await["reason"], "ok");
    assert_eq!(
        f.post_status(&id, "disable", 1).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    let disable = f.post(&format!("/v1/keys/{id}/disable"), &f.write);
    assert_eq!(status_of(disable).await, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(
        f.post_status(&id, "disable", 2).await.status(),
        StatusCode::OK
    );
    let v = f.verify(&secret).await;
    assert_eq!(
        (v["valid"].clone(), v["reason"].clone()),
        (json!(false), json!("disabled"))
    );
    assert_eq!(
        f.post_status(&id, "enable", 3).await.status(),
        StatusCode::OK
    );
    assert_eq!(f.verify(&secret).await["reason"], "ok");
    assert_eq!(
        f.post_status(&id, "revoke", 4).await.status(),
        StatusCode::OK
    );
    assert_eq!(f.verify(&secret).await["reason"], "revoked");
    let (s, code) = error_code(f.post_status(&id, "enable", 5).await).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "refused"));
    // DELETE needs If-Match too.
    let delete = f.delete(&path, &f.write);
    assert_eq!(status_of(delete).await, StatusCode::PRECONDITION_REQUIRED);
    let delete = f.delete(&path, &f.write).header("If-Match", "\"5\"");
    assert_eq!(status_of(delete).await, StatusCode::NO_CONTENT);
    assert_eq!(f.verify(&secret).await["reason"], "unknown");

    // The events name the token that made each change, and page.
    let ev = json_of(f.get("/v1/events?limit=3", &f.read)).await;
    let items = ev["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|e| e["who"] == "token:ci-apply"), "{ev}");
    assert_eq!(items[0]["action"], "create");
    let next = ev["next"].as_i64().unwrap();
    let ev2 = json_of(f.get(&format!("/v1/events?after={next}&limit=100"), &f.read)).await;
    let actions: Vec<&str> = ev2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["enable", "revoke", "delete"]);
    assert!(ev2["next"].is_null());

    let log = f.server.stop();
    assert!(!log.contains(&secret) && !log.contains(body["secret_hash"].as_str().unwrap()));
}

/// Every change to a key (PATCH, rotate, disable, enable, revoke, DELETE) checks, in this
/// order: the token's role, the key id, If-Match, the body, X-Keyward-Commit; a refused
/// change leaves the key alone.
#[tokio::test]
async fn key_changes_check_their_preconditions_in_order() {
    let f = fixture();
    let (_, id, _) = f.create_key("k", None).await;
    let long_id = "a".repeat(200);
    let bad_commit = "x".repeat(101);
    let wrong_shape = json!({ "no_such_field": 1 });
    for (method, suffix, reads_body) in [
        ("PATCH", "", true),
        ("POST", "/rotate", true),
        ("POST", "/disable", false),
        ("POST", "/enable", false),
        ("POST", "/revoke", false),
        ("DELETE", "", false),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = |key: &str, token: &str| {
            f.request(m.clone(), &format!("/v1/keys/{key}{suffix}"), token)
                .header("X-Keyward-Commit", &bad_commit)
                .json(&wrong_shape)
        };
        let code = |r| async { error_code(send(r).await).await };
        let what = format!("{method} {suffix}");
        let everything_wrong = req(&long_id, &f.read);
        assert_eq!(
            code(everything_wrong).await,
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{what}"
        );
        assert_eq!(
            code(req(&long_id, &f.write)).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{what}"
        );
        assert_eq!(
            code(req(&id, &f.write)).await,
            (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required".into()
            ),
            "{what}"
        );
        let with_version = req(&id, &f.write).header("If-Match", "\"1\"");
        let expected = if reads_body {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body".into())
        } else {
            (StatusCode::BAD_REQUEST, "bad_request".into())
        };
        assert_eq!(code(with_version).await, expected, "{what}");
    }
    // A valid patch with a bad commit header: refused for the header.
    let patch = f
        .patch(&format!("/v1/keys/{id}"), &f.write)
        .header("If-Match", "\"1\"")
        .header("X-Keyward-Commit", &bad_commit)
        .json(&json!({ "owner": "asmith" }));
    assert_eq!(
        error_code(send(patch).await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let r = send(f.get(&format!("/v1/keys/{id}"), &f.read)).await;
    assert_eq!(r.headers()["etag"], "\"1\"", "the key was left alone");
}

#[tokio::test]
async fn list_filters_and_cursor_pagination() {
    let f = fixture();
    for i in 0..7 {
        let (mut body, _) = new_key(
            &format!("k{i}"),
            if i % 2 == 0 { "sandbox" } else { "production" },
            None,
        );
        if i == 3 {
            body["owner"] = json!("asmith");
            body["labels"] = json!({ "ticket": "T-9" });
            body["expires_at"] = json!("2026-01-01T00:00:00Z");
        }
        if i == 5 {
            body["managed_by"] = json!(null);
        }
        assert_eq!(f.create(&body, None).await.status(), StatusCode::CREATED);
    }
    let n = |v: &Value| v["items"].as_array().unwrap().len();
    assert_eq!(n(&f.list("").await), 7);
    assert_eq!(n(&f.list("?owner=asmith").await), 1);
    assert_eq!(n(&f.list("?environment=sandbox").await), 4);
    assert_eq!(n(&f.list("?label=ticket%3DT-9").await), 1);
    assert_eq!(n(&f.list("?managed=false").await), 1);
    assert_eq!(n(&f.list("?managed=true&status=active").await), 6);
    assert_eq!(n(&f.list("?expiring_before=2026-06-01").await), 1);
    assert_eq!(n(&f.list("?status=revoked").await), 0);
    // Pages of 3 cover every key exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".to_string(),
        };
        let v = f.list(&q).await;
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_string()),
        );
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    seen.dedup();
    assert_eq!(seen.len(), 7);
    // Bad parameters are 400s.
    for q in [
        "?status=gone",
        "?label=nokv",
        "?limit=0",
        "?limit=100000",
        "?cursor=zzz",
        "?expiring_before=soon",
        "?unknown=1",
        "?managed=maybe",
    ] {
        let r = f.get(&format!("/v1/keys{q}"), &f.read);
        assert_eq!(status_of(r).await, StatusCode::BAD_REQUEST, "{q}");
    }
}

#[tokio::test]
async fn verify_reasons_and_quota() {
    let f = fixture();
    let (_, id, secret) = f.create_key("q", Some(3)).await;
    for _ in 0..3 {
        let v = f.verify(&secret).await;
        assert_eq!(v["reason"], "ok", "{v}");
        assert_eq!(v["key"]["name"], "q");
        assert_eq!(v["key"]["scopes"], json!(["bibs:read"]));
    }
    let v = f.verify(&secret).await;
    assert_eq!(
        (v["valid"].clone(), v["reason"].clone()),
        (json!(false), json!("quota_exceeded"))
    );
    assert!(v.get("key").is_none());
    // Garbage and well-formed strangers.
    assert_eq!(f.verify("hello").await["reason"], "malformed");
    assert_eq!(f.verify(&"x".repeat(10_000)).await["reason"], "malformed");
    let stranger_id = keyward::secret::new_key_id();
    let stranger = keyward::secret::generate("sandbox", &stranger_id);
    assert_eq!(f.verify(stranger.expose()).await["reason"], "unknown");
    // A correct id with a wrong secret body is unknown, not ok.
    let other = keyward::secret::generate("sandbox", &id);
    assert_eq!(f.verify(other.expose()).await["reason"], "unknown");
}

#[tokio::test]
async fn locks() {
    let f = fixture();
    let lock = |holder: &str, ttl: i64| {
        send(
            f.post("/v1/locks", &f.write)
                .json(&json!({ "holder": holder, "ttl_seconds": ttl })),
        )
    };
    let r = lock("alice", 60).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let lease: Value = r.json().await.unwrap();
    let r = lock("bob", 60).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "locked");
    assert_eq!(body["holder"], "alice");
    assert_eq!(body["lease_id"], lease["id"]);
    let unlock = f.delete(
        &format!("/v1/locks/{}", lease["id"].as_str().unwrap()),
        &f.write,
    );
    assert_eq!(status_of(unlock).await, StatusCode::NO_CONTENT);
    assert_eq!(lock("bob", 60).await.status(), StatusCode::CREATED);
    assert_eq!(
        lock("x", -1).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn hostile_input_is_never_a_5xx() {
    let f = fixture();
    let (_, gid, _) = f.create_key("ok", None).await;
    let big = "x".repeat(200 * 1024);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("array", b"[1,2,3]".to_vec()),
        (
            "wrong types",
            br#"{"id": 5, "name": [], "key": 7}"#.to_vec(),
        ),
        ("null", b"null".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
        ("oversized", format!("{{\"key\": \"{big}\"}}").into_bytes()),
        (
            "deep",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ),
        (
            "unknown field",
            br#"{"key": "kw_x", "now": "2020-01-01T00:00:00Z"}"#.to_vec(),
        ),
    ];
    let routes = [
        ("POST", "/v1/keys".to_string()),
        ("POST", "/v1/verify".to_string()),
        ("PATCH", format!("/v1/keys/{gid}")),
        ("POST", format!("/v1/keys/{gid}/rotate")),
        ("POST", "/v1/locks".to_string()),
        ("POST", "/v1/events".to_string()),
    ];
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (method, path) in &routes {
        for (what, body) in &bodies {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            // Oversized bodies go on their own connection: the server closes it after 413.
            let c = if *what == "oversized" { &fresh } else { &f.c };
            let sent = c
                .request(m, f.url(path))
                .bearer_auth(&f.write)
                .header("If-Match", "\"1\"")
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let r = match sent {
                Ok(r) => r,
                // The server may answer 413 and close before the client finished sending
                // 200 KiB; the client then sees the connection end instead of the answer.
                Err(e) if *what == "oversized" && e.is_request() => continue,
                Err(e) => panic!("{method} {path} with {what}: {e}"),
            };
            let s = r.status();
            assert!(s.is_client_error(), "{method} {path} with {what}: {s}");
            if *what == "oversized" {
                assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}");
            }
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path} {what}: not JSON: {text}"));
            assert!(v["code"].is_string() && v["message"].is_string(), "{text}");
        }
    }
    // Wrong methods, unknown routes, odd ids and headers.
    let cases: Vec<(&str, String)> = vec![
        ("PUT", "/v1/keys".into()),
        ("DELETE", "/v1/keys".into()),
        ("GET", "/v1/verify".into()),
        ("PUT", format!("/v1/keys/{gid}")),
        ("GET", format!("/v1/keys/{gid}/rotate")),
        ("GET", "/v1/locks".into()),
        ("GET", "/v2/keys".into()),
        ("GET", "/v1/keys/%ff%fe".into()),
        ("GET", format!("/v1/keys/{}", "a".repeat(5000))),
        ("DELETE", "/v1/keys/nope".into()),
        ("POST", "/v1/keys/nope/disable".into()),
    ];
    for (method, path) in &cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = send(f.request(m, path, &f.write).header("If-Match", "\"1\"")).await;
        let s = r.status();
        assert!(s.is_client_error(), "{method} {path}: {s}");
        let text = r.text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_ok(),
            "{method} {path}: {text}"
        );
    }
    for bad in ["\"x\"", "*", "W/\"abc\"", ""] {
        let r = f
            .patch(&format!("/v1/keys/{gid}"), &f.write)
            .header("If-Match", bad);
        let s = status_of(r.json(&json!({}))).await;
        assert!(s.is_client_error(), "If-Match {bad}: {s}");
    }
    // Random keys at verify: all 200, never valid.
    for i in 0..200 {
        let k = match i % 4 {
            0 => format!("kw_sbx_{i}"),
            1 => keyward::secret::generate("sandbox", &keyward::secret::new_key_id())
                .expose()
                .to_string(),
            2 => format!("{}\u{0}\u{7f}", "kw_".repeat(i)),
            _ => "é".repeat(i),
        };
        let v = f.verify(&k).await;
        assert_eq!(v["valid"], false);
    }
    // The server is still healthy.
    assert_eq!(status_of(f.c.get(f.url("/healthz"))).await, StatusCode::OK);
    let log = f.server.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn serve_refuses_to_start_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(bin())
        .arg("-C")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("KEYWARD_SERVE_TOKENS")
        .env_remove("KEYWARD_TOKENS_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no tokens") && err.contains("keyward token create"),
        "{err}"
    );
    let o = std::process::Command::new(bin())
        .arg("-C")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "mysql://x",
        ])
        .env("KEYWARD_SERVE_TOKENS", format!("a:read:{}", "0".repeat(64)))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sqlite:PATH"));
}
