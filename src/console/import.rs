//! `keyward import --store X` on a console store: adopt the keys a console already holds. A
//! template (written on the first run, filled in by the admin with the keys the console
//! lists), then, per key, its current value pasted hidden (shape-checked, fingerprinted,
//! sealed to the recipients and delivered as a checklist create is) or marked undelivered
//! (its recipients get a value at the next rotation). The result is key YAML and ledger
//! entries, both files in the repository, reviewed in a pull request like any import.
//! Owns the template and the adoption; must not print a value, write one unsealed, or touch
//! anything outside the repository (which keys the spec can hold is `import`'s call).

use super::checklist::{Read, read_pasted};
use super::input::Operator;
use super::ledger::{Confirmation, LedgerFile, LedgerKey};
use super::preset::{ExpiryRule, Preset};
use super::store::{ConsoleStore, fingerprint_of};
use crate::apply::{self, ApplyError, Context};
use crate::diag::{self, Diagnostic, Diagnostics, Location, codes};
use crate::diff::{Action, Change};
use crate::import::{Decision, plan_import};
use crate::spec::raw::{KeyEntry, StateName};
use crate::spec::{Expiry, Spec, keys::parse_expires};
use crate::store::{Actor, KeyStatus, LiveKey, Store};
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file the admin fills in: the keys the console lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The console store the keys are in.
    pub store: String,
    #[serde(default)]
    pub keys: Vec<TemplateKey>,
}

/// One key as the console lists it. Never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateKey {
    pub name: String,
    /// A person in people.yaml.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `area:level`, as the console shows the key's permissions.
    pub scopes: Vec<String>,
    /// Who gets the value besides the owner (people, services, `team:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The expiry the console shows (`YYYY-MM-DD`), or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// When the console says the key was made (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The console's own id for the key, where it shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_id: Option<String>,
    /// The client id shown with the key (ALM); not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The key is inactive in the console.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// `paste`: paste its current value when asked (hidden). `undelivered`: no value now;
    /// its recipients get one at the next rotation.
    pub value: ValueMode,
}

/// Whether the key's current value is pasted at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueMode {
    Paste,
    Undelivered,
}

/// Import failed before anything was written, or while writing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The template has problems; `rendered` shows them with file:line.
    #[error("{count} problem(s) in the import template {path}; nothing was imported:\n{rendered}")]
    Template {
        path: PathBuf,
        count: usize,
        rendered: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the ledger: {0}")]
    Ledger(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImportError + 'a {
    move |source| ImportError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The template's text for console store `store`: how to fill it in, what the console
/// offers, and no key yet.
pub fn template_text(spec: &Spec, store: &str, cs: &ConsoleStore) -> String {
    let p = cs.preset();
    let offered = super::rules::offered(spec, p).join(", ");
    let people: Vec<&str> = spec
        .principals
        .values()
        .filter(|x| x.kind == crate::spec::PrincipalKind::Person)
        .map(|x| x.id.as_str())
        .collect();
    let expiry = match p.expiry {
        ExpiryRule::None => {
            "leave it out: the console sets no expiry (keys stay valid until deleted)"
        }
        ExpiryRule::SetByConsole => "required: the date the console shows (YYYY-MM-DD)",
        ExpiryRule::SetByAdmin => "the date the console shows (YYYY-MM-DD), or `never`",
    };
    let client = if p.client_id {
        "\n#     client_id: ...                # the Client ID the console shows (required)"
    } else {
        ""
    };
    format!(
        "# keyward import template for `{store}` ({title}, {env}).\n\
         # List the keys {console} shows, one entry each, then run\n\
         #   keyward import --store {store}\n\
         # again. For each `value: paste` key it asks for the key's current value (hidden; it is\n\
         # fingerprinted and sealed to the recipients, never written in the clear); write\n\
         # `value: undelivered` for a key whose value you cannot copy (its recipients get a value\n\
         # at the next rotation). NEVER write a value in this file. It is consumed by the import.\n\
         #\n\
         # scopes this console offers: {offered}\n\
         # owners (people in people.yaml): {people}\n\
         # expires: {expiry}\n\
         #\n\
         # Example:\n\
         #   - name: illiad-barcode-lookup     # the key's name in the console\n\
         #     owner: jdoe\n\
         #     purpose: what the key is for\n\
         #     scopes: [{first}]\n\
         #     recipients: [team:ill-staff]   # who gets the value besides the owner\n\
         #     created: 2025-09-01            # as the console shows it (optional){client}\n\
         #     value: paste                   # or: undelivered\n\
         store: {store}\n\
         keys: []\n",
        title = p.title,
        env = cs.environment(),
        console = p.console,
        people = people.join(", "),
        first = super::rules::offered(spec, p)
            .first()
            .cloned()
            .unwrap_or_default(),
    )
}

/// Read the filled-in template at `path` (`rel` names it in messages).
pub fn read_template(path: &Path, rel: &Path) -> Result<(Template, String), ImportError> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    match serde_yaml::from_str::<Template>(&text) {
        Ok(t) => Ok((t, text)),
        Err(e) => {
            let mut d = Diagnostics::default();
            let loc = e
                .location()
                .map(|l| Location::new(rel, l.line(), l.column()));
            d.push(
                Diagnostic::error(codes::IMPORT_TEMPLATE, format!("the template does not fit its format: {}", first_line(&e.to_string())))
                    .at_opt(loc)
                    .hint("each key needs name, owner, scopes and `value: paste` or `value: undelivered`; the comments at the top of the template list the rest"),
            );
            Err(rendered(rel, &text, d))
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn rendered(rel: &Path, text: &str, d: Diagnostics) -> ImportError {
    let sources: diag::Sources = [(rel.to_path_buf(), text.to_string())]
        .into_iter()
        .collect();
    ImportError::Template {
        path: rel.to_path_buf(),
        count: d.error_count(),
        rendered: diag::render(&d, &sources, false),
    }
}

/// A template key checked and ready to adopt.
#[derive(Debug, Clone)]
pub struct Checked {
    pub key: TemplateKey,
    /// The YAML entry to write; None when the spec already defines the key.
    pub entry: Option<KeyEntry>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
}

/// Check every template key (all problems at once, each at its entry's line): a key name
/// the spec can hold and a person as owner (`import::plan_import`), scopes the console
/// offers, the expiry the console's rules allow, a client id where the console gives one,
/// and no key already in the ledger.
pub fn check(
    spec: &Spec,
    cs: &ConsoleStore,
    ledger: &LedgerFile,
    (t, text, rel): (&Template, &str, &Path),
) -> Result<Vec<Checked>, ImportError> {
    let store = cs.name();
    let mut d = Diagnostics::default();
    let line = |name: &str| entry_location(text, rel, name);
    if t.store != store {
        d.push(
            Diagnostic::error(
                codes::IMPORT_TEMPLATE,
                format!("the template is for `{}`, not `{store}`", t.store),
            )
            .hint(format!(
                "run `keyward import --store {}` with it, or write `store: {store}`",
                t.store
            )),
        );
    }
    let mut lives = Vec::new();
    let mut facts = Vec::new();
    for k in &t.keys {
        let problems = key_problems(spec, cs.preset(), ledger, k);
        for why in &problems {
            d.push(
                Diagnostic::error(codes::IMPORT_TEMPLATE, format!("`{}`: {why}", k.name))
                    .at_opt(line(&k.name))
                    .hint("fix the entry, or remove it and import that key later"),
            );
        }
        let expires_at = k
            .expires
            .as_deref()
            .and_then(parse_expires)
            .and_then(|e| match e {
                Expiry::At(t) => Some(t),
                _ => None,
            });
        let created = k.created.as_deref().and_then(day);
        lives.push(live_of(k, cs, expires_at, created));
        facts.push((expires_at, created));
    }
    let mut out = Vec::new();
    for (c, (k, (expires_at, created))) in plan_import(spec, store, &lives, None).into_iter().zip(
        sorted(&t.keys)
            .into_iter()
            .zip(sorted_facts(&t.keys, facts)),
    ) {
        let entry = match &c.decision {
            Decision::Import(e) => Some(entry_for(cs, k, (**e).clone())),
            Decision::InSpec { .. } => None,
            Decision::Skip(why) => {
                d.push(
                    Diagnostic::error(codes::IMPORT_TEMPLATE, format!("`{}`: {why}", k.name))
                        .at_opt(line(&k.name))
                        .hint("fix the entry, or remove it and import that key later"),
                );
                continue;
            }
        };
        out.push(Checked {
            key: k.clone(),
            entry,
            expires_at,
            created,
        });
    }
    if d.has_errors() {
        return Err(rendered(rel, text, d));
    }
    Ok(out)
}

/// The template's keys in the order `plan_import` returns its candidates.
fn sorted(keys: &[TemplateKey]) -> Vec<&TemplateKey> {
    let mut v: Vec<&TemplateKey> = keys.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn sorted_facts<T: Clone>(keys: &[TemplateKey], facts: Vec<T>) -> Vec<T> {
    let mut v: Vec<(&str, T)> = keys.iter().map(|k| k.name.as_str()).zip(facts).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, f)| f).collect()
}

/// The console-side problems of one template key.
fn key_problems(spec: &Spec, p: &Preset, ledger: &LedgerFile, k: &TemplateKey) -> Vec<String> {
    let mut out = Vec::new();
    let offered = super::rules::offered(spec, p);
    for s in k.scopes.iter().filter(|s| !offered.contains(s)) {
        out.push(format!(
            "{} offers no scope `{s}`; {}",
            p.title,
            crate::spec::yaml::did_you_mean(s, offered.iter().map(String::as_str), "scopes")
        ));
    }
    match (p.expiry, k.expires.as_deref()) {
        (ExpiryRule::SetByConsole, None | Some("never")) => out.push(format!(
            "{} always sets an expiry: copy it from the console (`expires: YYYY-MM-DD`)",
            p.title
        )),
        (ExpiryRule::None, Some(e)) if e != "never" => {
            out.push(format!("{} sets no expiry; remove `expires:`", p.title))
        }
        (_, Some(e)) if parse_expires(e).is_none() => out.push(format!(
            "`expires: {e}` is not a date (YYYY-MM-DD) or `never`"
        )),
        _ => {}
    }
    if let Some(c) = &k.created
        && day(c).is_none()
    {
        out.push(format!("`created: {c}` is not a date (YYYY-MM-DD)"));
    }
    if p.client_id && k.client_id.as_deref().is_none_or(str::is_empty) {
        out.push(format!(
            "{} shows a Client ID with each key: add `client_id:`",
            p.title
        ));
    }
    if let Some(have) = ledger
        .keys
        .iter()
        .find(|l| l.name == k.name && l.status != KeyStatus::Revoked)
    {
        out.push(format!(
            "already in the ledger (id {}); nothing to import",
            have.id
        ));
    }
    out
}

fn day(s: &str) -> Option<DateTime<Utc>> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    Some(DateTime::from_naive_utc_and_offset(
        d.and_hms_opt(0, 0, 0)?,
        Utc,
    ))
}

/// Where the entry of key `name` starts in the template text.
fn entry_location(text: &str, rel: &Path, name: &str) -> Option<Location> {
    text.lines().enumerate().find_map(|(i, l)| {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        let v = t.strip_prefix("name:")?.trim().trim_matches(['"', '\'']);
        (v == name).then(|| Location::new(rel, i + 1, l.len() - l.trim_start().len() + 1))
    })
}

/// A template key as the live key `import::plan_import` judges (made outside keyward).
fn live_of(
    k: &TemplateKey,
    cs: &ConsoleStore,
    expires_at: Option<DateTime<Utc>>,
    created: Option<DateTime<Utc>>,
) -> LiveKey {
    let now = Utc::now().trunc_subsecs(0);
    let mut scopes = k.scopes.clone();
    scopes.sort();
    scopes.dedup();
    LiveKey {
        id: String::new(),
        name: k.name.clone(),
        environment: cs.environment().to_string(),
        owner: k.owner.clone(),
        purpose: k.purpose.clone(),
        scopes,
        labels: k.labels.clone(),
        status: if k.disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        },
        issued_at: created.unwrap_or(now),
        created_at: created.unwrap_or(now),
        updated_at: now,
        expires_at,
        lifetime: None,
        version: 1,
        generation: 1,
        spec_generation: 1,
        previous_valid_until: None,
        recipients: BTreeMap::new(),
        quota_per_day: None,
        protected: false,
        managed_by: None,
        applied_digest: None,
    }
}

/// The YAML entry: `import::entry`, with the recipients the admin named and no `expires:`
/// where the console sets none (the spec then gives it none either).
fn entry_for(cs: &ConsoleStore, k: &TemplateKey, mut e: KeyEntry) -> KeyEntry {
    if cs.preset().expiry == ExpiryRule::None {
        e.expires = None;
    }
    e.recipients = (!k.recipients.is_empty()).then(|| k.recipients.clone());
    if k.disabled {
        e.state = Some(StateName::Disabled);
    }
    e
}

/// A checked key with the value pasted for it (None: undelivered).
pub struct Answered {
    pub checked: Checked,
    pub secret: Option<crate::secret::Secret>,
}

/// What the operator answered.
pub struct Answers {
    pub keys: Vec<Answered>,
    /// Keys to paste that were skipped: they stay in the template.
    pub skipped: Vec<TemplateKey>,
    pub stopped: bool,
}

/// Ask for the value of every `value: paste` key (hidden, shape-checked, not a value the
/// ledger or this import already holds). Nothing is written yet.
pub fn ask(
    cs: &ConsoleStore,
    ledger: &LedgerFile,
    checked: Vec<Checked>,
    op: &mut dyn Operator,
) -> std::io::Result<Answers> {
    let mut out = Answers {
        keys: Vec::new(),
        skipped: Vec::new(),
        stopped: false,
    };
    let mut taken: Vec<(String, String)> = Vec::new();
    let total = checked.len();
    for (i, c) in checked.into_iter().enumerate() {
        if out.stopped {
            out.skipped.push(c.key);
            continue;
        }
        let k = &c.key;
        op.say(&format!(
            "\n[{}/{total}] {}/{} (owner {}): {}\n",
            i + 1,
            cs.name(),
            k.name,
            k.owner,
            super::steps::scopes_console(cs.preset(), &k.scopes)
        ));
        if k.value == ValueMode::Undelivered {
            op.say("  undelivered: its recipients get a value at the next rotation.\n");
            out.keys.push(Answered {
                checked: c,
                secret: None,
            });
            continue;
        }
        let key = format!("{}/{}", cs.name(), k.name);
        match read_pasted(cs, &k.name, &key, op, ledger, &taken)? {
            Read::Value(s) => {
                taken.push((
                    fingerprint_of(&crate::secret::hash_presented(s.expose())),
                    k.name.clone(),
                ));
                out.keys.push(Answered {
                    checked: c,
                    secret: Some(s),
                });
            }
            Read::Skip => out.skipped.push(c.key),
            Read::Stop => {
                out.stopped = true;
                out.skipped.push(c.key);
            }
        }
    }
    Ok(out)
}

/// Record the answered keys once the spec holds them: each pasted value sealed to the key's
/// recipients and delivered durably (as a checklist create), then its ledger entry; each
/// undelivered key's entry with no value. Returns the deliveries written.
pub async fn adopt(
    spec: &Spec,
    cs: Arc<ConsoleStore>,
    answered: Vec<Answered>,
    actor: &Actor,
    clock: &dyn crate::clock::Clock,
) -> Result<Vec<PathBuf>, ImportError> {
    let stores: BTreeMap<String, Arc<dyn Store>> =
        [(cs.name().to_string(), cs.clone() as Arc<dyn Store>)].into();
    let leases = crate::lease::Leases::none();
    let cx = Context {
        spec,
        stores: &stores,
        outbox: crate::deliver::Outbox::new(spec.delivery.outbox.clone()),
        clock,
        leases: &leases,
    };
    let mut delivered = Vec::new();
    for a in answered {
        let k = &a.checked.key;
        let d = spec.key(cs.name(), &k.name).ok_or_else(|| {
            ImportError::Ledger(format!("`{}` is not in the spec after writing it", k.name))
        })?;
        let id = crate::secret::new_key_id();
        match a.secret {
            Some(secret) => {
                let c = Change {
                    new_generation: Some(1),
                    deliver_to: d.recipients.iter().cloned().collect(),
                    ..Change::of_desired(Action::Create, d)
                };
                let client_id = k.client_id.clone();
                let made = (id.clone(), secret);
                let (_, dir) =
                    apply::create_key_with(&cx, cs.as_ref(), &c, actor, made, client_id).await?;
                delivered.push(dir);
            }
            None => {
                let entry = undelivered(cs.as_ref(), &id, d, &a.checked, actor, clock.now());
                cs.adopt(vec![entry])
                    .map_err(|e| ImportError::Ledger(e.to_string()))?;
            }
        }
        let checked = a.checked.clone();
        let now = clock.now().trunc_subsecs(0);
        cs.imported(&id, |l| console_facts(l, &checked, actor, now))
            .map_err(|e| ImportError::Ledger(e.to_string()))?;
    }
    Ok(delivered)
}

/// The console's own facts on an adopted ledger entry, and its confirmation as an import.
fn console_facts(l: &mut LedgerKey, c: &Checked, actor: &Actor, now: DateTime<Utc>) {
    let k = &c.key;
    if let Some(t) = c.created {
        l.created = t;
        l.issued = t;
    }
    l.expires = c.expires_at;
    l.console_id = k.console_id.clone();
    l.client_id = k.client_id.clone();
    let mut scopes = k.scopes.clone();
    scopes.sort();
    scopes.dedup();
    l.scopes = scopes;
    l.confirmed = vec![Confirmation {
        step: "import".into(),
        by: if actor.who.is_empty() {
            "unknown".into()
        } else {
            actor.who.clone()
        },
        at: now,
        commit: actor.commit.clone(),
    }];
}

/// The ledger entry of a key adopted without its value: no fingerprint, no recipients.
fn undelivered(
    cs: &ConsoleStore,
    id: &str,
    d: &crate::spec::DesiredKey,
    c: &Checked,
    actor: &Actor,
    now: DateTime<Utc>,
) -> LedgerKey {
    let now = now.trunc_subsecs(0);
    let live = live_of(&c.key, cs, c.expires_at, c.created);
    LedgerKey {
        name: d.name.clone(),
        id: id.to_string(),
        console_id: None,
        client_id: None,
        environment: live.environment,
        owner: live.owner,
        purpose: live.purpose,
        scopes: live.scopes,
        labels: live.labels,
        status: live.status,
        created: live.created_at,
        issued: live.issued_at,
        updated: now,
        expires: live.expires_at,
        lifetime: None,
        generation: 1,
        spec_generation: d.rotation.generation,
        previous_valid_until: None,
        recipients: BTreeMap::new(),
        protected: d.protected,
        fingerprint: None,
        undelivered: true,
        applied_digest: None,
        version: 1,
        confirmed: vec![Confirmation {
            step: "import".into(),
            by: actor.who.clone(),
            at: now,
            commit: actor.commit.clone(),
        }],
    }
}

/// The template with only `keys` left (those skipped), or None when none is left.
pub fn remaining(t: &Template, keys: Vec<TemplateKey>) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let left = Template {
        store: t.store.clone(),
        keys,
    };
    serde_yaml::to_string(&left).ok().map(|body| {
        format!(
            "# keyward import template: the keys not imported yet (skipped). Run\n#   keyward import --store {}\n# again to import them. NEVER write a value in this file.\n{body}",
            t.store
        )
    })
}

/// The key file the import writes, starting with `modeline` (the editor's schema line).
pub fn render_keys(
    modeline: &str,
    store: &str,
    entries: Vec<KeyEntry>,
    generated: &str,
) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crate::spec::raw::KeyFile { keys: entries })?;
    Ok(format!(
        "{modeline}\n\
         # Imported from the console store `{store}` by `keyward import` on {generated}, with\n\
         # their ledger entries. Keys whose value was pasted are delivered (sealed) to their\n\
         # recipients; undelivered ones get a value at the next rotation (bump\n\
         # `rotation.generation`). Review owners, scopes and recipients.\n{body}"
    ))
}
