//! The I/O of notifications: sending a composed email over SMTP (lettre, rustls with the
//! ring provider) and a webhook call over HTTP (reqwest), behind the small `Transport`
//! trait. Owns reading the SMTP password and the webhook signing secret from the
//! environment variables the config names; must not compose messages, decide what is due,
//! or put a credential into an error.

use super::compose::{ID_HEADER, Outgoing, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signing_key};
use super::{Channel, NotifyError};
use crate::spec::{EmailNotify, SmtpTls, WebhookNotify};
use async_trait::async_trait;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// How long one send may take (connect, dialogue, answer).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends composed messages of one channel.
#[async_trait]
pub trait Transport: Send + Sync {
    fn channel(&self) -> Channel;
    /// Where messages go, for reports (no credentials, no URL path or query).
    fn target(&self) -> String;
    async fn send(&self, msg: &Outgoing) -> Result<(), NotifyError>;
    /// How many sends of this channel may be in flight at once.
    fn concurrency(&self) -> usize {
        1
    }
    /// End the run: close what is kept open between sends (idle SMTP connections).
    async fn close(&self) {}
}

/// An error with its causes (`error sending request: connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn env_secret(name: &str) -> Result<SecretString, NotifyError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => Err(NotifyError::MissingEnv(name.to_string())),
    }
}

/// SMTP over a bounded pool of connections, each reused for many messages: lettre's
/// connection API (`AsyncSmtpConnection`: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA) on sockets
/// keyward opens itself with `TCP_NODELAY`. Not lettre's `AsyncSmtpTransport` pool: its
/// `max_size` bounds only the idle connections (not how many are open), returns a
/// connection from a spawned task (the next send often opens another), and its sockets
/// keep Nagle's algorithm on, which holds the `.` that ends each message until the server
/// acknowledges the body: ~40 ms per message on a reused connection (measured with
/// aiosmtpd on loopback: 47 ms against 1.7 ms with `TCP_NODELAY`).
pub struct SmtpTransport {
    cfg: EmailNotify,
    /// Connections that sent their last message fine, ready for the next.
    idle: std::sync::Mutex<Vec<AsyncSmtpConnection>>,
    /// One permit per connection that may be open (`notify.email.connections`).
    slots: tokio::sync::Semaphore,
}

/// The implicit-TLS stream under an SMTP connection (lettre takes any stream it can name
/// the peer of).
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn smtp_err(e: lettre::transport::smtp::Error) -> NotifyError {
    NotifyError::Smtp(chain(&e))
}

impl SmtpTransport {
    pub fn new(cfg: &EmailNotify) -> SmtpTransport {
        SmtpTransport {
            cfg: cfg.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(usize::from(cfg.connections.max(1))),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<AsyncSmtpConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection: TCP with `TCP_NODELAY`, TLS as configured (STARTTLS required, not
    /// opportunistic), then AUTH when a login is configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, NotifyError> {
        use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
        use lettre::transport::smtp::client::TlsParameters;
        use lettre::transport::smtp::extension::ClientId;
        let c = &self.cfg;
        let io = |what: &str, e: std::io::Error| {
            NotifyError::Smtp(format!("{what} {}:{}: {e}", c.host, c.port))
        };
        let host = c.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, c.port))
            .await
            .map_err(|e| io("cannot connect to", e))?;
        tcp.set_nodelay(true)
            .map_err(|e| io("cannot set TCP_NODELAY on", e))?;
        let hello = ClientId::default();
        let stream: Box<dyn AsyncTokioStream> = match c.tls {
            SmtpTls::Tls => Box::new(TlsStream(implicit_tls(tcp, host).await?)),
            SmtpTls::Starttls | SmtpTls::None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello)
            .await
            .map_err(smtp_err)?;
        if c.tls == SmtpTls::Starttls {
            let params = TlsParameters::new(host.to_string()).map_err(smtp_err)?;
            conn.starttls(params, &hello).await.map_err(smtp_err)?;
        }
        if let (Some(user), Some(env)) = (&c.username, &c.password_env) {
            let password = env_secret(env)?;
            let creds = Credentials::new(user.clone(), password.expose_secret().to_string());
            conn.auth(DEFAULT_MECHANISMS, &creds)
                .await
                .map_err(smtp_err)?;
        }
        Ok(conn)
    }

    /// A connection to send over: an idle one that still answers NOOP, or a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, NotifyError> {
        loop {
            let Some(mut conn) = self.idle().pop() else {
                return self.connect().await;
            };
            if conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    /// Connect (or reuse) and send one message, within [`SEND_TIMEOUT`].
    async fn send_over_pool(
        &self,
        envelope: &lettre::address::Envelope,
        bytes: &[u8],
    ) -> Result<(), NotifyError> {
        let attempt = async {
            let mut conn = self.connection().await?;
            match conn.send(envelope, bytes).await {
                Ok(_) => {
                    self.idle().push(conn);
                    Ok(())
                }
                Err(e) => {
                    conn.abort().await;
                    Err(smtp_err(e))
                }
            }
        };
        // A connection cut off by the timeout is dropped (closed) with the future.
        tokio::time::timeout(SEND_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(NotifyError::Smtp(format!(
                    "no answer from {}:{} within {} s",
                    self.cfg.host,
                    self.cfg.port,
                    SEND_TIMEOUT.as_secs()
                )))
            })
    }
}

/// Implicit TLS (port 465): rustls with the ring provider and the platform verifier (as
/// lettre's and reqwest's own TLS), checking the certificate against `host`.
async fn implicit_tls(
    tcp: tokio::net::TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, NotifyError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let tls = |e: &dyn std::fmt::Display| NotifyError::Smtp(format!("TLS with {host}: {e}"));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| tls(&e))?
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| tls(&e))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| tls(&e))
}

#[async_trait]
impl Transport for SmtpTransport {
    fn channel(&self) -> Channel {
        Channel::Email
    }
    fn target(&self) -> String {
        format!(
            "smtp {}:{} ({})",
            self.cfg.host,
            self.cfg.port,
            self.cfg.tls.as_str()
        )
    }
    fn concurrency(&self) -> usize {
        usize::from(self.cfg.connections.max(1))
    }
    async fn send(&self, msg: &Outgoing) -> Result<(), NotifyError> {
        use lettre::message::{Mailbox, Message, header::ContentType};
        let Outgoing::Email(e) = msg else {
            return Err(NotifyError::Invalid("not an email".into()));
        };
        let from: Mailbox = e
            .from
            .parse()
            .map_err(|err| NotifyError::Address(format!("from `{}`: {err}", e.from)))?;
        let mut b = Message::builder()
            .from(from)
            .subject(e.subject.clone())
            .message_id(Some(e.message_id.clone()))
            .header(ContentType::TEXT_PLAIN);
        for a in &e.to {
            let mb: Mailbox = a
                .parse()
                .map_err(|err| NotifyError::Address(format!("`{a}`: {err}")))?;
            b = b.to(mb);
        }
        let message = b
            .body(e.text.clone())
            .map_err(|err| NotifyError::Invalid(err.to_string()))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| NotifyError::Invalid("the SMTP pool is closed".into()))?;
        self.send_over_pool(message.envelope(), &message.formatted())
            .await
    }
    async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle());
        for mut conn in idle {
            // QUIT, politely but not waiting long on a server that stopped answering.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
        }
    }
}

/// A JSON POST via reqwest, signed when a secret is configured. The receiver's host is
/// resolved once per run, every address checked ([`check_addresses`]), and the client pinned
/// to those addresses, so a second DNS answer (rebinding) cannot move the connection.
pub struct WebhookTransport {
    cfg: WebhookNotify,
    client: tokio::sync::Mutex<Option<reqwest::Client>>,
}

/// Refuse a receiver any of whose addresses is not public, unless `allow_private`.
pub fn check_addresses(
    host: &str,
    addrs: &[std::net::SocketAddr],
    allow_private: bool,
) -> Result<(), NotifyError> {
    if addrs.is_empty() {
        return Err(NotifyError::Http(format!("{host} has no address")));
    }
    if allow_private {
        return Ok(());
    }
    for a in addrs {
        if let Some(why) = crate::net::non_public(a.ip()) {
            return Err(NotifyError::Refused(format!(
                "{host} resolves to {}, {why}",
                a.ip()
            )));
        }
    }
    Ok(())
}

impl WebhookTransport {
    pub fn new(cfg: &WebhookNotify) -> Result<WebhookTransport, NotifyError> {
        crate::store::http::install_crypto_provider();
        Ok(WebhookTransport {
            cfg: cfg.clone(),
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// The client for this run: resolve, check, pin (built at the first send).
    async fn client(&self) -> Result<reqwest::Client, NotifyError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let url = &self.cfg.url;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let mut builder = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirected POST would lose its body or be resent unsigned elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past the check below.
            .no_proxy()
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")));
        match url.host() {
            Some(url::Host::Domain(d)) => {
                let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((d, port))
                    .await
                    .map_err(|e| NotifyError::Http(format!("cannot resolve {d}: {e}")))?
                    .collect();
                check_addresses(d, &addrs, self.cfg.allow_private)?;
                builder = builder.resolve_to_addrs(d, &addrs);
            }
            Some(h) => {
                let ip = crate::net::host_ip(&h).expect("an IP host");
                check_addresses(
                    &host,
                    &[std::net::SocketAddr::new(ip, port)],
                    self.cfg.allow_private,
                )?;
            }
            None => return Err(NotifyError::Invalid("the webhook URL has no host".into())),
        }
        let c = builder
            .build()
            .map_err(|e| NotifyError::Http(e.without_url().to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// `scheme://host[:port]` of a URL: what a report may show of it (paths of chat webhooks
/// are often secrets).
pub fn url_origin(u: &url::Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or("?"),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

#[async_trait]
impl Transport for WebhookTransport {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }
    fn target(&self) -> String {
        format!("webhook {}", url_origin(&self.cfg.url))
    }
    fn concurrency(&self) -> usize {
        WEBHOOKS_IN_FLIGHT
    }
    /// POST the call; a 5xx answer, a 429, a timeout or a refused connection is tried
    /// again after [`RETRY_AFTER`] (each try signed afresh), or after the wait a 429's or
    /// 503's `Retry-After` asks for, at most [`MAX_ASKED_WAIT`]; another 4xx or a redirect
    /// is not.
    async fn send(&self, msg: &Outgoing) -> Result<(), NotifyError> {
        let Outgoing::Webhook(w) = msg else {
            return Err(NotifyError::Invalid("not a webhook call".into()));
        };
        let client = self.client().await?;
        let mut tries = 1;
        loop {
            match self.post(&client, w).await {
                Ok(()) => return Ok(()),
                Err(Try::Again(_, asked)) if tries <= RETRY_AFTER.len() => {
                    let wait = match asked {
                        Some(asked) => asked.min(MAX_ASKED_WAIT),
                        None => jittered(RETRY_AFTER[tries - 1], &w.id),
                    };
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                Err(Try::Again(NotifyError::Http(m), _)) => {
                    return Err(NotifyError::Http(format!("{m} ({tries} tries)")));
                }
                Err(Try::Again(e, _) | Try::Not(e)) => return Err(e),
            }
        }
    }
}

/// Webhook calls in flight at once.
pub const WEBHOOKS_IN_FLIGHT: usize = 8;
/// The waits before the second and third try of a webhook call.
pub const RETRY_AFTER: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
/// The longest wait a receiver's `Retry-After` gets: a receiver (or whoever answers at its
/// address) cannot hold an apply for longer; what is still refused then is retried by the
/// next run.
pub const MAX_ASKED_WAIT: Duration = Duration::from_secs(5);

/// The wait a `Retry-After` header asks for, in seconds (its HTTP-date form is not read:
/// the usual waits apply then).
fn asked_wait(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Read (and drop) up to 64 KiB of an answer's body, so that its connection can carry the
/// next call; a longer body only costs that connection.
async fn drain(mut resp: reqwest::Response) {
    let mut read = 0;
    while read < 64 * 1024 {
        match resp.chunk().await {
            Ok(Some(c)) => read += c.len(),
            _ => return,
        }
    }
}

/// A failed try, worth another (after the wait the receiver asked for, if it did) or not.
enum Try {
    Again(NotifyError, Option<Duration>),
    Not(NotifyError),
}

/// `wait` give or take a quarter, by the call's id (so calls that failed together do not
/// all come back at the same moment).
fn jittered(wait: Duration, id: &str) -> Duration {
    let h = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    wait.mul_f64(0.75 + f64::from(h % 512) / 1024.0)
}

impl WebhookTransport {
    /// One try: sign (with this try's timestamp) and POST.
    async fn post(
        &self,
        client: &reqwest::Client,
        w: &super::compose::WebhookCall,
    ) -> Result<(), Try> {
        // The send time, not the notice's: a retry is a new attempt with a fresh timestamp.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut req = client
            .post(self.cfg.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Keyward-Event", &w.event)
            .header("X-Keyward-Delivery", &w.id)
            .header(ID_HEADER, &w.id)
            .header(TIMESTAMP_HEADER, now.to_string());
        if let Some(env) = &self.cfg.secret_env {
            let secret = env_secret(env).map_err(Try::Not)?;
            let key = zeroize::Zeroizing::new(signing_key(secret.expose_secret()));
            req = req.header(SIGNATURE_HEADER, sign(&key, &w.id, now, &w.body));
        }
        let resp = req.body(w.body.clone()).send().await.map_err(|e| {
            let again = e.is_timeout() || e.is_connect();
            let e = NotifyError::Http(chain(&e.without_url()));
            if again {
                Try::Again(e, None)
            } else {
                Try::Not(e)
            }
        })?;
        let status = resp.status();
        let asked = asked_wait(&resp);
        drain(resp).await;
        if status.is_success() {
            return Ok(());
        }
        let e = NotifyError::Http(format!(
            "the receiver answered {status}{}",
            if status.is_redirection() {
                " (redirects are not followed: give the final URL)"
            } else {
                ""
            }
        ));
        Err(
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Try::Again(e, asked)
            } else {
                Try::Not(e)
            },
        )
    }
}
