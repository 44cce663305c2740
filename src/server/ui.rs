//! `/ui/`: the web view served live by `keyward serve` for its store. Sign in with a read
//! token (a POSTed form; the server keeps the session: a random id in an HttpOnly,
//! SameSite=Strict cookie, Secure when served over TLS, and only the SHA-256 of the id and of
//! the token server-side), sign out, every page rebuilt from the live store, a strict
//! Content-Security-Policy. Read-only: must not change the store, and must never put a token
//! in a URL, a page, a cookie or a log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::AppState;
use super::tokens::{Principal, Role};
use crate::report::html::{self, Ctx, Section};
use crate::report::{self, Inputs, KeyQuery, Mode, Report, StoreView, gather, site};

/// The session cookie's name.
pub const COOKIE: &str = "keyward_ui";
/// How long a session lasts (it also ends when its token is revoked).
pub const SESSION_HOURS: i64 = 12;
/// Most sessions kept; the oldest go first.
pub const MAX_SESSIONS: usize = 10_000;
/// No inline script or style, nothing from another origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How `keyward serve` offers the web view.
#[derive(Debug, Clone, Default)]
pub struct UiOptions {
    /// The key repository whose spec, deliveries and git history the pages show next to
    /// the live store (None: the store alone).
    pub repo: Option<PathBuf>,
    /// Mark the session cookie `Secure` (set when the server speaks TLS).
    pub secure_cookie: bool,
}

struct Session {
    /// SHA-256 of the token that signed in, so a revoked token ends the session.
    token: [u8; 32],
    created: DateTime<Utc>,
}

struct Ui {
    opts: UiOptions,
    /// SHA-256 of the session id -> session.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

/// The `/ui` routes, to merge into the service's router.
pub fn router(opts: UiOptions) -> Router<Arc<AppState>> {
    let ui = Arc::new(Ui {
        opts,
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/signin", get(signin_form).post(signin))
        .route("/ui/signout", post(signout))
        .route("/ui/{*path}", get(page))
        .layer(Extension(ui))
}

// ------------------------------------------------------------------ responses

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut resp);
    resp
}

fn redirect(to: &'static str) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    secure_headers(&mut resp);
    resp
}

/// A report with nothing in it, for the pages drawn before sign-in.
fn empty_report(app: &AppState) -> Report {
    report::build(
        None,
        Inputs {
            title: "keyward serve".into(),
            ..Inputs::default()
        },
        app.clock.now(),
    )
}

fn signin_page(app: &AppState, status: StatusCode, problem: Option<&str>) -> Response {
    let r = empty_report(app);
    let cx = Ctx {
        report: &r,
        mode: Mode::Live,
        root: "",
    };
    html_response(status, html::signin_page(&cx, problem))
}

// ------------------------------------------------------------------ forms and cookies

/// Decode one `application/x-www-form-urlencoded` component.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pairs of a query string or form body (at most 50; longer input is ignored).
fn pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .take(50)
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(|v| hex::decode(v.trim()).ok()?.try_into().ok())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Ui {
    /// The principal of a live session: not expired, and its token still valid for reading.
    fn principal(&self, app: &AppState, headers: &HeaderMap) -> Option<Principal> {
        let key = digest(&session_id(headers)?);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = sessions.get(&key)?;
        let alive = app.clock.now() < s.created + Duration::hours(SESSION_HOURS);
        match app.tokens().authenticate_digest(&s.token) {
            Some(p) if alive && p.role.allows(Role::Read) => Some(p),
            _ => {
                sessions.remove(&key);
                None
            }
        }
    }

    /// Start a session for `token`; returns the cookie to set.
    fn start(&self, app: &AppState, token: [u8; 32]) -> String {
        use rand::RngCore;
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let now = app.clock.now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| now < s.created + Duration::hours(SESSION_HOURS));
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&id),
            Session {
                token,
                created: now,
            },
        );
        self.cookie(&hex::encode(id), SESSION_HOURS * 3600)
    }

    fn cookie(&self, value: &str, max_age: i64) -> String {
        let secure = if self.opts.secure_cookie {
            "; Secure"
        } else {
            ""
        };
        format!("{COOKIE}={value}; Path=/ui/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }
}

/// A POST from another site is refused (login CSRF): browsers say where a request comes
/// from in `Sec-Fetch-Site`; without it, an `Origin` must name this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match text("origin") {
        None => true,
        Some(origin) => {
            let origin_host = origin.split_once("://").map(|(_, h)| h);
            origin_host.is_some() && origin_host == text("host")
        }
    }
}

// ------------------------------------------------------------------ handlers

async fn signin_form(
    State(app): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
) -> Response {
    if ui.principal(&app, &headers).is_some() {
        return redirect("/ui/");
    }
    signin_page(&app, StatusCode::OK, None)
}

async fn signin(
    State(app): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return signin_page(
            &app,
            StatusCode::FORBIDDEN,
            Some("Sign in from this site's own form."),
        );
    }
    let form = String::from_utf8_lossy(&body).into_owned();
    let token = Zeroizing::new(
        pairs(&form)
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
    );
    drop(Zeroizing::new(form));
    let presented = digest(token.as_bytes());
    match app.tokens().authenticate_digest(&presented) {
        None => signin_page(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("Unknown or revoked token: nothing was signed in."),
        ),
        Some(p) if !p.role.allows(Role::Read) => {
            let why = format!(
                "Token `{}` has role `{}`: the web view needs a read token.",
                p.name, p.role
            );
            signin_page(&app, StatusCode::FORBIDDEN, Some(&why))
        }
        Some(p) => {
            tracing::info!(token = %p.name, "web view: signed in");
            let cookie = ui.start(&app, presented);
            let mut resp = redirect("/ui/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

async fn signout(
    State(_app): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session_id(&headers) {
        let mut sessions = ui.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(&digest(&id));
    }
    let mut resp = redirect("/ui/signin");
    if let Ok(v) = HeaderValue::from_str(&ui.cookie("", 0)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn page(
    State(app): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let path = uri.path().strip_prefix("/ui/").unwrap_or("");
    if let Some((kind, text)) = site::asset(path) {
        let mut resp = ([(header::CONTENT_TYPE, kind)], text).into_response();
        secure_headers(&mut resp);
        return resp;
    }
    if ui.principal(&app, &headers).is_none() {
        return redirect("/ui/signin");
    }
    let query: Vec<(String, String)> = uri.query().map(pairs).unwrap_or_default();
    let q = KeyQuery::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let r = live_report(&app, &ui).await;
    match site::page(&r, Mode::Live, path, &q) {
        Some(body) => html_response(StatusCode::OK, body),
        None => {
            let root = "../".repeat(path.matches('/').count());
            let cx = Ctx {
                report: &r,
                mode: Mode::Live,
                root: &root,
            };
            let body = "<h1>Not found</h1><p>There is no such page. Start from the overview.</p>";
            html_response(
                StatusCode::NOT_FOUND,
                html::layout(&cx, "Not found", Section::Overview, body),
            )
        }
    }
}

/// The name and environment the served store has in the repository's spec: its only
/// `http` store (else `serve`, with the environment of its keys).
fn served_store(spec: Option<&crate::spec::Spec>) -> Option<(String, String)> {
    let mut http = spec?
        .stores
        .values()
        .filter(|s| matches!(s.kind, crate::spec::StoreKind::Http { .. }));
    match (http.next(), http.next()) {
        (Some(s), None) => Some((s.name.clone(), s.environment.clone())),
        _ => None,
    }
}

/// The report, read now from the live store (and the repository, when configured).
async fn live_report(app: &AppState, ui: &Ui) -> Report {
    let repo = ui.opts.repo.clone();
    let spec = match repo {
        Some(dir) => tokio::task::spawn_blocking(move || crate::spec::load(&dir).ok())
            .await
            .ok()
            .flatten()
            .map(|l| l.spec),
        None => None,
    };
    let named = served_store(spec.as_ref());
    let (name, environment) = named
        .clone()
        .unwrap_or_else(|| ("serve".into(), String::new()));
    let view = StoreView {
        name: name.clone(),
        environment,
        kind: "keyward serve".into(),
        error: None,
        knows_last_use: false,
    };
    let mut inputs = Inputs {
        title: format!("{name} (live)"),
        ..Inputs::default()
    };
    gather::read_stores(vec![(view, Arc::clone(&app.store))], &mut inputs).await;
    // Without a spec, the store's environment is that of its keys.
    if named.is_none()
        && let Some((view, keys)) = inputs.stores.first_mut()
        && let Some(k) = keys.first()
    {
        view.environment = k.environment.clone();
    }
    let now = app.clock.now();
    let Some(spec) = spec.filter(|_| named.is_some()) else {
        return report::build(None, inputs, now);
    };
    let built = tokio::task::spawn_blocking(move || {
        let git = crate::git::GitRepo::discover(&spec.root).ok().flatten();
        let outbox = crate::deliver::Outbox::new(spec.delivery.outbox.clone());
        gather::read_local(&spec, Some(&outbox), git.as_ref(), &mut inputs);
        report::build(Some(&spec), inputs, now)
    })
    .await;
    built.unwrap_or_else(|_| empty_report(app))
}
