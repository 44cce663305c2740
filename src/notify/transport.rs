//! The I/O of notifications: sending a composed email over SMTP (lettre, rustls with the
//! ring provider) and a webhook call over HTTP (reqwest), behind the small `Transport`
//! trait. Owns reading the SMTP password and the webhook signing secret from the
//! environment variables the config names; must not compose messages, decide what is due,
//! or put a credential into an error.

use super::compose::{ID_HEADER, Outgoing, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signing_key};
use super::{Channel, NotifyError};
use crate::spec::{EmailNotify, SmtpTls, WebhookNotify};
use async_trait::async_trait;
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

/// SMTP via lettre.
pub struct SmtpTransport {
    cfg: EmailNotify,
}

impl SmtpTransport {
    pub fn new(cfg: &EmailNotify) -> SmtpTransport {
        SmtpTransport { cfg: cfg.clone() }
    }

    fn transport(&self) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, NotifyError> {
        use lettre::AsyncSmtpTransport;
        use lettre::transport::smtp::authentication::Credentials;
        type T = AsyncSmtpTransport<lettre::Tokio1Executor>;
        let smtp = |e: lettre::transport::smtp::Error| NotifyError::Smtp(chain(&e));
        let c = &self.cfg;
        let builder = match c.tls {
            SmtpTls::Starttls => T::starttls_relay(&c.host).map_err(smtp)?,
            SmtpTls::Tls => T::relay(&c.host).map_err(smtp)?,
            SmtpTls::None => T::builder_dangerous(c.host.clone()),
        };
        let mut builder = builder.port(c.port).timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(env)) = (&c.username, &c.password_env) {
            let password = env_secret(env)?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }
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
    async fn send(&self, msg: &Outgoing) -> Result<(), NotifyError> {
        use lettre::AsyncTransport;
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
        let t = self.transport()?;
        t.send(message)
            .await
            .map_err(|err| NotifyError::Smtp(chain(&err)))?;
        Ok(())
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
    async fn send(&self, msg: &Outgoing) -> Result<(), NotifyError> {
        let Outgoing::Webhook(w) = msg else {
            return Err(NotifyError::Invalid("not a webhook call".into()));
        };
        let client = self.client().await?;
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
            let secret = env_secret(env)?;
            let key = zeroize::Zeroizing::new(signing_key(secret.expose_secret()));
            req = req.header(SIGNATURE_HEADER, sign(&key, &w.id, now, &w.body));
        }
        let resp = req
            .body(w.body.clone())
            .send()
            .await
            .map_err(|e| NotifyError::Http(chain(&e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(NotifyError::Http(format!(
            "the receiver answered {status}{}",
            if status.is_redirection() {
                " (redirects are not followed: give the final URL)"
            } else {
                ""
            }
        )))
    }
}
