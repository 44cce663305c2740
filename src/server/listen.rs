//! Accepting connections for `keyward serve`: the accept loop with a cap on open
//! connections (backpressure: at the cap it stops accepting and the kernel queues), the
//! header-read/idle and whole-request timeouts, the open-file soft limit raised at start,
//! TLS (rustls with ring, certificate and key files reloaded on SIGHUP) and graceful
//! shutdown. Owns no route and no store; must never log a request body or a header value.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::error::ApiError;

/// Default cap on open connections (lowered to fit the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept for everything but client connections (databases, the tokens
/// file, PostgreSQL pool, logs).
pub const RESERVED_FDS: u64 = 128;
/// How long a graceful stop waits for open requests.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// The connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    /// Open connections at once (already fitted to the open-file limit).
    pub max_connections: usize,
}

/// Raise the open-file soft limit to the hard limit (at most 1,048,576); returns the soft
/// limit in force afterwards (None: unknown, e.g. not on Unix).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let now = getrlimit(Resource::Nofile);
        let want = now.maximum.unwrap_or(1 << 20).min(1 << 20);
        if now.current.is_some_and(|c| c < want) {
            let raised = Rlimit {
                current: Some(want),
                maximum: now.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "could not raise the open-file soft limit");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
}

/// The connection cap that fits `open_files`: `wanted`, but at most the limit less
/// [`RESERVED_FDS`] (half the limit when it is that small), and at least 1.
pub fn fit_connections(wanted: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return wanted.max(1);
    };
    let room = if limit > 2 * RESERVED_FDS {
        limit - RESERVED_FDS
    } else {
        limit / 2
    };
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Answer 408 (JSON, as every error) when a request, body included, takes longer than
/// `limit`.
pub fn with_request_timeout(router: Router, limit: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request took longer than {}s (body included)",
                        limit.as_secs()
                    ),
                )
                .into_response(),
            }
        },
    ))
}

/// The certificate chain and private key files of `serve --tls-cert/--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS for served connections; [`Tls::reload`] swaps the certificate in place.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate file {}: {e}", shown(&files.cert)))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {}: no CERTIFICATE block",
            shown(&files.cert)
        ));
    }
    // The key's own parse error never quotes the key.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key file {}: {e}", shown(&files.key)))?;
    crate::store::http::install_crypto_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", shown(&files.cert), shown(&files.key)))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = tls_config(&files)?;
        Ok(Tls {
            files,
            config: RwLock::new(config),
        })
    }
    /// Read the files again; on an error the certificate in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let c = tls_config(&self.files)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let c = Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()));
        tokio_rustls::TlsAcceptor::from(c)
    }
}

/// Reload the certificate on every SIGHUP.
pub fn reload_on_sighup(tls: Arc<Tls>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be caught: the TLS certificate is not reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; keeping the old one")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = tls;
}

/// Accept errors that pass (out of file descriptors, a connection reset before accept):
/// wait a little and go on instead of failing the server.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE EMFILE ENOBUFS ENOMEM
}

/// Serve one connection until it ends, the header timeout closes it, or a stop is asked
/// (then the request in progress is answered first).
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    macro_rules! drive {
        ($io:expr) => {{
            let conn = http.serve_connection(TokioIo::new($io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(DRAIN_FOR, conn).await;
        }};
    }
    match tls {
        None => drive!(stream),
        Some(tls) => {
            // The handshake counts against the header timeout (a client that never sends
            // its hello holds a connection no longer than one that never sends a request).
            match tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)).await {
                Ok(Ok(s)) => drive!(s),
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Serve `app` on `listener` with `limits` until `shutdown` completes, then stop accepting
/// and let open requests finish (at most 10 s).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // At the cap, wait for a connection to end before accepting another: the kernel's
        // listen queue holds the rest, and no file descriptor is spent on them.
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.map_err(io::Error::other)?,
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let (app, tls, stop) = (app.clone(), tls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(stream, app, limits, tls, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all slots back means all connections ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_FOR + Duration::from_secs(1), slots.acquire_many(all)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(fit_connections(4096, Some(20_000)), 4096);
        assert_eq!(fit_connections(4096, Some(1024)), 1024 - 128);
        assert_eq!(fit_connections(4096, Some(200)), 100);
        assert_eq!(fit_connections(4096, Some(1)), 1);
        assert_eq!(fit_connections(0, None), 1);
    }
}
