//! Secret-leak canaries for the service: the full cycle (create, rotate, replace, revoke,
//! verify, drift and its repair) runs through a real `keyward serve` with tracing at
//! `trace` (`KEYWARD_LOG`, the only filter the binary reads; `RUST_LOG` is set too), driven
//! by `keyward apply` over an `http` store and by direct API calls, with errors on purpose:
//! missing, malformed, unknown and revoked tokens, a secret sent as the token, wrong roles,
//! malformed and oversized bodies holding a secret, a secret in the path, query and
//! headers. Every response (status line, every header, body), the server's stdout and
//! stderr, the CLI's stdout and stderr, the database files (with -wal/-shm), the tokens file
//! and every file apply wrote except the sealed envelopes are searched for every secret,
//! its SHA-256 hex (what a create sends), every bearer token's plaintext and every private
//! identity. Zero hits.

mod common;
mod serve_common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Out, Repo};
use reqwest::StatusCode;
use serde_json::{Value, json};
use serve_common::{Server, client, make_token, new_key};

const TOKEN_ENV: &str = "KEYWARD_CANARY_TOKEN";
const STORE: &str = "alma-production";

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    rotation: { generation: 1 }
  - name: reports
    store: alma-production
    owner: asmith
    scopes: [analytics:read]
  - name: feed
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
";

const TRACE: [(&str, &str); 3] = [
    ("KEYWARD_LOG", "trace"),
    ("RUST_LOG", "trace"),
    ("RUST_BACKTRACE", "1"),
];

#[derive(Default)]
struct Capture {
    items: Vec<(String, Vec<u8>)>,
}

impl Capture {
    fn push(&mut self, what: String, bytes: Vec<u8>) {
        self.items.push((what, bytes));
    }

    fn out(&mut self, what: &str, o: &Out) {
        self.push(format!("stdout of {what}"), o.stdout.clone().into_bytes());
        self.push(format!("stderr of {what}"), o.stderr.clone().into_bytes());
    }

    /// Every file under `root` except sealed envelopes and the inputs the test wrote.
    fn files(&mut self, root: &Path, step: &str) {
        for e in walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(p);
            if p.extension().is_some_and(|x| x == "age")
                || rel.starts_with("ids")
                || rel.starts_with("keys")
                || rel == Path::new("people.yaml")
                || rel == Path::new("keyward.yaml")
            {
                continue;
            }
            self.push(
                format!("{} (after {step})", p.display()),
                std::fs::read(p).unwrap_or_default(),
            );
        }
    }

    /// Send `req`; capture the status line, every header and the body.
    fn call(
        &mut self,
        rt: &tokio::runtime::Runtime,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, Value) {
        let (status, head, body) = rt.block_on(async {
            let r = req.send().await.expect("request");
            let mut head = format!("{:?} {}\n", r.version(), r.status());
            for (k, v) in r.headers() {
                head.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            let status = r.status();
            let body = r.bytes().await.expect("body").to_vec();
            (status, head, body)
        });
        self.push(format!("response head of {what}"), head.into_bytes());
        self.push(format!("response body of {what}"), body.clone());
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(
                v["code"].is_string() && v["message"].is_string(),
                "{what}: {status} without a JSON error: {}",
                String::from_utf8_lossy(&body)
            );
        }
        (status, v)
    }

    /// `call`, then check the status; returns the JSON body.
    fn expect(
        &mut self,
        rt: &tokio::runtime::Runtime,
        what: &str,
        req: reqwest::RequestBuilder,
        want: StatusCode,
    ) -> Value {
        let (status, body) = self.call(rt, what, req);
        assert_eq!(status, want, "{what}: {body}");
        body
    }
}

fn run(r: &Repo, cap: &mut Capture, what: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let o = r.run_with(args, &TRACE, stdin);
    cap.out(what, &o);
    cap.files(r.root(), what);
    o
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn hits(hay: &[u8], needle: &str) -> bool {
    if needle.is_empty() || hay.len() < needle.len() {
        return false;
    }
    let n = needle.to_ascii_lowercase();
    hay.windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
}

#[test]
fn no_secret_token_or_identity_in_anything_the_service_writes_or_answers() {
    let rt = common::runtime();
    let c = client();
    let mut cap = Capture::default();
    let srv = tempfile::tempdir().expect("tempdir");
    let tokens_file = srv.path().join("tokens.yaml");
    let write = make_token(&tokens_file, "ci-apply", "write");
    let read = make_token(&tokens_file, "plan", "read");
    let verify = make_token(&tokens_file, "app", "verify");
    let gone = make_token(&tokens_file, "old", "write");
    let o = std::process::Command::new(serve_common::bin())
        .args(["token", "revoke", "old", "--tokens"])
        .arg(&tokens_file)
        .output()
        .expect("token revoke");
    assert!(o.status.success());
    cap.push("stdout of token revoke".into(), o.stdout);
    cap.push("stderr of token revoke".into(), o.stderr);
    let o = std::process::Command::new(serve_common::bin())
        .args(["token", "list", "--tokens"])
        .arg(&tokens_file)
        .output()
        .expect("token list");
    cap.push("stdout of token list".into(), o.stdout);
    cap.push("stderr of token list".into(), o.stderr);
    let server = Server::start(srv.path(), &TRACE);
    let url = server.url.clone();

    // The repository: one http store on the service.
    let mut r = Repo::new(KEYS);
    std::fs::write(
        r.root().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  {STORE}: {{ kind: http, url: \"{url}\", token_env: {TOKEN_ENV}, environment: production }}\npolicy:\n  default_lifetime: 365d\n"
        ),
    )
    .expect("keyward.yaml");
    r.env.push((TOKEN_ENV.into(), write.clone()));
    let stores = {
        let s = keyward::store::http::HttpStore::new(
            STORE,
            &url,
            Some(secrecy::SecretString::from(write.clone())),
            TOKEN_ENV,
        )
        .expect("http store");
        let s: std::sync::Arc<dyn keyward::store::Store> = std::sync::Arc::new(s);
        vec![(STORE.to_string(), s)]
    };
    let mut secrets: BTreeSet<String> = BTreeSet::new();

    // Plan in every format, then create through the service.
    for f in ["text", "json", "markdown"] {
        let o = run(
            &r,
            &mut cap,
            &format!("plan {f}"),
            &["plan", "--format", f],
            None,
        );
        assert_eq!(o.code, 0, "{}", o.all());
    }
    let o = run(
        &r,
        &mut cap,
        "apply create",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    secrets.extend(r.check_invariants_in("after create", &[], &stores));
    assert_eq!(secrets.len(), 3);
    let good = secrets.iter().next().cloned().expect("a secret");
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 12;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).expect("ascii");

    // Verify through the CLI (http store -> /v1/verify) and directly.
    let o = run(
        &r,
        &mut cap,
        "verify good",
        &["verify", "--store", STORE],
        Some(&good),
    );
    assert!(o.stdout.contains("true"), "{}", o.all());
    run(
        &r,
        &mut cap,
        "verify tampered",
        &["verify", "--store", STORE],
        Some(&tampered),
    );
    let v = |k: &str| json!({ "key": k });
    let (s, b) = cap.call(
        &rt,
        "verify good",
        c.post(format!("{url}/v1/verify"))
            .bearer_auth(&verify)
            .json(&v(&good)),
    );
    assert_eq!((s, b["valid"].clone()), (StatusCode::OK, json!(true)));
    let (s, b) = cap.call(
        &rt,
        "verify tampered",
        c.post(format!("{url}/v1/verify"))
            .bearer_auth(&verify)
            .json(&v(&tampered)),
    );
    assert_eq!(
        (s, b["reason"].clone()),
        (StatusCode::OK, json!("malformed"))
    );
    let long = format!("{good}{}", "x".repeat(600));
    cap.expect(
        &rt,
        "verify too long",
        c.post(format!("{url}/v1/verify"))
            .bearer_auth(&verify)
            .json(&v(&long)),
        StatusCode::OK,
    );

    // Tokens on purpose wrong: none, malformed, unknown, revoked, the secret as a token,
    // another scheme, and roles that may not do the request.
    let verify_url = format!("{url}/v1/verify");
    let wrong_auth: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("empty bearer", Some("Bearer ".into())),
        ("secret as token", Some(format!("Bearer {good}"))),
        ("secret without scheme", Some(good.clone())),
        ("token as basic", Some(format!("Basic {verify}"))),
        ("token with junk", Some(format!("Bearer {verify}x"))),
        (
            "token cut",
            Some(format!("Bearer {}", &verify[..verify.len() - 1])),
        ),
        ("revoked token", Some(format!("Bearer {gone}"))),
        ("read token on verify", Some(format!("Bearer {read}"))),
    ];
    // The tokens file is re-read within seconds of a change: wait for the revocation.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for (what, auth) in &wrong_auth {
        let mut req = c.post(&verify_url).json(&v(&good));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let (s, _) = cap.call(&rt, what, req);
        let want = if what.starts_with("read token") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, want, "{what}");
    }
    cap.expect(
        &rt,
        "verify token lists keys",
        c.get(format!("{url}/v1/keys")).bearer_auth(&verify),
        StatusCode::FORBIDDEN,
    );
    let (nk, nk_secret) = new_key("canary-direct", "production", None);
    cap.expect(
        &rt,
        "read token creates",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&read)
            .json(&nk),
        StatusCode::FORBIDDEN,
    );

    // Malformed bodies that hold the secret.
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated JSON",
            format!("{{\"key\": \"{good}\"").into_bytes(),
        ),
        (
            "secret not a string",
            format!("{{\"key\": [\"{good}\"]}}").into_bytes(),
        ),
        (
            "misspelt field",
            format!("{{\"kye\": \"{good}\"}}").into_bytes(),
        ),
        (
            "secret as field name",
            format!("{{\"{good}\": 1}}").into_bytes(),
        ),
        (
            "extra field",
            format!("{{\"key\": \"{good}\", \"also\": \"{good}\"}}").into_bytes(),
        ),
        ("form encoded", format!("key={good}").into_bytes()),
        ("bare secret", good.clone().into_bytes()),
        (
            "not UTF-8",
            [b"{\"key\": \"".as_slice(), good.as_bytes(), b"\xff\xfe\"}"].concat(),
        ),
        (
            "too large",
            format!(
                "{{\"key\": \"{good}\", \"pad\": \"{}\"}}",
                "p".repeat(70_000)
            )
            .into_bytes(),
        ),
    ];
    for (what, body) in &bodies {
        let (s, _) = cap.call(
            &rt,
            what,
            c.post(&verify_url)
                .bearer_auth(&verify)
                .header("Content-Type", "application/json")
                .body(body.clone()),
        );
        assert!(s.is_client_error(), "{what}: {s}");
    }
    // A create whose body is wrong in ways that carry the secret or its hash.
    let mut bad = nk.clone();
    bad["secret"] = json!(nk_secret);
    cap.expect(
        &rt,
        "create with a secret field",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .json(&bad),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let mut bad = nk.clone();
    bad["secret_hash"] = json!(nk_secret);
    let (s, _) = cap.call(
        &rt,
        "create with the secret as hash",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .json(&bad),
    );
    assert!(s.is_client_error(), "{s}");
    let mut bad = nk.clone();
    bad["generation"] = json!(nk["secret_hash"]);
    cap.expect(
        &rt,
        "create with the hash as generation",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .json(&bad),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let mut bad = nk.clone();
    bad.as_object_mut()
        .expect("object")
        .insert(nk_secret.clone(), json!(1));
    cap.expect(
        &rt,
        "create with the secret as a field name",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .json(&bad),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    // A good direct create (a second secret), then the same again (409).
    cap.expect(
        &rt,
        "create direct",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .header("Idempotency-Key", "canary-1")
            .json(&nk),
        StatusCode::CREATED,
    );
    cap.expect(
        &rt,
        "create replayed",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .header("Idempotency-Key", "canary-1")
            .json(&nk),
        StatusCode::CREATED,
    );
    cap.expect(
        &rt,
        "create twice",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .json(&nk),
        StatusCode::CONFLICT,
    );
    let (s, b) = cap.call(
        &rt,
        "verify direct",
        c.post(&verify_url)
            .bearer_auth(&verify)
            .json(&v(&nk_secret)),
    );
    assert_eq!((s, b["valid"].clone()), (StatusCode::OK, json!(true)));
    secrets.insert(nk_secret.clone());

    // The secret (and its hash) where ids, cursors, filters and headers go.
    let id = nk["id"].as_str().expect("id").to_owned();
    let hash = sha256_hex(&good);
    for (what, path) in [
        ("secret as key id", format!("/v1/keys/{good}")),
        ("hash as key id", format!("/v1/keys/{hash}")),
        (
            "secret as key id to rotate",
            format!("/v1/keys/{good}/rotate"),
        ),
        ("secret as cursor", format!("/v1/keys?cursor={good}")),
        (
            "secret as owner",
            format!("/v1/keys?owner={good}&label=x%3D{good}"),
        ),
        ("secret as date", format!("/v1/keys?expiring_before={good}")),
        ("secret as limit", format!("/v1/keys?limit={good}")),
        ("secret as unknown parameter", format!("/v1/keys?{good}=1")),
        ("secret as event cursor", format!("/v1/events?after={good}")),
        ("secret as route", format!("/v1/{good}")),
    ] {
        let (s, _) = cap.call(&rt, what, c.get(format!("{url}{path}")).bearer_auth(&write));
        assert!(s.is_client_error() || s == StatusCode::OK, "{what}: {s}");
        let (s, _) = cap.call(
            &rt,
            &format!("{what} (post)"),
            c.post(format!("{url}{path}"))
                .bearer_auth(&write)
                .json(&json!({})),
        );
        assert!(s.is_client_error(), "{what} (post): {s}");
    }
    let key_url = format!("{url}/v1/keys/{id}");
    let patch = json!({ "purpose": "console edit" });
    for (what, header, value) in [
        ("secret as If-Match", "If-Match", good.clone()),
        (
            "secret as commit",
            "X-Keyward-Commit",
            format!("{good}{good}"),
        ),
        ("secret as If-None-Match", "If-None-Match", good.clone()),
    ] {
        let req = if header == "If-None-Match" {
            c.get(&key_url).bearer_auth(&write).header(header, value)
        } else {
            c.patch(&key_url)
                .bearer_auth(&write)
                .header("If-Match", "\"1\"")
                .header(header, value)
                .json(&patch)
        };
        let (s, _) = cap.call(&rt, what, req);
        assert!(s.is_client_error() || s == StatusCode::OK, "{what}: {s}");
    }
    cap.expect(
        &rt,
        "patch with the secret as a value",
        c.patch(&key_url)
            .bearer_auth(&write)
            .header("If-Match", "\"1\"")
            .json(&json!({ "scopes": good })),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let (s, _) = cap.call(
        &rt,
        "rotate with the secret as hash",
        c.post(format!("{key_url}/rotate"))
            .bearer_auth(&write)
            .header("If-Match", "\"1\"")
            .json(&json!({
        "secret_hash": good, "issued_at": chrono::Utc::now(), "generation": 2,
        "spec_generation": 1, "recipients": { "jdoe": "fp" } })),
    );
    assert!(s.is_client_error(), "{s}");
    cap.expect(
        &rt,
        "secret as lease id",
        c.delete(format!("{url}/v1/locks/{good}"))
            .bearer_auth(&write),
        StatusCode::NO_CONTENT,
    );
    cap.expect(
        &rt,
        "secret as key id to delete",
        c.delete(format!("{url}/v1/keys/{good}"))
            .bearer_auth(&write)
            .header("If-Match", "\"1\""),
        StatusCode::NOT_FOUND,
    );
    cap.expect(
        &rt,
        "lock with a wrong ttl",
        c.post(format!("{url}/v1/locks"))
            .bearer_auth(&write)
            .json(&json!({ "holder": "canary", "ttl_seconds": good })),
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    // A secret pasted into what the service keeps and shows (a key's text fields, a
    // change, a lock holder, an event, the headers it records) is refused, not stored.
    let (pasted, _) = new_key("canary-pasted", "production", None);
    for (what, field, value) in [
        (
            "secret in a purpose",
            "purpose",
            json!(format!("the key is {good}")),
        ),
        ("secret in a label", "labels", json!({ "note": good })),
        (
            "secret as a label name",
            "labels",
            json!({ good.clone(): "x" }),
        ),
        ("secret as a name", "name", json!(good)),
    ] {
        let mut body = pasted.clone();
        body[field] = value;
        let (s, _) = cap.call(
            &rt,
            what,
            c.post(format!("{url}/v1/keys"))
                .bearer_auth(&write)
                .json(&body),
        );
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
    }
    let (_, current) = cap.call(&rt, "get the key", c.get(&key_url).bearer_auth(&read));
    let current = format!("\"{}\"", current["version"]);
    cap.expect(
        &rt,
        "secret in a patched label",
        c.patch(&key_url)
            .bearer_auth(&write)
            .header("If-Match", &current)
            .json(&json!({ "labels": { "note": good } })),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    cap.expect(
        &rt,
        "secret as lock holder",
        c.post(format!("{url}/v1/locks"))
            .bearer_auth(&write)
            .json(&json!({ "holder": good, "ttl_seconds": 60 })),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    cap.expect(
        &rt,
        "secret in an event",
        c.post(format!("{url}/v1/events"))
            .bearer_auth(&write)
            .json(&json!({ "action": "note", "detail": { "said": good } })),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    cap.expect(
        &rt,
        "secret as Idempotency-Key",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .header("Idempotency-Key", &good)
            .json(&pasted),
        StatusCode::BAD_REQUEST,
    );
    cap.expect(
        &rt,
        "secret as the commit",
        c.post(format!("{url}/v1/keys"))
            .bearer_auth(&write)
            .header("X-Keyward-Commit", &good)
            .json(&pasted),
        StatusCode::BAD_REQUEST,
    );
    cap.expect(
        &rt,
        "secret as the commit of a change",
        c.patch(&key_url)
            .bearer_auth(&write)
            .header("If-Match", &current)
            .header("X-Keyward-Commit", &good)
            .json(&patch),
        StatusCode::BAD_REQUEST,
    );

    // Rotate, replace (owner change) and revoke (removal) through apply.
    let next = KEYS
        .replace("rotation: { generation: 1 }", "rotation: { generation: 2 }")
        .replace("    owner: asmith\n", "    owner: rkumar\n");
    let next: String = next
        .split("  - name: ")
        .filter(|s| !s.starts_with("feed"))
        .collect::<Vec<_>>()
        .join("  - name: ");
    r.write_keys(&next);
    run(&r, &mut cap, "plan rotate", &["plan"], None);
    let o = run(
        &r,
        &mut cap,
        "apply rotate",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    secrets.extend(r.check_invariants_in("after rotate", &[], &stores));
    assert!(secrets.len() >= 6, "{}", secrets.len());
    // The previous secret of the rotated key still verifies in its grace period, the
    // revoked one answers `revoked`: both are searched for below.
    for s in &secrets {
        cap.call(
            &rt,
            "verify every secret",
            c.post(&verify_url).bearer_auth(&verify).json(&v(s)),
        );
    }

    // Drift: a console edit through the API, seen by plan and repaired by apply.
    let (s, keys) = cap.call(
        &rt,
        "list keys",
        c.get(format!("{url}/v1/keys")).bearer_auth(&read),
    );
    assert_eq!(s, StatusCode::OK);
    let ill = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["name"] == "ill-lookup" && k["status"] == "active")
        .cloned()
        .expect("ill-lookup");
    let ill_url = format!("{url}/v1/keys/{}", ill["id"].as_str().expect("id"));
    let etag = format!("\"{}\"", ill["version"]);
    cap.expect(
        &rt,
        "read token edits",
        c.patch(&ill_url)
            .bearer_auth(&read)
            .header("If-Match", &etag)
            .json(&json!({ "scopes": ["bibs:write"] })),
        StatusCode::FORBIDDEN,
    );
    cap.expect(
        &rt,
        "stale edit",
        c.patch(&ill_url)
            .bearer_auth(&write)
            .header("If-Match", "\"999\"")
            .json(&json!({ "scopes": ["bibs:write"] })),
        StatusCode::PRECONDITION_FAILED,
    );
    cap.expect(
        &rt,
        "console edit",
        c.patch(&ill_url)
            .bearer_auth(&write)
            .header("If-Match", &etag)
            .json(&json!({ "scopes": ["bibs:write"] })),
        StatusCode::OK,
    );
    let o = run(
        &r,
        &mut cap,
        "plan drift",
        &["plan", "--format", "json"],
        None,
    );
    assert!(o.stdout.contains("drift"), "{}", o.all());
    let o = run(
        &r,
        &mut cap,
        "apply drift",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    run(&r, &mut cap, "keys", &["keys", "--format", "json"], None);
    run(&r, &mut cap, "keys text", &["keys"], None);
    // apply with a token that may not write, and with none.
    // plan needs only a read token; apply with one is refused.
    let o = r.run_with(&["plan"], &[TRACE[0], (TOKEN_ENV, read.as_str())], None);
    cap.out("plan with a read token", &o);
    assert_eq!(o.code, 0, "{}", o.all());
    // An edit, so that apply has something to do with the read token.
    r.write_keys(&next.replace(
        "scopes: [analytics:read]",
        "scopes: [analytics:read, bibs:read]",
    ));
    let o = r.run_with(
        &["apply", "--auto-approve"],
        &[TRACE[0], (TOKEN_ENV, read.as_str())],
        None,
    );
    cap.out("apply with a read token", &o);
    assert_ne!(o.code, 0, "a read token applied: {}", o.all());
    r.write_keys(&next);
    let o2 = r.run_with(&["plan"], &[TRACE[0], (TOKEN_ENV, good.as_str())], None);
    cap.out("plan with the secret as token", &o2);
    assert_ne!(o2.code, 0, "{}", o2.all());
    r.assert_plan_empty("final");
    cap.call(
        &rt,
        "events",
        c.get(format!("{url}/v1/events?limit=1000"))
            .bearer_auth(&read),
    );
    cap.call(
        &rt,
        "capabilities",
        c.get(format!("{url}/v1/capabilities")).bearer_auth(&read),
    );
    cap.call(&rt, "health", c.get(format!("{url}/healthz")));
    cap.files(r.root(), "the end");

    // The server's output and every file it wrote (database, -wal, -shm, pepper, tokens).
    std::thread::sleep(std::time::Duration::from_millis(300));
    cap.push("server stdout".into(), server.stdout_bytes());
    cap.files(srv.path(), "the end (server)");
    let log = server.stop();
    cap.push("server stderr".into(), log.clone().into_bytes());

    // The needles.
    let mut needles: Vec<(String, String)> = Vec::new();
    for s in &secrets {
        needles.push(("a secret".into(), s.clone()));
        needles.push(("a secret's SHA-256".into(), sha256_hex(s)));
        needles.push((
            "a secret's body".into(),
            s[s.len() - 60..s.len() - 8].to_string(),
        ));
    }
    needles.push(("the tampered secret".into(), tampered.clone()));
    for (who, t) in [
        ("write", &write),
        ("read", &read),
        ("verify", &verify),
        ("revoked", &gone),
    ] {
        needles.push((format!("the {who} token"), t.clone()));
        needles.push((
            format!("the {who} token's body"),
            t[t.len() - 48..].to_string(),
        ));
    }
    for who in ["jdoe", "asmith", "rkumar"] {
        let text = r.identity_text(who);
        needles.push((format!("{who}'s identity"), text.clone()));
        needles.push((
            format!("{who}'s identity body"),
            text["AGE-SECRET-KEY-".len()..].to_string(),
        ));
    }

    // Sanity: the capture holds what it should, and trace logging reached the server.
    assert!(
        cap.items.len() > 150,
        "captured only {} items",
        cap.items.len()
    );
    for want in [
        "serve.db",
        "tokens.yaml",
        "response head of",
        "server stderr",
    ] {
        assert!(
            cap.items.iter().any(|(w, _)| w.contains(want)),
            "nothing captured from {want}"
        );
    }
    // (The server's own events are info and error ones; the client side traces.)
    assert!(log.lines().count() > 20, "the server logged little: {log}");
    assert!(
        cap.items
            .iter()
            .any(|(w, b)| w.starts_with("stderr of apply") && hits(b, "TRACE")),
        "apply did not trace"
    );
    assert!(hits(b"xx kw_prod_ABC yy", "kw_prod_abc"));

    let mut found = Vec::new();
    for (where_, bytes) in &cap.items {
        for (what, needle) in &needles {
            if hits(bytes, needle) {
                found.push(format!("{what} in {where_}"));
            }
        }
    }
    found.dedup();
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
}
