//! The validated spec: types that can only hold a checked state (built by `spec::load`).
//! Must not do I/O; everything here is plain data with small helpers.

use crate::diag::Location;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// A whole repository's desired state, validated.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Repository root (absolute).
    pub root: PathBuf,
    pub stores: BTreeMap<String, StoreConfig>,
    pub catalogue: ScopeCatalogue,
    pub policy: Policy,
    pub delivery: DeliveryConfig,
    /// Safety thresholds apply enforces unless `--force` (keyward.yaml `guards:`).
    pub guards: Guards,
    /// Notification channels (keyward.yaml `notify:`); None when the section is absent.
    pub notify: Option<NotifyConfig>,
    /// People and services, by id. Teams are expanded into their members where used.
    pub principals: BTreeMap<String, Principal>,
    pub teams: BTreeMap<String, Team>,
    /// Desired keys, sorted by (store, name).
    pub keys: Vec<DesiredKey>,
}

impl Spec {
    /// The desired key `name` in `store`. `spec::load` keeps `keys` sorted by (store, name),
    /// so this is a binary search; a hand-built, unsorted `keys` still works (a miss falls
    /// back to a linear scan, so the answer never depends on the order).
    pub fn key(&self, store: &str, name: &str) -> Option<&DesiredKey> {
        match self
            .keys
            .binary_search_by(|k| (k.store.as_str(), k.name.as_str()).cmp(&(store, name)))
        {
            Ok(i) => self.keys.get(i),
            Err(_) => self
                .keys
                .iter()
                .find(|k| k.store == store && k.name == name),
        }
    }
    pub fn keys_in<'a>(&'a self, store: &'a str) -> impl Iterator<Item = &'a DesiredKey> + 'a {
        self.keys.iter().filter(move |k| k.store == store)
    }
}

/// A configured live store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub name: String,
    pub kind: StoreKind,
    pub environment: String,
    pub location: Option<Location>,
    /// `budget:`: the shared daily budget apply writes into the store (sqlite, http).
    pub budget: Option<crate::store::budget::Budget>,
}

impl StoreConfig {
    pub fn is_production(&self) -> bool {
        self.environment == "production"
    }
}

impl StoreKind {
    /// The settings that say where keyward connects and with which credential (the kind
    /// first). A pull request plan (`--base`) uses the base revision's values of these, so a
    /// change cannot point CI's token at a new endpoint; every other setting may change.
    pub fn connection(&self) -> Vec<(&'static str, String)> {
        match self {
            StoreKind::Sqlite { path } => vec![
                ("kind", "sqlite".into()),
                ("path", path.display().to_string()),
            ],
            StoreKind::Http { url, token_env } => vec![
                ("kind", "http".into()),
                ("url", url.clone()),
                ("token_env", token_env.clone().unwrap_or_default()),
            ],
            StoreKind::Console(c) => vec![
                ("kind", "console".into()),
                ("ledger", c.ledger.display().to_string()),
            ],
            StoreKind::Exec {
                command,
                env,
                timeout_secs: _,
            } => vec![
                ("kind", "exec".into()),
                ("command", command.join(" ")),
                ("env", env.join(", ")),
            ],
            StoreKind::PostgresRoles { url, .. } => {
                let mut v = vec![("kind", "postgres-roles".into())];
                v.push(url.connection());
                v
            }
            StoreKind::RedisAcl { url, .. } => {
                let mut v = vec![("kind", "redis-acl".into())];
                v.push(url.connection());
                v
            }
        }
    }
}

impl ConnUrl {
    /// `("url", the URL without its password)` or `("url_env", the variable's name)`.
    fn connection(&self) -> (&'static str, String) {
        match self {
            ConnUrl::Env(var) => ("url_env", var.clone()),
            ConnUrl::Value(u) => ("url", without_password(u)),
        }
    }
}

/// A URL as a plan may show it: a password in it is replaced by `***` (an unparsable URL
/// is shown as its scheme only).
fn without_password(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => format!("{}://...", u.split("://").next().unwrap_or("?")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite file; path is absolute (resolved against the repo root).
    Sqlite { path: PathBuf },
    /// keyward's store protocol over HTTP.
    Http {
        url: String,
        token_env: Option<String>,
    },
    /// A vendor console without a key API (see `spec::console_store`).
    Console(ConsoleStoreConfig),
    /// An adapter process speaking keyward's store protocol (NDJSON over stdin/stdout).
    Exec {
        /// Program and arguments (never a secret: argv is visible to every local user).
        command: Vec<String>,
        /// Names of the environment variables passed on to the adapter.
        env: Vec<String>,
        /// Per request.
        timeout_secs: u64,
    },
    /// PostgreSQL login roles with keyward-computed SCRAM-SHA-256 verifiers.
    PostgresRoles {
        url: ConnUrl,
        role_prefix: String,
        /// scope -> group roles.
        grants: BTreeMap<String, Vec<String>>,
    },
    /// Redis ACL users with `#sha256` passwords.
    RedisAcl {
        url: ConnUrl,
        user_prefix: String,
        /// scope -> ACL rules.
        grants: BTreeMap<String, Vec<String>>,
    },
}

impl StoreKind {
    /// The `kind:` word of keyward.yaml.
    pub fn name(&self) -> &'static str {
        match self {
            StoreKind::Sqlite { .. } => "sqlite",
            StoreKind::Http { .. } => "http",
            StoreKind::Console(_) => "console",
            StoreKind::Exec { .. } => "exec",
            StoreKind::PostgresRoles { .. } => "postgres-roles",
            StoreKind::RedisAcl { .. } => "redis-acl",
        }
    }
}

/// A connection URL given in keyward.yaml (`url`) or named by an environment variable
/// (`url_env`, for URLs that carry a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnUrl {
    Value(String),
    Env(String),
}

/// The vendors `kind: console` accepts; each has a preset in `src/console/presets/`.
pub const CONSOLE_VENDORS: [&str; 5] = ["alma", "primo", "openathens", "alm", "generic"];

/// The console vendors whose keys never expire (their preset says `expiry: none`: an Alma
/// or Primo key stays valid until it is deleted). A key in such a store without `expires:`
/// or `lifetime:` never expires, whatever `policy.default_lifetime` says: the ledger records
/// what the console holds. A unit test in `console/preset.rs` keeps this list in step.
pub const CONSOLE_VENDORS_WITHOUT_EXPIRY: [&str; 2] = ["alma", "primo"];

impl StoreKind {
    /// Whether keys in this store can expire at all (false: a console with no expiry).
    pub fn keys_can_expire(&self) -> bool {
        !matches!(self, StoreKind::Console(c) if CONSOLE_VENDORS_WITHOUT_EXPIRY.contains(&c.vendor.as_str()))
    }
}

/// A `kind: console` store's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleStoreConfig {
    /// One of `CONSOLE_VENDORS`.
    pub vendor: String,
    /// The ledger file, absolute (resolved against the repo root).
    pub ledger: PathBuf,
    /// The ledger path as written (relative to the repo root), for messages.
    pub ledger_rel: PathBuf,
    pub console_url: Option<String>,
    /// vendor `generic`: the whole-value pattern of a secret.
    pub secret_pattern: Option<String>,
    /// The console's per-owner limit, overriding the preset's default.
    pub max_keys_per_owner: Option<usize>,
    /// The console's longest lifetime.
    pub max_lifetime: Option<Span>,
}

/// The scope catalogue: API areas and ordered access levels (a later level implies earlier ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCatalogue {
    pub areas: Vec<String>,
    pub levels: Vec<String>,
}

impl Default for ScopeCatalogue {
    fn default() -> Self {
        Self {
            areas: [
                "acquisitions",
                "analytics",
                "bibs",
                "configuration",
                "courses",
                "electronic",
                "resource-sharing",
                "task-lists",
                "users",
            ]
            .map(String::from)
            .to_vec(),
            levels: vec!["read".into(), "write".into()],
        }
    }
}

impl ScopeCatalogue {
    pub fn level_rank(&self, level: &str) -> Option<usize> {
        self.levels.iter().position(|l| l == level)
    }
    /// Does `have` grant everything `want` asks for (same area, level at least as high)?
    pub fn implies(&self, have: &Scope, want: &Scope) -> bool {
        have.area == want.area
            && match (self.level_rank(&have.level), self.level_rank(&want.level)) {
                (Some(h), Some(w)) => h >= w,
                _ => false,
            }
    }
}

/// One granted scope `area:level`. Sets of scopes are normalised: one entry per area, at the
/// highest level asked for (write implies read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Scope {
    pub area: String,
    pub level: String,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        let (a, l) = s.split_once(':')?;
        if a.is_empty() || l.is_empty() {
            return None;
        }
        Some(Scope {
            area: a.to_string(),
            level: l.to_string(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.area, self.level)
    }
}

/// A span of time in whole seconds, written `90d`, `12h`, `30m`, `2w`, `1y` (=365d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span {
    pub seconds: i64,
}

impl Span {
    pub fn days(d: i64) -> Span {
        Span {
            seconds: d * 86_400,
        }
    }
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.seconds)
    }
    /// Parse `90d`, `12h`, `30m`, `45s`, `2w`, `1y`. Returns None when malformed.
    pub fn parse(s: &str) -> Option<Span> {
        let s = s.trim();
        if s.len() < 2 || !s.is_ascii() {
            return None;
        }
        let (num, unit) = s.split_at(s.len() - 1);
        let n: i64 = num.parse().ok().filter(|n: &i64| *n >= 0)?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            _ => return None,
        };
        let seconds = n.checked_mul(mult)?;
        // Bound to ~1000 years so date arithmetic can never overflow.
        (seconds <= 1000 * 365 * 86_400).then_some(Span { seconds })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        if s % 86_400 == 0 {
            write!(f, "{}d", s / 86_400)
        } else if s % 3_600 == 0 {
            write!(f, "{}h", s / 3_600)
        } else if s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default_lifetime: Option<Span>,
    pub max_lifetime: Option<Span>,
    pub max_keys_per_owner: usize,
    /// Fewest recipients for stores whose environment has no entry in
    /// `min_recipients_by_env` (`min_recipients: 2` or `min_recipients: { default: 2 }`).
    pub min_recipients: usize,
    /// `min_recipients: { production: 2, ... }`: per environment.
    pub min_recipients_by_env: BTreeMap<String, usize>,
    pub forbid: Vec<ForbiddenScope>,
    /// Stores where keys may never expire; None = wherever `max_lifetime` is unset.
    pub allow_never: Option<Vec<String>>,
    /// `purpose`, `expiry`, `quota`, `rotation`, `recipients`.
    pub required_fields: Vec<String>,
    pub required_labels: Vec<String>,
    /// Name patterns by store (`*` = every store).
    pub name_patterns: Vec<NamePattern>,
    /// Where each policy setting is written (`max_lifetime`, `min_recipients.production`,
    /// `name_patterns.STORE`, ...), so diagnostics can point at the rule they enforce.
    pub locations: BTreeMap<String, Location>,
    /// When owners are reminded before a key expires (`reminders: [30d, 14d, 7d, 1d]`),
    /// longest first. The longest is also the window of `keyward expiring` and plan warnings.
    pub reminders: Vec<Span>,
    /// `unused_after: 120d`: the plan disables keys with no valid verify for that long
    /// (protected keys excepted; only in stores that keep usage). None: never.
    pub unused_after: Option<Span>,
}

/// A key-name pattern for one store (or `*`): a regular expression matched in full.
#[derive(Debug, Clone)]
pub struct NamePattern {
    pub store: String,
    pub pattern: String,
    pub regex: regex::Regex,
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.store == other.store && self.pattern == other.pattern
    }
}
impl Eq for NamePattern {}

impl Policy {
    /// The fewest recipients for a key in a store of `environment`, and the setting that
    /// says so (`min_recipients` or `min_recipients.ENV`).
    pub fn min_recipients_for(&self, environment: &str) -> (usize, String) {
        match self.min_recipients_by_env.get(environment) {
            Some(n) => (*n, format!("min_recipients.{environment}")),
            None => (self.min_recipients, "min_recipients".to_string()),
        }
    }
    /// Whether a key in `store` may never expire.
    pub fn never_allowed(&self, store: &str) -> bool {
        match &self.allow_never {
            Some(stores) => stores.iter().any(|s| s == store),
            None => self.max_lifetime.is_none(),
        }
    }
    /// The name patterns that apply to `store`.
    pub fn name_patterns_for<'a>(
        &'a self,
        store: &'a str,
    ) -> impl Iterator<Item = &'a NamePattern> + 'a {
        self.name_patterns
            .iter()
            .filter(move |p| p.store == "*" || p.store == store)
    }
    /// The default reminder offsets: 30, 14, 7 and 1 days before expiry.
    pub fn default_reminders() -> Vec<Span> {
        [30, 14, 7, 1].map(Span::days).to_vec()
    }
    /// How long `key` may go unused before the plan disables it (its own `unused_after`,
    /// else the policy's), in whole days (at least 1); None: never.
    pub fn unused_days(&self, key: &DesiredKey) -> Option<i64> {
        let span = match key.unused_after {
            Some(own) => own,
            None => self.unused_after,
        };
        span.map(|s| s.to_chrono().num_days().max(1))
    }
    /// The widest reminder window (30 days unless configured).
    pub fn reminder_window(&self) -> Span {
        self.reminders
            .iter()
            .copied()
            .max()
            .unwrap_or(Span::days(30))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_lifetime: None,
            max_lifetime: None,
            max_keys_per_owner: 10,
            min_recipients: 1,
            min_recipients_by_env: BTreeMap::new(),
            forbid: Vec::new(),
            allow_never: None,
            required_fields: Vec::new(),
            required_labels: Vec::new(),
            name_patterns: Vec::new(),
            locations: BTreeMap::new(),
            reminders: Policy::default_reminders(),
            unused_after: None,
        }
    }
}

/// Safety thresholds for one kind of store: how much one apply may take away. `None`
/// switches a guard off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Revokes, disables and deletes in one store.
    pub max_revokes: Option<u64>,
    /// Revokes, disables and deletes as a percentage of the store's live managed keys.
    pub max_revoke_percent: Option<u64>,
    /// Replacements (new key, old one revoked) in one store.
    pub max_replaces: Option<u64>,
    /// Replacements as a percentage of the store's live managed keys.
    pub max_replace_percent: Option<u64>,
}

impl GuardLimits {
    /// Built-in limits for stores that are not production.
    pub const DEFAULT: GuardLimits = GuardLimits {
        max_revokes: Some(10),
        max_revoke_percent: Some(50),
        max_replaces: Some(10),
        max_replace_percent: Some(50),
    };
    /// Built-in limits for production stores (stricter).
    pub const PRODUCTION: GuardLimits = GuardLimits {
        max_revokes: Some(5),
        max_revoke_percent: Some(25),
        max_replaces: Some(5),
        max_replace_percent: Some(25),
    };
}

/// keyward.yaml `guards:`: limits for all stores, stricter ones for production stores, and
/// the store size from which percentages apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    pub default: GuardLimits,
    pub production: GuardLimits,
    /// Percentage guards only apply to stores with at least this many live managed keys
    /// (revoking 2 of 3 keys is 67% but not a mass deletion).
    pub min_keys_for_percent: u64,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            default: GuardLimits::DEFAULT,
            production: GuardLimits::PRODUCTION,
            min_keys_for_percent: 10,
        }
    }
}

impl Guards {
    /// The limits in force for a store of `environment`.
    pub fn for_environment(&self, environment: &str) -> GuardLimits {
        if environment == "production" {
            self.production
        } else {
            self.default
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenScope {
    pub scope: Scope,
    pub reason: String,
    /// Restrict the rule to these stores; empty (with `environments` empty) = everywhere.
    pub stores: Vec<String>,
    /// Restrict the rule to stores of these environments; with `stores` too, the rule
    /// applies where either one matches.
    pub environments: Vec<String>,
    pub location: Option<Location>,
}

impl ForbiddenScope {
    /// Does this rule apply to a key in `store`, which serves `environment`?
    pub fn applies_to(&self, store: &str, environment: &str) -> bool {
        (self.stores.is_empty() && self.environments.is_empty())
            || self.stores.iter().any(|s| s == store)
            || self.environments.iter().any(|e| e == environment)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Outbox directory, absolute.
    pub outbox: PathBuf,
    pub retain: Span,
}

/// What a notification is about: the kinds keyward.yaml `notify.on` names.
pub use super::raw::NoticeKindName as NoticeKind;

impl NoticeKind {
    pub const ALL: [NoticeKind; 8] = [
        NoticeKind::Reminder,
        NoticeKind::Unused,
        NoticeKind::Created,
        NoticeKind::Rotated,
        NoticeKind::Replaced,
        NoticeKind::Revoked,
        NoticeKind::Disabled,
        NoticeKind::Deleted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Reminder => "reminder",
            NoticeKind::Created => "created",
            NoticeKind::Rotated => "rotated",
            NoticeKind::Replaced => "replaced",
            NoticeKind::Revoked => "revoked",
            NoticeKind::Disabled => "disabled",
            NoticeKind::Deleted => "deleted",
            NoticeKind::Unused => "unused",
        }
    }
    /// Worked out again from the live keys on each run (`keyward expiring --notify`), never
    /// written as pending: a reminder before expiry, a notice before a disable for disuse.
    pub fn recomputed(self) -> bool {
        matches!(self, NoticeKind::Reminder | NoticeKind::Unused)
    }
    pub fn parse(s: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// keyward.yaml `notify:`: the channels owners hear about their keys through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub email: Option<EmailNotify>,
    pub webhook: Option<WebhookNotify>,
    /// Which messages are sent (default: all kinds).
    pub on: BTreeSet<NoticeKind>,
    /// Where `notify:` is written.
    pub location: Option<Location>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic); port 587.
    Starttls,
    /// TLS from the first byte (SMTPS); port 465.
    Tls,
    /// No TLS (a relay on loopback, or a test server); port 25.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// `notify.email`: mail over SMTP to each key's owner (and fixed addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailNotify {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// SMTP login; the password comes only from the environment variable `password_env`.
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// The sender, `addr@example.edu` or `Name <addr@example.edu>`.
    pub from: String,
    /// Addresses that get every message, besides the owner.
    pub to: Vec<String>,
    /// Mail the key's owner (their `email` in people.yaml); default true.
    pub owners: bool,
    /// SMTP connections a run keeps open and sends over at once (1 to
    /// [`EmailNotify::MAX_CONNECTIONS`]).
    pub connections: u8,
    pub location: Option<Location>,
}

impl EmailNotify {
    pub const DEFAULT_CONNECTIONS: u8 = 4;
    pub const MAX_CONNECTIONS: u8 = 16;
}

/// `notify.webhook`: a JSON POST per message, signed with HMAC-SHA256 when `secret_env` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookNotify {
    /// Parsed once, with the parser the HTTP client uses: http(s), a host, no user info.
    pub url: url::Url,
    /// Environment variable holding the signing secret (Standard Webhooks `webhook-signature`).
    pub secret_env: Option<String>,
    /// Receivers on loopback, private and link-local addresses are allowed.
    pub allow_private: bool,
    pub location: Option<Location>,
}

/// A person or a service that can receive secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Parsed public recipients (age X25519 or SSH). At least one.
    pub recipients: Vec<RecipientKey>,
    /// Scopes this person may grant (bounds keys they own). None = unbounded.
    pub may_grant: Option<Vec<Scope>>,
    pub location: Option<Location>,
}

impl Principal {
    /// Short stable fingerprint over all of this principal's public keys (sorted), so a
    /// changed key shows as a recipient change.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut fps: Vec<&str> = self
            .recipients
            .iter()
            .map(|r| r.fingerprint.as_str())
            .collect();
        fps.sort();
        let mut h = Sha256::new();
        for f in fps {
            h.update(f.as_bytes());
            h.update(b"\n");
        }
        hex::encode(&h.finalize()[..8])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    Person,
    Service,
}

/// One public recipient string, already checked to parse as an age or SSH recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    /// The public recipient text (`age1...` or `ssh-ed25519 AAAA... comment`).
    pub text: String,
    /// `sha256:` + first 16 hex chars of SHA-256 over the key material (without SSH comment).
    pub fingerprint: String,
}

impl RecipientKey {
    pub fn new(text: &str) -> Self {
        use sha2::{Digest, Sha256};
        let text = text.trim().to_string();
        // Fingerprint the key material, not an SSH comment.
        let material: String = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let fp = hex::encode(&Sha256::digest(material.as_bytes())[..8]);
        RecipientKey {
            text,
            fingerprint: format!("sha256:{fp}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub members: Vec<String>,
    pub location: Option<Location>,
}

/// When a key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Expiry {
    /// A fixed instant (`expires: 2027-06-30` means the end of that day, UTC).
    At(DateTime<Utc>),
    /// Relative to the moment the key is created or rotated (fixed then, so plans stay stable).
    Lifetime(Span),
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Active,
    Disabled,
    Revoked,
    /// Tombstone: delete the live key (needs to be explicit).
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub every: Option<Span>,
    pub grace: Span,
    pub generation: u32,
    /// Rotate right away when a recipient is added (otherwise they get the next generation).
    pub rotate_on_recipient_added: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            every: None,
            grace: Span::days(7),
            generation: 1,
            rotate_on_recipient_added: false,
        }
    }
}

/// A daily call quota enforced by the store's verify endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub per_day: u64,
}

/// One desired key, validated. Recipients are expanded to principal ids (teams resolved,
/// owner included unless `include_owner: false`), sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredKey {
    pub name: String,
    pub store: String,
    pub environment: String,
    pub owner: String,
    pub purpose: Option<String>,
    /// Normalised: one scope per area at its highest level, sorted.
    pub scopes: BTreeSet<Scope>,
    pub expiry: Expiry,
    pub recipients: BTreeSet<String>,
    pub rotation: Rotation,
    pub quota: Option<Quota>,
    pub labels: BTreeMap<String, String>,
    pub state: DesiredState,
    pub protected: bool,
    /// `adopt:` the id of the unmanaged live key of this name the apply takes over.
    pub adopt: Option<String>,
    /// `unused_after:` on the key, over the policy's: None when not written, `Some(None)`
    /// for `never`.
    pub unused_after: Option<Option<Span>>,
    /// Where the key is defined (its `name:` value).
    pub location: Location,
    /// Locations of individual fields, by field name, for policy diagnostics.
    pub field_locations: BTreeMap<String, Location>,
}

impl DesiredKey {
    pub fn field_location(&self, field: &str) -> Location {
        self.field_locations
            .get(field)
            .cloned()
            .unwrap_or_else(|| self.location.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::diff::tests::{key, spec};

    #[test]
    fn key_lookup_finds_keys_sorted_or_not() {
        let mut keys = vec![
            key("sbx", "b", &["bibs:read"]),
            key("prod", "z", &["bibs:read"]),
            key("prod", "a", &["bibs:read"]),
            key("sbx", "a", &["bibs:read"]),
        ];
        // Unsorted (a hand-built spec): every key is still found.
        let mut s = spec(Vec::new());
        s.keys = keys.clone();
        for (st, n) in [("sbx", "b"), ("prod", "z"), ("prod", "a"), ("sbx", "a")] {
            let k = s.key(st, n).map(|k| (k.store.as_str(), k.name.as_str()));
            assert_eq!(k, Some((st, n)));
        }
        assert!(s.key("prod", "b").is_none());
        // Sorted as spec::load leaves them: found by binary search.
        keys.sort_by(|a, b| (&a.store, &a.name).cmp(&(&b.store, &b.name)));
        let s = spec(keys);
        for (st, n) in [("sbx", "b"), ("prod", "z"), ("prod", "a"), ("sbx", "a")] {
            let k = s.key(st, n).map(|k| (k.store.as_str(), k.name.as_str()));
            assert_eq!(k, Some((st, n)));
        }
        assert!(s.key("sbx", "c").is_none());
        assert!(s.key("", "").is_none());
    }
}
