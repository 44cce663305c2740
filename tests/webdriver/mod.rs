//! A small W3C WebDriver client over reqwest, enough for the web view's browser tests:
//! start Debian's `chromedriver` on a free loopback port, open a headless Chromium session
//! with a fresh profile, navigate, find elements, read text and attributes, click, type,
//! run a script and take a screenshot. The driver and the browser end when `Browser` drops.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// One element of the current page.
#[derive(Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Start chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// `start`, with more Chromium switches (e.g. JavaScript off).
    pub async fn start_with(extra: &[&str]) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1600".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.expect("talk to chromedriver");
        let status = resp.status();
        let v: Value = resp.json().await.expect("a WebDriver JSON answer");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn s(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.s("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    pub async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, &self.s("/url"), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .call(reqwest::Method::POST, &self.s("/elements"), Some(body))
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.into())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`; fails the test when there is none.
    pub async fn find(&self, css: &str) -> Element {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element matches `{css}`"))
    }

    pub async fn text(&self, e: &Element) -> String {
        let v = self
            .call(
                reqwest::Method::GET,
                &self.s(&format!("/element/{}/text", e.0)),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    pub async fn displayed(&self, e: &Element) -> bool {
        let v = self
            .call(
                reqwest::Method::GET,
                &self.s(&format!("/element/{}/displayed", e.0)),
                None,
            )
            .await;
        v == true
    }

    pub async fn click(&self, e: &Element) {
        self.call(
            reqwest::Method::POST,
            &self.s(&format!("/element/{}/click", e.0)),
            None,
        )
        .await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        let body = json!({"text": text});
        self.call(
            reqwest::Method::POST,
            &self.s(&format!("/element/{}/value", e.0)),
            Some(body),
        )
        .await;
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        let body = json!({"script": script, "args": args});
        self.call(reqwest::Method::POST, &self.s("/execute/sync"), Some(body))
            .await
    }

    /// Press a key on whatever has the focus (`\u{E004}` is Tab), as a user would.
    pub async fn press(&self, key: &str) {
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
        ]}]});
        self.call(reqwest::Method::POST, &self.s("/actions"), Some(body))
            .await;
    }

    /// The browser's cookies for the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self
            .call(reqwest::Method::GET, &self.s("/cookie"), None)
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Wait until `css` matches an element (pages load after a form submits).
    pub async fn wait_for(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "`{css}` never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Save a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self
            .call(reqwest::Method::GET, &self.s("/screenshot"), None)
            .await;
        let png = base64_decode(v.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Browser {
    /// End the session (Chromium closes), then the driver.
    pub async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium talks to the driver over a pipe and exits when the driver does.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver's screenshot answers), whitespace ignored.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
