//! The file formats as plain serde types (keyward.yaml, people.yaml, keys/*.yaml): the source
//! for the JSON Schemas in `schemas/` (schemars) and, in `fields`, the one list of field
//! names the validators accept. Must not validate: `spec::config`, `spec::people` and
//! `spec::keys` walk the YAML themselves so they can report every problem with its position.
//! A test keeps these types, the field lists and the example repository in step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The field names accepted at each place, as the validators use them.
pub mod fields {
    pub const CONFIG: &[&str] = &[
        "version", "stores", "scopes", "policy", "delivery", "guards", "notify",
    ];
    pub const STORE: &[&str] = &[
        "kind",
        "path",
        "url",
        "token_env",
        "environment",
        "vendor",
        "console_url",
        "ledger",
        "secret_pattern",
        "max_keys_per_owner",
        "max_lifetime",
        "url_env",
        "role_prefix",
        "user_prefix",
        "grants",
        "command",
        "env",
        "timeout",
        "budget",
    ];
    pub const SCOPES: &[&str] = &["areas", "levels"];
    pub const POLICY: &[&str] = &[
        "default_lifetime",
        "max_lifetime",
        "max_keys_per_owner",
        "min_recipients",
        "forbid",
        "reminders",
        "allow_never",
        "required_fields",
        "required_labels",
        "name_patterns",
        "unused_after",
    ];
    /// Values `policy.required_fields` accepts.
    pub const REQUIRABLE: &[&str] = &["purpose", "expiry", "quota", "rotation", "recipients"];
    pub const FORBID: &[&str] = &["scope", "reason", "stores", "environments"];
    pub const DELIVERY: &[&str] = &["outbox", "retain"];
    pub const NOTIFY: &[&str] = &["email", "webhook", "on"];
    pub const NOTIFY_EMAIL: &[&str] = &[
        "host",
        "port",
        "tls",
        "username",
        "password_env",
        "from",
        "to",
        "owners",
        "connections",
    ];
    pub const NOTIFY_WEBHOOK: &[&str] = &["url", "secret_env", "allow_private"];
    pub const GUARD_LIMITS: &[&str] = &[
        "max_revokes",
        "max_revoke_percent",
        "max_replaces",
        "max_replace_percent",
    ];
    pub const GUARDS: &[&str] = &[
        "max_revokes",
        "max_revoke_percent",
        "max_replaces",
        "max_replace_percent",
        "min_keys_for_percent",
        "production",
    ];
    pub const PEOPLE_FILE: &[&str] = &["people", "teams", "services"];
    pub const PERSON: &[&str] = &["name", "email", "recipients", "may_grant"];
    pub const SERVICE: &[&str] = &["name", "recipients"];
    pub const TEAM: &[&str] = &["members"];
    pub const KEY_FILE: &[&str] = &["keys"];
    pub const KEY: &[&str] = &[
        "name",
        "store",
        "owner",
        "purpose",
        "scopes",
        "expires",
        "lifetime",
        "recipients",
        "rotation",
        "quota",
        "labels",
        "state",
        "protected",
        "include_owner",
        "adopt",
        "unused_after",
    ];
    pub const ROTATION: &[&str] = &["every", "grace", "generation", "on_recipient_added"];
}

/// keyward.yaml: stores, scope catalogue, policy and delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version; this keyward understands 1.
    pub version: u32,
    /// Live key stores by name (the name keys refer to with `store:`).
    pub stores: BTreeMap<String, StoreEntry>,
    /// The scope catalogue. Defaults to the Alma API areas with levels `read`, `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryEntry>,
    /// Safety thresholds: how much one apply may revoke or replace before it needs --force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<GuardsEntry>,
    /// Notifications: expiry reminders and apply notices by email and/or webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyEntry>,
}

/// The kind of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKindName {
    /// Embedded SQLite file, no server.
    Sqlite,
    /// keyward's store protocol over HTTP (`keyward serve`).
    Http,
    /// A vendor web console without a key API; its live state is a committed ledger.
    Console,
    /// An adapter process speaking keyward's store protocol over stdin/stdout
    /// (docs/store-protocol.md).
    Exec,
    /// PostgreSQL login roles (SCRAM-SHA-256 verifiers computed by keyward).
    #[serde(rename = "postgres-roles")]
    PostgresRoles,
    /// Redis ACL users (`#sha256` passwords).
    #[serde(rename = "redis-acl")]
    RedisAcl,
}

/// One live store.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreEntry {
    pub kind: StoreKindName,
    /// sqlite only: the database file, relative to the repository root
    /// (default `.keyward/<store>.db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http: base URL, `http://` or `https://`; postgres-roles: `postgres://...`;
    /// redis-acl: `redis://...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// postgres-roles / redis-acl: the environment variable holding the URL (instead of
    /// `url`, when it carries a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// postgres-roles: prefix of the login roles (default `kw_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_prefix: Option<String>,
    /// redis-acl: prefix of the ACL users (default `kw-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prefix: Option<String>,
    /// postgres-roles / redis-acl: scope -> group roles (postgres-roles) or ACL rules
    /// (redis-acl), e.g. `{ bibs:read: [bibs_reader] }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<BTreeMap<String, Vec<String>>>,
    /// exec: the adapter program and its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// exec: names of the environment variables passed to the adapter (no others are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// exec: how long one request may take (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// http only: name of the environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The environment this store serves, e.g. `production` or `sandbox`.
    pub environment: String,
    /// console only: `alma`, `primo`, `openathens`, `alm` or `generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// console only: the console's address, shown in the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// console only: the ledger file, relative to the repository root
    /// (default `ledger/<store>.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
    /// console, vendor `generic` only: a regular expression a pasted secret must match whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_pattern: Option<String>,
    /// console only: the console's per-owner key limit (ALM: APIKEY_MAX_NUM_PER_USER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_owner: Option<u64>,
    /// console only: the console's longest lifetime (ALM: APIKEY_EXPIRE_DAYS), e.g. `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// sqlite / http only: a shared daily budget of valid verify calls, enforced at verify
    /// with the reason `budget_exceeded` (docs/usage.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetEntry>,
}

/// A store's shared daily budget.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetEntry {
    /// Valid calls per UTC day for every key of the store together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// Alert thresholds, e.g. `[80%, 95%]` (100% is always alerted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_at: Option<Vec<String>>,
    /// Budgets of the keys carrying a label, each inside the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<BudgetGroupEntry>>,
}

/// The budget of the keys carrying one label.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetGroupEntry {
    /// `name=value`, e.g. `team=ill`.
    pub label: String,
    pub daily: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_at: Option<Vec<String>>,
}

/// API areas and ordered access levels (a later level implies the earlier ones).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub areas: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<String>>,
}

/// Organisation-wide limits, checked before anything is planned.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// Lifetime of keys that give neither `expires` nor `lifetime`, e.g. `365d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_lifetime: Option<String>,
    /// Longest allowed lifetime, e.g. `730d`; keys that never expire are then refused
    /// (except in the stores listed in `allow_never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// Stores where keys may never expire. When given, `never` is refused in every other
    /// store (even without `max_lifetime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_never: Option<Vec<String>>,
    /// Most active or disabled keys one owner may have (default 10; 0 = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_owner: Option<u64>,
    /// Fewest recipients a key may have (default 1): a number, or per environment, e.g.
    /// `{ default: 1, production: 2 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_recipients: Option<MinRecipientsEntry>,
    /// Fields every active key must give: `purpose`, `expiry` (`expires` or `lifetime`),
    /// `quota`, `rotation` (with `every`), `recipients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_fields: Option<Vec<RequiredField>>,
    /// Labels every active key must carry, e.g. `[ticket]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_labels: Option<Vec<String>>,
    /// Per store, a regular expression key names must match in full, e.g.
    /// `{ alma-production: "^[a-z]+(-[a-z0-9]+)*$" }`; `"*"` applies to every store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_patterns: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid: Option<Vec<ForbidEntry>>,
    /// When owners are reminded before a key expires (default `[30d, 14d, 7d, 1d]`); the
    /// longest is also the window of `keyward expiring` and of plan warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Vec<String>>,
    /// Keys with no valid verify for this long (e.g. `120d`) are disabled by the plan,
    /// protected keys excepted, and their owners reminded ahead at the `reminders` offsets.
    /// Only keys of stores that keep usage (`keyward serve`'s SQLite or PostgreSQL) can be
    /// seen unused. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_after: Option<String>,
}

/// `min_recipients`: one number for every store, or numbers per environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MinRecipientsEntry {
    Count(u64),
    /// By environment name (`production`, `sandbox`, ...); `default` for the others.
    PerEnvironment(BTreeMap<String, u64>),
}

/// A field `policy.required_fields` can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequiredField {
    Purpose,
    /// `expires` or `lifetime`.
    Expiry,
    Quota,
    /// `rotation` with `every`.
    Rotation,
    Recipients,
}

/// A scope no key may have. `area:write` forbids write only; `area:read` forbids every level.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForbidEntry {
    /// `area:level`
    pub scope: String,
    /// Shown to whoever asks for the scope.
    pub reason: String,
    /// Only in these stores (default: everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stores: Option<Vec<String>>,
    /// Only in the stores of these environments, e.g. `[production]` (default:
    /// everywhere). With `stores` too, the rule applies where either one matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
}

/// Where apply writes encrypted deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryEntry {
    /// Outbox directory relative to the repository root (default `deliveries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<String>,
    /// How long superseded generations are kept (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<String>,
}

/// keyward.yaml `notify:`: at least one channel. Messages never contain a secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<NotifyEmailEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<NotifyWebhookEntry>,
    /// Which messages to send (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<NoticeKindName>>,
}

/// A kind of notification.
// Also the model's `spec::NoticeKind` (a re-export), so the two cannot drift apart.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKindName {
    /// Before expiry, at the policy's `reminders` offsets (sent by `keyward expiring --notify`).
    Reminder,
    /// Before a key unused for the policy's `unused_after` is disabled, at the `reminders`
    /// offsets (sent by `keyward expiring --notify`).
    Unused,
    /// After apply created a key (where the encrypted secret is, how to decrypt it).
    Created,
    /// After apply rotated a key (and until when the previous secret works).
    Rotated,
    /// After apply replaced a key with a new one.
    Replaced,
    Revoked,
    Disabled,
    Deleted,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsName {
    /// STARTTLS, required (default; port 587).
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
    /// No TLS (port 25): only for a relay on loopback when a login is given.
    None,
}

/// Mail over SMTP to each key's owner (their `email` in people.yaml) and fixed addresses.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyEmailEntry {
    /// SMTP server host name.
    pub host: String,
    /// Default 587 (starttls), 465 (tls) or 25 (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTlsName>,
    /// SMTP login (with `password_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the SMTP password (never the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Sender: `keyward@example.edu` or `keyward <keyward@example.edu>`.
    pub from: String,
    /// Addresses that receive every message too (e.g. the security team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// Mail each key's owner (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<bool>,
    /// SMTP connections a run opens and reuses for its mails, 1-16 (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub connections: Option<u8>,
}

/// A JSON POST per message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhookEntry {
    /// `https://...` (or `http://` on loopback, with `allow_private`).
    pub url: String,
    /// Name of the environment variable holding the signing secret; when set, each request
    /// is signed as Standard Webhooks do (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64 of HMAC-SHA256(secret, id.timestamp.body)>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Allow a receiver on a loopback, private or link-local address (default false: the
    /// host's every address must be public; it is checked again, and pinned, at each run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_private: Option<bool>,
}

/// A guard value: a whole number, or `none` to switch the guard off.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GuardValue {
    Limit(u64),
    /// `none` (or `off`): no limit.
    Off(String),
}

/// Limits on one apply, per store. Percentages are of the store's live managed keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardLimitsEntry {
    /// Most revokes, disables and deletes in one store (default 10; production 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revokes: Option<GuardValue>,
    /// Most revokes, disables and deletes as a percentage, 0-100 (default 50; production 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revoke_percent: Option<GuardValue>,
    /// Most replacements in one store (default 10; production 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replaces: Option<GuardValue>,
    /// Most replacements as a percentage, 0-100 (default 50; production 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replace_percent: Option<GuardValue>,
}

/// keyward.yaml `guards:`: safety thresholds apply refuses (exit 3) unless `--force`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardsEntry {
    /// Most revokes, disables and deletes in one store (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revokes: Option<GuardValue>,
    /// Most revokes, disables and deletes as a percentage of the store's live keys (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revoke_percent: Option<GuardValue>,
    /// Most replacements in one store (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replaces: Option<GuardValue>,
    /// Most replacements as a percentage of the store's live keys (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replace_percent: Option<GuardValue>,
    /// Percentages apply only to stores with at least this many live keys (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keys_for_percent: Option<u64>,
    /// Limits for production stores; each one left out is the stricter of the value above
    /// and the production default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<GuardLimitsEntry>,
}

/// people.yaml: people, teams and services. People and services share one id namespace.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeopleFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people: Option<BTreeMap<String, PersonEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<BTreeMap<String, TeamEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<BTreeMap<String, ServiceEntry>>,
}

/// A person: can own keys and receive secrets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// PUBLIC keys only: `age1...` or `ssh-ed25519 AAAA... comment` / `ssh-rsa ...`.
    pub recipients: Vec<String>,
    /// Scopes this person may grant; bounds the keys they own. Absent = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_grant: Option<Vec<String>>,
}

/// A team: a name for a group of people and services, used as `team:NAME` in recipients.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    pub members: Vec<String>,
}

/// A service (an application server): can receive secrets, cannot own keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// PUBLIC keys only: `age1...` or an SSH public key line.
    pub recipients: Vec<String>,
}

/// A key file under keys/.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub keys: Vec<KeyEntry>,
}

/// Desired state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Active,
    Disabled,
    Revoked,
    /// Tombstone: delete the live key.
    Deleted,
}

/// When a recipient is added to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnRecipientAdded {
    /// Rotate right away, so the new recipient gets a secret now.
    Rotate,
    /// The new recipient gets the next generation (default).
    NextRotation,
}

/// One desired key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Unique within its store: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// A store from keyward.yaml (fixes the environment).
    pub store: String,
    /// A person from people.yaml; their `may_grant` bounds the scopes.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `area:level` entries from the catalogue; write implies read.
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD` (end of that day, UTC), an RFC 3339 time, or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Lifetime from creation/rotation, e.g. `180d`, or `never`. Not with `expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// People, services and `team:NAME`; the owner is included unless `include_owner: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationEntry>,
    /// Calls per day, e.g. `1000/day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateName>,
    /// Never revoked or deleted by apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Deliver to the owner too (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_owner: Option<bool>,
    /// The id of an unmanaged live key (made in a console) this entry takes over, as
    /// `keyward import` writes it: the apply of the reviewed change marks that key managed
    /// by keyward (it keeps its secret). Ignored once keyward manages a key of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
    /// How long the key may go unused before the plan disables it, over the policy's
    /// `unused_after`: a span such as `400d`, or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_after: Option<String>,
}

/// Rotation settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationEntry {
    /// Rotate this often, e.g. `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The previous secret keeps working this long after a rotation (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// Bump to rotate now (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_recipient_added: Option<OnRecipientAdded>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn properties<T: JsonSchema>() -> BTreeSet<String> {
        let schema = schemars::schema_for!(T);
        schema
            .as_value()
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn set(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn field_lists_match_the_types() {
        assert_eq!(properties::<ConfigFile>(), set(fields::CONFIG));
        assert_eq!(properties::<StoreEntry>(), set(fields::STORE));
        assert_eq!(properties::<ScopesEntry>(), set(fields::SCOPES));
        assert_eq!(properties::<PolicyEntry>(), set(fields::POLICY));
        assert_eq!(properties::<ForbidEntry>(), set(fields::FORBID));
        assert_eq!(properties::<DeliveryEntry>(), set(fields::DELIVERY));
        assert_eq!(properties::<GuardsEntry>(), set(fields::GUARDS));
        assert_eq!(properties::<GuardLimitsEntry>(), set(fields::GUARD_LIMITS));
        assert_eq!(properties::<NotifyEntry>(), set(fields::NOTIFY));
        assert_eq!(properties::<NotifyEmailEntry>(), set(fields::NOTIFY_EMAIL));
        assert_eq!(
            properties::<NotifyWebhookEntry>(),
            set(fields::NOTIFY_WEBHOOK)
        );
        assert_eq!(properties::<PeopleFile>(), set(fields::PEOPLE_FILE));
        assert_eq!(properties::<PersonEntry>(), set(fields::PERSON));
        assert_eq!(properties::<ServiceEntry>(), set(fields::SERVICE));
        assert_eq!(properties::<TeamEntry>(), set(fields::TEAM));
        assert_eq!(properties::<KeyFile>(), set(fields::KEY_FILE));
        assert_eq!(properties::<KeyEntry>(), set(fields::KEY));
        assert_eq!(properties::<RotationEntry>(), set(fields::ROTATION));
    }

    #[test]
    fn the_example_repository_fits_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        let cfg: ConfigFile =
            serde_yaml::from_str(&read("keyward.yaml")).expect("keyward.yaml fits");
        assert_eq!(cfg.version, 1);
        let people: PeopleFile =
            serde_yaml::from_str(&read("people.yaml")).expect("people.yaml fits");
        assert!(people.people.is_some_and(|p| p.len() >= 3));
        let mut keys = 0;
        for entry in std::fs::read_dir(root.join("keys")).expect("keys dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let file: KeyFile =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            keys += file.keys.len();
        }
        assert!(keys >= 5);
    }
}
