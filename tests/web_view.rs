//! The web view, for real: `keyward serve`'s `/ui/` over loopback (sign-in with wrong, verify
//! and read tokens, cookie attributes, Content-Security-Policy, server-side filters, sign-out,
//! a revoked token ending its session), first over plain HTTP, then driven in headless
//! Chromium through chromedriver (JavaScript filters, a key page's events, each key's last
//! use as the server counted it, sign-in and out);
//! and the static site of `keyward report --html` in Chromium, with and without JavaScript
//! (filters, sorting, a key page's events, the timeline, keyboard focus, screenshots).

mod certs_common;
mod needs;
mod report_common;
mod serve_common;
mod webdriver;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serve_common::{Api, Server, make_token, new_key, status_of};
use webdriver::Browser;

struct Live {
    _dir: tempfile::TempDir,
    server: Server,
    read: String,
    verify: String,
    /// Secrets and secret hashes of the keys created (never on a page).
    secrets: Vec<String>,
}

/// A server with read, write and verify tokens and two keys, created through the API.
async fn live() -> Live {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.yaml");
    let write = make_token(&tokens, "ci-apply", "write");
    let read = make_token(&tokens, "librarian", "read");
    let verify = make_token(&tokens, "app", "verify");
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    let mut secrets = Vec::new();
    for (name, owner) in [("ill-lookup", "jdoe"), ("reports", "asmith")] {
        let (mut body, secret) = new_key(name, "production", Some(100));
        body["owner"] = owner.into();
        secrets.push(body["secret_hash"].as_str().unwrap().to_string());
        secrets.push(secret);
        let st = status_of(api.post("/v1/keys", &write).json(&body)).await;
        assert_eq!(st, StatusCode::CREATED);
    }
    Live {
        _dir: dir,
        server,
        read,
        verify,
        secrets,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn sign_in(c: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    c.post(format!("{base}/ui/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("post the sign-in form")
}

async fn page(c: &reqwest::Client, url: &str, cookie: &str) -> (StatusCode, String) {
    let r = c
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    (r.status(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_signs_in_with_a_read_token_only_and_serves_live_pages() {
    let l = live().await;
    let base = l.server.url.clone();
    let c = no_redirects();
    // Not signed in: every page sends to the sign-in form; the assets are public.
    let r = c.get(format!("{base}/ui/keys.html")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/signin");
    let r = c.get(format!("{base}/ui/signin")).send().await.unwrap();
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    let form = r.text().await.unwrap();
    assert!(form.contains("method=\"post\" action=\"signin\""), "{form}");
    let r = c
        .get(format!("{base}/ui/assets/report.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A wrong token and a verify-only token are refused, without a cookie.
    let r = sign_in(&c, &base, "kwt_not-a-token").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = sign_in(&c, &base, &l.verify).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let body = r.text().await.unwrap();
    assert!(body.contains("role `verify`"), "{body}");
    assert!(!body.contains(&l.verify), "the token is never echoed");
    // Another site's form is refused.
    let r = c
        .post(format!("{base}/ui/signin"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", l.read))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = c
        .post(format!("{base}/ui/signin"))
        .header("sec-fetch-site", "cross-site")
        .body(format!("token={}", l.read))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A read token: a session cookie that holds no token.
    let r = sign_in(&c, &base, &l.read).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: no Secure flag ({set})"
    );
    assert!(!set.contains(&l.read));
    let cookie = set.split(';').next().unwrap().to_string();
    // Live pages, filtered on the server (no JavaScript needed).
    let (st, html) = page(&c, &format!("{base}/ui/"), &cookie).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        html.contains("<h1>Overview</h1>") && html.contains("reports"),
        "{html}"
    );
    let (_, html) = page(&c, &format!("{base}/ui/keys.html?owner=asmith"), &cookie).await;
    assert!(html.contains("1 of 2 keys (filtered)"), "{html}");
    assert!(
        html.contains("keyward request"),
        "every page says how to change things"
    );
    let (st, html) = page(&c, &format!("{base}/ui/keys/serve/reports.html"), &cookie).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        html.contains("id=\"key-events\"") && html.contains("ci-apply"),
        "{html}"
    );
    for s in l.secrets.iter().chain([&l.read, &l.verify]) {
        assert!(
            !html.contains(s.as_str()),
            "a secret, hash or token on a page"
        );
    }
    let (st, _) = page(&c, &format!("{base}/ui/keys/../../v1/keys"), &cookie).await;
    assert_ne!(st, StatusCode::OK);
    // Sign out ends the session.
    let r = c
        .post(format!("{base}/ui/signout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (st, _) = page(&c, &format!("{base}/ui/"), &cookie).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    // Revoking the token ends its sessions (the tokens file is reloaded within seconds).
    let set = sign_in(&c, &base, &l.read).await.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(
        page(&c, &format!("{base}/ui/"), &cookie).await.0,
        StatusCode::OK
    );
    let o = std::process::Command::new(serve_common::bin())
        .args(["token", "revoke", "librarian", "--tokens"])
        .arg(l.server.dir.join("tokens.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut ended = false;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if page(&c, &format!("{base}/ui/"), &cookie).await.0 == StatusCode::SEE_OTHER {
            ended = true;
            break;
        }
    }
    assert!(ended, "a revoked token's session must end");
}

/// Three valid verifies of ill-lookup, waited for until the server has written them (its
/// usage flush runs every 2 s).
async fn used_three_times(l: &Live) {
    let api = Api::new(&l.server);
    for _ in 0..3 {
        let call = api.post("/v1/verify", &l.verify);
        let v = serve_common::json_of(call.json(&serde_json::json!({ "key": l.secrets[1] }))).await;
        assert_eq!(v["valid"], true, "{v}");
    }
    let started = std::time::Instant::now();
    loop {
        let u = serve_common::json_of(api.get("/v1/usage?since=0000-01-01", &l.read)).await;
        if u["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "never flushed: {u}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The number of rows of the keys table the browser shows.
async fn visible_rows(b: &Browser) -> u64 {
    let v = b
        .script(
            "return Array.from(document.querySelectorAll('#keys tbody tr')).filter(function (r) { return r.offsetParent !== null; }).length;",
            serde_json::json!([]),
        )
        .await;
    v.as_u64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_in_chromium_signs_in_filters_shows_events_and_signs_out() {
    if !needs::tool(&needs::CHROMIUM) || !needs::tool(&needs::CHROMEDRIVER) {
        return;
    }
    let l = live().await;
    let base = l.server.url.clone();
    let used_on = chrono::Utc::now().format("%Y-%m-%d").to_string();
    used_three_times(&l).await;
    let b = Browser::start().await;
    b.goto(&format!("{base}/ui/")).await;
    assert!(b.url().await.ends_with("/ui/signin"), "{}", b.url().await);
    for (token, expect) in [
        ("kwt_wrong", "Unknown or revoked token"),
        (l.verify.as_str(), "role `verify`"),
    ] {
        // A fresh sign-in page each time: the error of the previous try must not be the
        // element found (it goes stale when the answer to this try replaces the page).
        b.goto(&format!("{base}/ui/signin")).await;
        let input = b.find("#token").await;
        b.type_into(&input, token).await;
        b.click(&b.find("#signin button[type=submit]").await).await;
        let err = b.wait_for("#signin-error").await;
        let text = b.text(&err).await;
        assert!(text.contains(expect), "{text}");
        assert!(b.url().await.ends_with("/ui/signin"));
        assert!(
            !b.url().await.contains(token),
            "the token never goes in a URL"
        );
    }
    b.type_into(&b.find("#token").await, &l.read).await;
    b.click(&b.find("#signin button[type=submit]").await).await;
    // The sign-in page has a `main h1` too: read the heading only once the browser is on
    // the overview, so the element found is never the old page's (a stale reference).
    let started = std::time::Instant::now();
    while b.url().await != format!("{base}/ui/") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never reached the overview: {}",
            b.url().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let h1 = b.wait_for("main h1").await;
    assert_eq!(b.text(&h1).await, "Overview");
    b.screenshot(&report_common::artifact("live-overview.png"))
        .await;
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "keyward_ui")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    // The script filters in place (the server would too, on submit).
    b.goto(&format!("{base}/ui/keys.html")).await;
    b.wait_for("#keys").await;
    assert_eq!(visible_rows(&b).await, 2);
    // Each key's last use, as the server counted it: ill-lookup today, reports never.
    let cells = b
        .script(
            "var h = Array.from(document.querySelectorAll('#keys thead th')).map(function (t) { return t.textContent; });\
             var i = h.indexOf('Last used');\
             var cell = function (n) { return document.querySelector('#keys tr[data-name=\"' + n + '\"]').children[i].textContent; };\
             return [i, cell('ill-lookup'), cell('reports')];",
            serde_json::json!([]),
        )
        .await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(cells[0].as_i64().unwrap() > 0, "{cells}");
    // (the day the calls were made: the one the test began on, or the next past midnight)
    assert!(
        cells[1] == used_on.as_str() || cells[1] == today.as_str(),
        "{cells}"
    );
    assert_eq!(cells[2], "never used", "{cells}");
    b.click(&b.find("#f-owner option[value=asmith]").await)
        .await;
    assert_eq!(visible_rows(&b).await, 1);
    // A key page shows its events.
    b.click(&b.find("#keys a[href$='reports.html']").await)
        .await;
    let events = b.wait_for("#key-events").await;
    let text = b.text(&events).await;
    assert!(
        text.contains("ci-apply") && text.contains("create"),
        "{text}"
    );
    b.click(&b.find("form.signout button").await).await;
    b.wait_for("#signin").await;
    assert!(b.url().await.ends_with("/ui/signin"));
    b.goto(&format!("{base}/ui/keys.html")).await;
    assert!(b.url().await.ends_with("/ui/signin"), "signed out");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_over_tls_marks_the_session_cookie_secure() {
    if !needs::tool(&needs::OPENSSL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let read = make_token(&dir.path().join("tokens.yaml"), "librarian", "read");
    let (ca, cert, key) = certs_common::make_certs(dir.path(), "ui");
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let tls = ["--tls-cert", cert.as_ref(), "--tls-key", key.as_ref()];
    let server = Server::start_with(
        dir.path(),
        "sqlite:serve.db",
        "127.0.0.1:0",
        &tls,
        None,
        &[],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let r = sign_in(&c, &server.url, &read).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly"),
        "{set}"
    );
}

/// How many rows of the keys table in `html` belong to `owner` (read from the file, not
/// from the browser).
fn rows_of_owner(html: &str, owner: &str) -> usize {
    html.matches(&format!("data-owner=\"{owner}\"")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_in_chromium_filters_sorts_shows_events_and_the_timeline() {
    if !needs::tool(&needs::CHROMIUM) || !needs::tool(&needs::CHROMEDRIVER) {
        return;
    }
    serve_common::install_crypto();
    let (_lib, site) = report_common::library_site();
    let url = |p: &str| format!("file://{}/{p}", site.display());
    let keys_html = std::fs::read_to_string(site.join("keys.html")).unwrap();
    let jdoe = rows_of_owner(&keys_html, "jdoe");
    let b = Browser::start().await;
    // The overview, and its screenshot as the test's artifact.
    b.goto(&url("index.html")).await;
    let h1 = b.wait_for("main h1").await;
    assert_eq!(b.text(&h1).await, "Overview");
    let text = b.text(&b.find("main").await).await;
    for want in [
        "alma-production",
        "alma-sandbox",
        "Expiring",
        "Pending console steps",
    ] {
        assert!(text.contains(want), "{want} not on the overview:\n{text}");
    }
    let shot = report_common::artifact("report-overview.png");
    b.screenshot(&shot).await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "{}",
        shot.display()
    );
    eprintln!("overview screenshot: {}", shot.display());
    // Keyboard: the first Tab reaches the skip link, which is then visible.
    b.press("\u{E004}").await;
    let focused = b
        .script(
            "return document.activeElement.className;",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(focused, "skip");
    // The keys table: the script shows the form and filters in place.
    b.goto(&url("keys.html")).await;
    b.wait_for("#keys").await;
    let total = visible_rows(&b).await;
    assert!(
        total as usize > jdoe && jdoe > 0,
        "{total} rows, {jdoe} of jdoe"
    );
    assert!(b.displayed(&b.find("#filters").await).await);
    b.click(&b.find("#f-owner option[value=jdoe]").await).await;
    assert_eq!(visible_rows(&b).await as usize, jdoe);
    let caption = b.text(&b.find("#keys caption").await).await;
    assert!(
        caption.contains(&format!("{jdoe} of {total} keys")),
        "{caption}"
    );
    b.click(&b.find("#f-store option[value=alma-sandbox]").await)
        .await;
    assert!((visible_rows(&b).await as usize) < jdoe);
    b.click(&b.find("#f-owner option[value='']").await).await;
    b.click(&b.find("#f-store option[value='']").await).await;
    assert_eq!(visible_rows(&b).await, total);
    // Sorting by expiry: the dates that are shown come in order.
    b.click(&b.find("th[data-sort=expires] a").await).await;
    let dates = b
        .script(
            "return Array.from(document.querySelectorAll('#keys tbody tr')).map(function (r) { return r.dataset.expires; }).filter(function (d) { return d; });",
            serde_json::json!([]),
        )
        .await;
    let dates: Vec<String> = serde_json::from_value(dates).unwrap();
    assert!(
        dates.len() > 1 && dates.windows(2).all(|w| w[0] <= w[1]),
        "{dates:?}"
    );
    // A key page shows its events and where it is defined.
    b.click(
        &b.find("#keys a[href$='alma-production/illiad-barcode-lookup.html']")
            .await,
    )
    .await;
    let events = b.wait_for("#key-events").await;
    let text = b.text(&events).await;
    assert!(text.contains("create"), "{text}");
    let page = b.text(&b.find("main").await).await;
    assert!(page.contains("keys/interlibrary-loan.yaml"), "{page}");
    // The timeline renders: bars with a height, and a text alternative.
    b.goto(&url("timeline.html")).await;
    b.wait_for("svg.timeline").await;
    let height = b
        .script(
            "return Array.from(document.querySelectorAll('svg.timeline rect.bar')).reduce(function (a, r) { return a + r.getBBox().height; }, 0);",
            serde_json::json!([]),
        )
        .await;
    assert!(height.as_f64().unwrap_or(0.0) > 10.0, "{height}");
    let title = b
        .script(
            "return document.querySelector('svg.timeline > title').textContent;",
            serde_json::json!([]),
        )
        .await;
    assert!(
        title.as_str().unwrap_or_default().contains("expiring"),
        "{title}"
    );
    b.screenshot(&report_common::artifact("report-timeline.png"))
        .await;
    b.quit().await;

    // Without JavaScript: the form stays hidden, the pre-rendered filtered lists work.
    let b = Browser::start_with(&["--blink-settings=scriptEnabled=false"]).await;
    b.goto(&url("keys.html")).await;
    b.wait_for("#keys").await;
    assert!(!b.displayed(&b.find("#filters").await).await);
    assert_eq!(b.find_all("#keys tbody tr").await.len() as u64, total);
    b.click(
        &b.find(".filter-links a[href$='filter/owner-jdoe.html']")
            .await,
    )
    .await;
    b.wait_for("#keys").await;
    assert!(b.url().await.ends_with("filter/owner-jdoe.html"));
    assert_eq!(b.find_all("#keys tbody tr").await.len(), jdoe);
    b.quit().await;
}
