//! Shared helpers for the `keyward serve` tests: start the real binary on a free loopback
//! port with a fresh SQLite database and tokens, and talk to it with reqwest (`Api`, `send`,
//! `status_of`, `json_of`: one request per line in the tests).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use reqwest::RequestBuilder;

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("keyward")
}

/// Make a token with `keyward token create` and return it (stdout is the token alone).
pub fn make_token(tokens: &Path, name: &str, role: &str) -> String {
    let o = Command::new(bin())
        .args(["token", "create", name, "--role", role, "--tokens"])
        .arg(tokens)
        .output()
        .expect("run keyward token create");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "stdout must hold the token alone");
    out.trim().to_string()
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Server {
    /// Start `keyward serve` in `dir` (database `dir/serve.db`, tokens `dir/tokens.yaml`).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_database(dir, "sqlite:serve.db", env)
    }

    /// Start `keyward serve` in `dir` on `database` (tokens `dir/tokens.yaml`).
    pub fn start_with_database(dir: &Path, database: &str, env: &[(&str, &str)]) -> Server {
        Server::start_on(dir, database, "127.0.0.1:0", env)
    }

    /// Start `keyward serve` in `dir` on `database`, listening on `listen` (e.g. the
    /// address of a server that was killed, to restart it where its clients look).
    pub fn start_on(dir: &Path, database: &str, listen: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with(dir, database, listen, &[], None, env)
    }

    /// Start `keyward serve` in `dir` with `extra` arguments; with `ulimit` (shell `ulimit`
    /// arguments, e.g. `-Sn 1024`) it runs under those resource limits.
    pub fn start_with(
        dir: &Path,
        database: &str,
        listen: &str,
        extra: &[&str],
        ulimit: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = match ulimit {
            None => Command::new(bin()),
            Some(limits) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit {limits} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
        };
        cmd.arg("-C")
            .arg(dir)
            .args(["serve", "--listen", listen, "--database", database])
            .args(["--tokens", "tokens.yaml"])
            .args(extra)
            .env_remove("KEYWARD_NOW")
            .env_remove("KEYWARD_SERVE_TOKENS")
            .env("KEYWARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start keyward serve");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out2 = out.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdout = stdout;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                    sent = true;
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("keyward serve did not start: {}", log.lock().unwrap());
            }
        };
        install_crypto();
        Server {
            child,
            url,
            dir: dir.to_path_buf(),
            stderr: log,
            stdout: out,
        }
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve the SQLite file `db` (a repository's store) with the clock at `now`, verify each
/// secret of `calls` as many times as given (each must be valid), and stop gracefully, so
/// the usage is written on stop. A token is made in `token_file` (its directory is the
/// server's).
pub async fn verify_calls(db: &Path, token_file: &Path, now: &str, calls: &[(&str, usize)]) {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let token = make_token(token_file, &format!("app-{n}"), "verify");
    let db = format!("sqlite:{}", db.display());
    let mut s = Server::start_with(
        token_file.parent().unwrap(),
        &db,
        "127.0.0.1:0",
        &[],
        None,
        &[("KEYWARD_NOW", now)],
    );
    let c = client();
    for (secret, n) in calls {
        for _ in 0..*n {
            let call = c.post(format!("{}/v1/verify", s.url)).bearer_auth(&token);
            let v = json_of(call.json(&serde_json::json!({ "key": secret }))).await;
            assert_eq!(v["valid"], true, "{v}");
        }
    }
    let pid = s.child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let _ = s.child.wait();
    assert!(s.log().contains("usage written on stop"), "{}", s.log());
}

pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A new key's JSON for `POST /v1/keys` and its secret.
pub fn new_key(name: &str, environment: &str, quota: Option<u64>) -> (serde_json::Value, String) {
    let id = keyward::secret::new_key_id();
    let secret = keyward::secret::generate(environment, &id);
    let now = chrono::Utc::now();
    let v = serde_json::json!({
        "id": id,
        "name": name,
        "environment": environment,
        "owner": "jdoe",
        "purpose": "test",
        "scopes": ["bibs:read"],
        "labels": { "ticket": "T-1" },
        "status": "active",
        "issued_at": now - chrono::Duration::minutes(1),
        "expires_at": now + chrono::Duration::days(30),
        "lifetime": null,
        "generation": 1,
        "spec_generation": 1,
        "recipients": { "jdoe": "fp" },
        "quota_per_day": quota,
        "protected": false,
        "managed_by": "keyward",
        "secret_hash": secret.hash().0,
    });
    (v, secret.expose().to_string())
}

/// Requests to one running server by path, with a bearer token where the route needs one.
pub struct Api {
    pub c: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            c: client(),
            base: server.url.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with `Authorization: Bearer token`.
    pub fn request(&self, method: reqwest::Method, path: &str, token: &str) -> RequestBuilder {
        self.c.request(method, self.url(path)).bearer_auth(token)
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(reqwest::Method::GET, path, token)
    }

    pub fn post(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(reqwest::Method::POST, path, token)
    }

    pub fn patch(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(reqwest::Method::PATCH, path, token)
    }

    pub fn delete(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(reqwest::Method::DELETE, path, token)
    }
}

/// Sends `req`; a transport error fails the test.
pub async fn send(req: RequestBuilder) -> reqwest::Response {
    req.send().await.expect("send the request")
}

/// Sends `req` and returns the answer's status.
pub async fn status_of(req: RequestBuilder) -> reqwest::StatusCode {
    send(req).await.status()
}

/// Sends `req` and returns the answer's body as JSON (a body that is not JSON fails the test).
pub async fn json_of(req: RequestBuilder) -> serde_json::Value {
    send(req).await.json().await.expect("a JSON answer")
}

/// `n` verifies of `keys` round-robin over `bases`, 16 at a time; the reasons answered in
/// order of the calls.
pub async fn burst(bases: &[&str], token: &str, keys: &[&str], n: usize) -> Vec<String> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..n.min(i + 16))
            .map(|j| {
                let req = c
                    .post(format!("{}/v1/verify", bases[j % bases.len()]))
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "key": keys[j % keys.len()] }));
                tokio::spawn(
                    async move { req.send().await.unwrap().json::<serde_json::Value>().await },
                )
            })
            .collect();
        for t in batch {
            let v = t.await.unwrap().unwrap();
            out.push(v["reason"].as_str().unwrap().to_owned());
        }
        i += 16;
    }
    out
}
