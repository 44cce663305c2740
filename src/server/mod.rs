//! `keyward serve`: the key store as an HTTP service (axum on tokio) speaking the `/v1`
//! store protocol over any `Arc<dyn Store>`, with bearer tokens and roles, plus the
//! `keyward token` commands. Must not log or answer a secret, a secret hash or a token, and
//! must answer every malformed request with a JSON 4xx (never a panic).

pub mod alerts;
pub mod error;
pub mod idempotency;
pub mod idempotency_pg;
pub mod listen;
pub mod routes;
pub mod tokens;
pub mod ui;
pub mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::clock::{Clock, FixedClock};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyStatus, Store};
use error::ApiError;
use idempotency::{IdempotencyLog, SqliteIdempotency};
use idempotency_pg::PostgresIdempotency;
use tokens::{Role, Tokens};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7450";
/// Default tokens file, relative to the working directory (`-C`).
pub const DEFAULT_TOKENS: &str = ".keyward/tokens.yaml";

/// Shared state of the handlers.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub idempotency: Arc<dyn IdempotencyLog>,
    pub clock: Arc<dyn Clock>,
    tokens: RwLock<Arc<Tokens>>,
    /// How the web view at `/ui/` is offered.
    pub ui: ui::UiOptions,
    /// The verify calls counted since the last usage flush (`None`: usage is off).
    pub usage: Option<Arc<usage::Tally>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        idempotency: Arc<dyn IdempotencyLog>,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
    ) -> AppState {
        AppState {
            store,
            idempotency,
            clock,
            tokens: RwLock::new(Arc::new(tokens)),
            ui: ui::UiOptions::default(),
            usage: None,
        }
    }
    /// Count verify calls into `tally` (written to the store by `usage::spawn_flusher`).
    pub fn with_usage(mut self, tally: Arc<usage::Tally>) -> AppState {
        self.usage = Some(tally);
        self
    }
    /// Serve the web view with these options (the repository it shows, TLS cookies).
    pub fn with_ui(mut self, ui: ui::UiOptions) -> AppState {
        self.ui = ui;
        self
    }
    /// The tokens in force.
    pub fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()))
    }
    pub fn set_tokens(&self, t: Tokens) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
    }
}

/// The clock the server uses: `KEYWARD_NOW` (tests and demos only) fixes it at startup.
pub fn server_clock() -> Arc<dyn Clock> {
    match std::env::var("KEYWARD_NOW")
        .ok()
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v.trim()).ok())
    {
        Some(t) => Arc::new(FixedClock(t.with_timezone(&chrono::Utc))),
        None => Arc::new(crate::clock::SystemClock),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the protocol is under /v1 (see schemas/openapi.yaml)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// Every route served, as (method, path template): the OpenAPI test checks this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/capabilities"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("POST", "/v1/key-batches"),
    ("GET", "/v1/keys/{id}"),
    ("PATCH", "/v1/keys/{id}"),
    ("DELETE", "/v1/keys/{id}"),
    ("POST", "/v1/keys/{id}/rotate"),
    ("POST", "/v1/keys/{id}/disable"),
    ("POST", "/v1/keys/{id}/enable"),
    ("POST", "/v1/keys/{id}/revoke"),
    ("POST", "/v1/verify"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/budget"),
    ("PUT", "/v1/budget"),
    ("GET", "/v1/events"),
    ("POST", "/v1/events"),
    ("POST", "/v1/locks"),
    ("DELETE", "/v1/locks/{id}"),
    ("POST", "/v1/locks/{id}/renew"),
];

/// The router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let status_route = |to: KeyStatus| {
        post(
            move |State(s): State<Arc<AppState>>,
                  headers: axum::http::HeaderMap,
                  id: Result<
                axum::extract::Path<String>,
                axum::extract::rejection::PathRejection,
            >| async move { routes::change_status(s, headers, id, to).await },
        )
    };
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/v1/capabilities", get(routes::capabilities))
        .route("/v1/keys", get(routes::list_keys).post(routes::create_key))
        .route("/v1/key-batches", post(routes::create_batch))
        .route(
            "/v1/keys/{id}",
            get(routes::get_key)
                .patch(routes::patch_key)
                .delete(routes::delete_key),
        )
        .route("/v1/keys/{id}/rotate", post(routes::rotate_key))
        .route("/v1/keys/{id}/disable", status_route(KeyStatus::Disabled))
        .route("/v1/keys/{id}/enable", status_route(KeyStatus::Active))
        .route("/v1/keys/{id}/revoke", status_route(KeyStatus::Revoked))
        .route("/v1/verify", post(routes::verify))
        .route("/v1/usage", get(routes::usage))
        .route("/v1/budget", get(routes::budget).put(routes::set_budget))
        .route("/v1/events", get(routes::events).post(routes::record_event))
        .route("/v1/locks", post(routes::lock))
        .route("/v1/locks/{id}", axum::routing::delete(routes::unlock))
        .route("/v1/locks/{id}/renew", post(routes::renew))
        .merge(ui::router(state.ui.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--database `{0}`: expected sqlite:PATH or postgres://...")]
    BadDatabase(String),
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Idempotency(#[from] idempotency::IdemError),
    #[error("{0}")]
    Tokens(#[from] tokens::TokenError),
    #[error(
        "no tokens: create one with `keyward token create NAME --role read|write|verify` (tokens file {0})"
    )]
    NoTokens(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    TlsHalf,
}

/// A duration argument: `10s`, `500ms`, `2m`, or whole seconds (`10`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 10s, 500ms or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("`{s}`: the unit must be ms, s or m")),
    };
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(d)
}

/// `keyward serve` options (the command line's `cli::serve` fills them).
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    pub listen: String,
    /// The database: `sqlite:PATH` (WAL mode) or `postgres://...`.
    pub database: String,
    /// Tokens file (hashes only); entries from `KEYWARD_SERVE_TOKENS` are added.
    pub tokens: PathBuf,
    /// Close a connection that has not sent a complete request head this long after it
    /// opened or after its previous answer (also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Answer 408 to a request (body included) not handled within this time.
    pub request_timeout: Duration,
    /// Open connections at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Serve HTTPS with this PEM certificate chain (with `tls_key`); SIGHUP reloads both.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Benchmark only: serve a bare handler answering 200 on every path.
    pub bare: bool,
    /// Count verify calls per key and write them every this long (and on stop); `None`
    /// turns usage off.
    pub usage_flush: Option<Duration>,
}

/// `keyward token` subcommands, each with its tokens file.
#[derive(Debug, Clone)]
pub enum TokenCommand {
    /// Make a token; prints it once on stdout.
    Create {
        name: String,
        role: Role,
        tokens: PathBuf,
    },
    /// List token names and roles (never the tokens).
    List { tokens: PathBuf },
    /// Remove a token.
    Revoke { name: String, tokens: PathBuf },
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Warn (stderr) about each of `paths` whose mode lets other users read it.
fn warn_loose(paths: &[PathBuf]) {
    for w in crate::private::loose(paths) {
        eprintln!("warning: {w}");
    }
}

/// Run a `keyward token` command; returns the exit code.
pub fn token_command(dir: &Path, cmd: &TokenCommand) -> Result<i32, tokens::TokenError> {
    match cmd {
        TokenCommand::Create { name, role, tokens } => {
            let path = resolve(dir, tokens);
            // The file is rewritten 0600, but what it held was readable until now.
            warn_loose(std::slice::from_ref(&path));
            let token = tokens::create(&path, name, *role)?;
            eprintln!(
                "created token `{name}` with role `{role}` in {}; it is shown once, below:",
                path.display()
            );
            println!("{}", token.as_str());
            Ok(0)
        }
        TokenCommand::List { tokens } => {
            let path = resolve(dir, tokens);
            let list = tokens::list(&path)?;
            if list.is_empty() {
                eprintln!("no tokens in {}", path.display());
            }
            for t in list {
                println!(
                    "{}\t{}\t{}",
                    t.name,
                    t.role,
                    t.created_at.map(|d| d.to_rfc3339()).unwrap_or_default()
                );
            }
            Ok(0)
        }
        TokenCommand::Revoke { name, tokens } => {
            let path = resolve(dir, tokens);
            warn_loose(std::slice::from_ref(&path));
            let t = tokens::revoke(&path, name)?;
            eprintln!("revoked token `{}` (role {})", t.name, t.role);
            Ok(0)
        }
    }
}

/// A served database: the store and its idempotency records.
pub type Database = (Arc<dyn Store>, Arc<dyn IdempotencyLog>);

/// Open the store and idempotency records named by `--database`: `sqlite:PATH` (relative to
/// `dir`) or `postgres://...` (see `store::postgres::PostgresOptions::from_url`; several
/// instances may serve one PostgreSQL schema).
pub async fn open_database(dir: &Path, database: &str) -> Result<Database, ServeError> {
    if let Some(path) = database.strip_prefix("sqlite:") {
        let path = resolve(dir, Path::new(path.trim_start_matches("//")));
        // One reader per core: verifies look keys up inline on the runtime's workers.
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let store = SqliteStore::open("serve", &path)?.for_serving(readers)?;
        warn_loose(&crate::store::sqlite::files(&path));
        let idem = SqliteIdempotency::open(&path)?;
        return Ok((Arc::new(store), Arc::new(idem)));
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let store = PostgresStore::connect("serve", database)
            .await?
            .for_serving();
        let idem = PostgresIdempotency::new(&store);
        return Ok((Arc::new(store), Arc::new(idem)));
    }
    Err(ServeError::BadDatabase(database.to_owned()))
}

fn env_tokens() -> Option<String> {
    std::env::var(tokens::TOKENS_ENV).ok()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reload the tokens file when it changes (so `keyward token revoke` takes effect).
fn watch_tokens(state: Arc<AppState>, path: PathBuf) {
    tokio::spawn(async move {
        let mut seen = mtime(&path);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = mtime(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match Tokens::load(Some(&path), env_tokens().as_deref()) {
                Ok(t) => {
                    tracing::info!(tokens = t.len(), "tokens file reloaded");
                    state.set_tokens(t);
                }
                Err(e) => {
                    tracing::error!(error = %e, "tokens file not reloaded; keeping the old tokens")
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen.to_owned(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: listen.to_owned(),
        source,
    })?;
    Ok((listener, addr))
}

/// The limits and TLS of `args`: raises the open-file soft limit, fits the connection cap
/// under it, loads the certificate (and reloads it on SIGHUP).
fn connection_setup(
    dir: &Path,
    args: &ServeArgs,
) -> Result<(listen::Limits, Option<Arc<listen::Tls>>), ServeError> {
    let open_files = listen::raise_open_file_limit();
    let limits = listen::Limits {
        header_timeout: args.header_timeout,
        request_timeout: args.request_timeout,
        max_connections: listen::fit_connections(args.max_connections, open_files),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        open_files = open_files.unwrap_or(0),
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        request_timeout_ms = limits.request_timeout.as_millis() as u64,
        "connection limits"
    );
    let tls = match (&args.tls_cert, &args.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let files = listen::TlsFiles {
                cert: resolve(dir, cert),
                key: resolve(dir, key),
            };
            let tls = Arc::new(listen::Tls::load(files).map_err(ServeError::Tls)?);
            listen::reload_on_sighup(Arc::clone(&tls));
            Some(tls)
        }
        _ => return Err(ServeError::TlsHalf),
    };
    Ok((limits, tls))
}

/// The spec whose `notify:` channels carry budget alerts: the repository in `dir`, when it
/// has a keyward.yaml that loads.
async fn alert_spec(dir: &Path) -> Option<Arc<crate::spec::Spec>> {
    if !dir.join("keyward.yaml").is_file() {
        return None;
    }
    let root = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || crate::spec::load(&root)).await {
        Ok(Ok(loaded)) => Some(Arc::new(loaded.spec)),
        _ => {
            eprintln!(
                "warning: {} does not load, so budget alerts are only recorded as events (run `keyward plan` there to see why)",
                dir.join("keyward.yaml").display()
            );
            None
        }
    }
}

/// Run `keyward serve` until SIGINT/SIGTERM.
pub async fn serve(dir: &Path, args: &ServeArgs) -> Result<(), ServeError> {
    let (limits, tls) = connection_setup(dir, args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if args.bare {
        let (listener, addr) = bind(&args.listen).await?;
        eprintln!("keyward serve (bare benchmark handler) listening on {scheme}://{addr}");
        let app = Router::new().fallback(|| async { StatusCode::OK });
        return listen::run(listener, app, limits, tls, shutdown_signal())
            .await
            .map_err(ServeError::Serve);
    }
    let tokens_path = resolve(dir, &args.tokens);
    let tokens = Tokens::load(Some(&tokens_path), env_tokens().as_deref())?;
    warn_loose(std::slice::from_ref(&tokens_path));
    if tokens.is_empty() {
        return Err(ServeError::NoTokens(tokens_path.display().to_string()));
    }
    let (store, idem) = open_database(dir, &args.database).await?;
    let ui = ui::UiOptions {
        repo: dir
            .join("keyward.yaml")
            .is_file()
            .then(|| dir.to_path_buf()),
        secure_cookie: tls.is_some(),
    };
    let mut state = AppState::new(Arc::clone(&store), idem, tokens, server_clock()).with_ui(ui);
    let tally = args.usage_flush.map(|every| {
        let tally = Arc::new(usage::Tally::default());
        usage::spawn_flusher(Arc::clone(&tally), Arc::clone(&store), every);
        tally
    });
    if let Some(t) = &tally {
        state = state.with_usage(Arc::clone(t));
    }
    let every = args.usage_flush.unwrap_or(usage::DEFAULT_FLUSH);
    let channels = alerts::Channels {
        spec: alert_spec(dir).await,
    };
    alerts::spawn(Arc::clone(&store), channels, server_clock(), every);
    let state = Arc::new(state);
    watch_tokens(Arc::clone(&state), tokens_path);
    let (listener, addr) = bind(&args.listen).await?;
    eprintln!("keyward serve listening on {scheme}://{addr}");
    let app = listen::with_request_timeout(router(state), limits.request_timeout);
    let served = listen::run(listener, app, limits, tls, shutdown_signal())
        .await
        .map_err(ServeError::Serve);
    // The calls counted since the last flush.
    if let Some(t) = &tally {
        let calls = usage::flush(t, store.as_ref()).await;
        tracing::info!(calls, "usage written on stop");
    }
    // Give unused quota reservations back so a restart does not lose those calls.
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "the store was not closed cleanly");
    }
    served
}
