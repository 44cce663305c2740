//! Key requests (`keyward request`): turns a requester's answers (name, purpose, stores,
//! owner, scopes, expiry, recipients, ticket) into the text of a new key file, checks each
//! answer against the spec and policy as it is given, checks the finished text against the
//! keys JSON Schema, and describes the request for a pull request. Must not prompt, write
//! files or decide exit codes (the command line in `cli/request/` does), and never sees a secret.

use crate::policy::forbidden_where;
use crate::spec::keys::valid_key_name;
use crate::spec::raw::{KeyEntry, KeyFile};
use crate::spec::{Expiry, Scope, Span, Spec};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// How the requested keys expire; `None` in [`Answers`] leaves it to `policy.default_lifetime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryAnswer {
    /// `expires: YYYY-MM-DD` (or `never`).
    Expires(String),
    /// `lifetime: 180d`.
    Lifetime(String),
}

/// Everything a request asks for. One key per store, all alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub name: String,
    pub purpose: Option<String>,
    pub stores: Vec<String>,
    pub owner: String,
    /// Normalised `area:level`, one per area.
    pub scopes: Vec<String>,
    pub expiry: Option<ExpiryAnswer>,
    /// Besides the owner (who receives the secret by default).
    pub recipients: Vec<String>,
    pub ticket: Option<String>,
}

/// The text did not survive its own checks (a bug in rendering, or a schema mismatch).
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("the key file keyward would write does not read back as written: {0}")]
    RoundTrip(String),
    #[error("the key file keyward would write does not fit schemas/keys.schema.json: {0}")]
    Schema(String),
}

/// The key file entries: one per store, in the order the stores were given.
pub fn entries(a: &Answers) -> Vec<KeyEntry> {
    a.stores
        .iter()
        .map(|store| KeyEntry {
            name: a.name.clone(),
            store: store.clone(),
            owner: a.owner.clone(),
            purpose: a.purpose.clone(),
            scopes: a.scopes.clone(),
            expires: match &a.expiry {
                Some(ExpiryAnswer::Expires(d)) => Some(d.clone()),
                _ => None,
            },
            lifetime: match &a.expiry {
                Some(ExpiryAnswer::Lifetime(l)) => Some(l.clone()),
                _ => None,
            },
            recipients: (!a.recipients.is_empty()).then(|| a.recipients.clone()),
            rotation: None,
            quota: None,
            labels: a
                .ticket
                .as_ref()
                .map(|t| BTreeMap::from([("ticket".to_string(), t.clone())])),
            state: None,
            protected: None,
            include_owner: None,
            adopt: None,
            unused_after: None,
        })
        .collect()
}

/// A YAML scalar for `s`: plain when that reads back as the same string and is safe inside
/// a flow collection, otherwise double-quoted (a JSON string is a valid YAML one).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.trim() == s
        && s.chars()
            .all(|c| c.is_alphanumeric() || " -_./:@()'\"+".contains(c))
        && !s.starts_with(['-', ':', '\'', '"', '@'])
        && !s.contains(": ")
        && !s.contains(" #")
        && matches!(
            serde_yaml::from_str::<serde_yaml::Value>(s),
            Ok(serde_yaml::Value::String(ref back)) if back == s
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
    }
}

fn flow(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| scalar(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The text of the key file: the `$schema` line, a comment, and one entry per store in the
/// style of the example files.
pub fn render(a: &Answers, modeline: &str) -> String {
    let mut out = format!(
        "{modeline}\n# Requested with `keyward request`; reviewed and merged in a pull request.\nkeys:\n"
    );
    for (i, e) in entries(a).iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("  - name: {}\n", scalar(&e.name)));
        out.push_str(&format!("    store: {}\n", scalar(&e.store)));
        out.push_str(&format!("    owner: {}\n", scalar(&e.owner)));
        if let Some(p) = &e.purpose {
            out.push_str(&format!("    purpose: {}\n", scalar(p)));
        }
        out.push_str(&format!("    scopes: {}\n", flow(&e.scopes)));
        if let Some(x) = &e.expires {
            out.push_str(&format!("    expires: {}\n", scalar(x)));
        }
        if let Some(x) = &e.lifetime {
            out.push_str(&format!("    lifetime: {}\n", scalar(x)));
        }
        if let Some(r) = &e.recipients {
            out.push_str(&format!("    recipients: {}\n", flow(r)));
        }
        if let Some(l) = &e.labels {
            let inner: Vec<String> = l
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
                .collect();
            out.push_str(&format!("    labels: {{ {} }}\n", inner.join(", ")));
        }
    }
    out
}

/// Check `text` (from [`render`]) reads back as exactly `entries(a)` and fits the keys JSON
/// Schema this keyward generates.
pub fn check_text(a: &Answers, text: &str) -> Result<(), TextError> {
    let back: KeyFile =
        serde_yaml::from_str(text).map_err(|e| TextError::RoundTrip(e.to_string()))?;
    let want = serde_json::to_value(entries(a)).map_err(|e| TextError::RoundTrip(e.to_string()))?;
    let have = serde_json::to_value(&back.keys).map_err(|e| TextError::RoundTrip(e.to_string()))?;
    if want != have {
        return Err(TextError::RoundTrip(format!(
            "expected {want}, read {have}"
        )));
    }
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| TextError::Schema(e.to_string()))?;
    let json = serde_json::to_value(value).map_err(|e| TextError::Schema(e.to_string()))?;
    let schema = crate::schema::get("keys").map_err(|e| TextError::Schema(e.to_string()))?;
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("keys.schema.json", schema)
        .map_err(|e| TextError::Schema(format!("{e:#}")))?;
    let idx = compiler
        .compile("keys.schema.json", &mut schemas)
        .map_err(|e| TextError::Schema(format!("{e:#}")))?;
    schemas
        .validate(&json, idx)
        .map_err(|e| TextError::Schema(format!("{e:#}")))
}

/// The `# yaml-language-server: $schema=...` line for a new key file at `rel` under `root`:
/// a relative path to the nearest `schemas/keys.schema.json` in `root` or a directory above
/// it (within the git repository, when there is one); else `root`'s own `schemas/` (which
/// `keyward schema --write` creates). The flag says whether the schema file was found.
pub fn modeline(root: &Path, rel: &Path) -> (String, bool) {
    let fallback = crate::schema::modeline(rel, "keys.schema.json");
    let Ok(root_abs) = root.canonicalize() else {
        return (fallback, false);
    };
    let mut dir = Some(root_abs.as_path());
    while let Some(d) = dir {
        if d.join("schemas/keys.schema.json").is_file() {
            let from = root_abs.join(rel);
            let from_dir = from.parent().unwrap_or(&root_abs);
            let target = d.join("schemas/keys.schema.json");
            if let Some(r) = relative(from_dir, &target) {
                return (
                    format!("# yaml-language-server: $schema={}", r.display()),
                    true,
                );
            }
        }
        if d.join(".git").exists() {
            break;
        }
        dir = d.parent();
    }
    (fallback, false)
}

/// `to` relative to the directory `from` (both absolute, without `..`).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}

/// Where a key named `name` is already defined in `store`, as `file:line`.
pub fn existing(spec: &Spec, store: &str, name: &str) -> Option<String> {
    spec.key(store, name)
        .map(|k| format!("{}:{}", k.location.file.display(), k.location.line))
}

/// Check a key name: its form, and that no chosen store has it already.
pub fn check_name(spec: &Spec, name: &str, stores: &[String]) -> Result<(), String> {
    if !valid_key_name(name) {
        return Err(format!(
            "`{name}` is not a key name: use lowercase letters, digits and `-`, starting with a letter (at most 64), e.g. `illiad-barcode-lookup`"
        ));
    }
    for s in stores {
        if let Some(at) = existing(spec, s, name) {
            return Err(format!(
                "a key named `{name}` already exists in store `{s}` ({at}); choose another name, or edit that file to change the key"
            ));
        }
    }
    Ok(())
}

/// What the policy says against a key name in the chosen stores (or, before they are
/// known, in every store): the naming patterns, and an environment named in it that is not
/// its store's (`illiad-sandbox` may not reach a production store).
pub fn name_problem(spec: &Spec, name: &str, stores: &[String]) -> Option<String> {
    let pattern = |store: &str, np: &crate::spec::NamePattern| {
        (!np.regex.is_match(name)).then(|| {
            let which = if np.store == "*" {
                "every store".to_string()
            } else {
                format!("store `{store}`")
            };
            format!(
                "`{name}` does not match the naming pattern `{}` for {which}",
                np.pattern
            )
        })
    };
    if stores.is_empty() {
        return spec
            .policy
            .name_patterns
            .iter()
            .filter(|np| np.store == "*")
            .find_map(|np| pattern("*", np));
    }
    let envs: BTreeSet<&str> = spec
        .stores
        .values()
        .map(|s| s.environment.as_str())
        .collect();
    for s in stores {
        if let Some(why) = spec
            .policy
            .name_patterns_for(s)
            .find_map(|np| pattern(s, np))
        {
            return Some(why);
        }
        let env = spec.stores.get(s).map(|c| c.environment.as_str())?;
        if let Some(w) = name
            .split(['-', '_', '.'])
            .find(|w| envs.contains(w) && *w != env)
        {
            return Some(format!(
                "the word `{w}` in `{name}` marks it as a {w} key, which may not reach the {env} store `{s}`; leave the environment out of the name (each store gets its own key)"
            ));
        }
    }
    None
}

/// Stores named directly or by number (1-based, as listed), or every store of an
/// environment. Errors name what is unknown.
pub fn parse_stores(spec: &Spec, words: &[String]) -> Result<Vec<String>, String> {
    let names: Vec<&String> = spec.stores.keys().collect();
    let mut out: Vec<String> = Vec::new();
    let add = |s: &str, out: &mut Vec<String>| {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    for w in words {
        if let Ok(n) = w.parse::<usize>() {
            match n.checked_sub(1).and_then(|i| names.get(i)) {
                Some(s) => add(s, &mut out),
                None => return Err(format!("there is no store number {n}")),
            }
        } else if spec.stores.contains_key(w) {
            add(w, &mut out);
        } else if spec.stores.values().any(|s| &s.environment == w) {
            for s in spec.stores.values().filter(|s| &s.environment == w) {
                add(&s.name, &mut out);
            }
        } else {
            let names = spec
                .stores
                .values()
                .flat_map(|s| [s.name.as_str(), s.environment.as_str()]);
            return Err(format!(
                "`{w}` is neither a store nor an environment in keyward.yaml{} (stores: {})",
                mean(w, names),
                stores_list(spec)
            ));
        }
    }
    if out.is_empty() {
        return Err("choose at least one store".into());
    }
    Ok(out)
}

/// `; did you mean `x`?` when one of `candidates` is close to `word`, else nothing.
fn mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    crate::spec::yaml::suggest(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// `name (environment)` for every store.
pub fn stores_list(spec: &Spec) -> String {
    spec.stores
        .values()
        .map(|s| format!("{} ({})", s.name, s.environment))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check the owner: a person in people.yaml.
pub fn check_owner(spec: &Spec, owner: &str) -> Result<(), String> {
    if people_list(spec).is_empty() {
        return Err(format!(
            "people.yaml lists no person yet, so `{owner}` cannot own a key: run `keyward keygen`, \
             then add yourself under `people:` with the printed age1... recipient"
        ));
    }
    match spec.principals.get(owner).map(|p| p.kind) {
        Some(crate::spec::PrincipalKind::Person) => Ok(()),
        Some(crate::spec::PrincipalKind::Service) => Err(format!(
            "`{owner}` is a service; keys are owned by people (people: {})",
            people_list(spec)
        )),
        None => Err(format!(
            "`{owner}` is not a person in people.yaml{} (people: {})",
            mean(
                owner,
                spec.principals
                    .values()
                    .filter(|p| p.kind == crate::spec::PrincipalKind::Person)
                    .map(|p| p.id.as_str())
            ),
            people_list(spec)
        )),
    }
}

fn people_list(spec: &Spec) -> String {
    spec.principals
        .values()
        .filter(|p| p.kind == crate::spec::PrincipalKind::Person)
        .map(|p| p.id.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `scope` may not be asked for in `store`, if a forbid rule says so.
pub fn forbidden_in(spec: &Spec, store: &str, scope: &Scope) -> Option<String> {
    let env = spec.stores.get(store).map(|s| s.environment.as_str())?;
    spec.policy
        .forbid
        .iter()
        .find(|r| r.applies_to(store, env) && spec.catalogue.implies(scope, &r.scope))
        .map(|r| {
            format!(
                "`{scope}` is forbidden{}: {}",
                forbidden_where(r, store, env),
                r.reason
            )
        })
}

/// Parse scopes (`bibs`, `bibs:read`, `users:write`; an area alone is the lowest level)
/// into one normalised scope per area at the highest level asked for, checked against the
/// scope catalogue. All problems are returned at once.
pub fn parse_scopes(spec: &Spec, words: &[String]) -> Result<Vec<Scope>, Vec<String>> {
    let cat = &spec.catalogue;
    let lowest = cat.levels.first().cloned().unwrap_or_else(|| "read".into());
    let mut by_area: BTreeMap<String, String> = BTreeMap::new();
    let mut errors = Vec::new();
    for w in words {
        let (area, level) = match w.split_once(':') {
            Some((a, l)) => (a.to_string(), l.to_string()),
            None => (w.clone(), lowest.clone()),
        };
        if !cat.areas.contains(&area) {
            errors.push(format!(
                "`{area}` is not an API area in keyward.yaml{} (areas: {})",
                mean(&area, cat.areas.iter().map(String::as_str)),
                cat.areas.join(", ")
            ));
            continue;
        }
        let Some(rank) = cat.level_rank(&level) else {
            errors.push(format!(
                "`{level}` is not an access level{} (levels: {})",
                mean(&level, cat.levels.iter().map(String::as_str)),
                cat.levels.join(", ")
            ));
            continue;
        };
        let keep = by_area
            .get(&area)
            .and_then(|l| cat.level_rank(l))
            .is_none_or(|r| r < rank);
        if keep {
            by_area.insert(area, level);
        }
    }
    if by_area.is_empty() && errors.is_empty() {
        errors.push("ask for at least one scope, e.g. `bibs:read`".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(by_area
        .into_iter()
        .map(|(area, level)| Scope { area, level })
        .collect())
}

/// What the policy says against `scopes` in the chosen stores: forbid rules (with their
/// reasons) and the owner's `may_grant`, when the owner is known.
pub fn scope_problems(
    spec: &Spec,
    scopes: &[Scope],
    stores: &[String],
    owner: Option<&str>,
) -> Vec<String> {
    let cat = &spec.catalogue;
    let mut out = Vec::new();
    for s in scopes {
        if let Some(why) = stores.iter().find_map(|st| forbidden_in(spec, st, s)) {
            out.push(why);
        }
        if let Some(o) = owner
            && let Some(grants) = spec.principals.get(o).and_then(|p| p.may_grant.as_ref())
            && !grants.iter().any(|g| cat.implies(g, s))
        {
            let may: Vec<String> = grants.iter().map(Scope::to_string).collect();
            out.push(format!(
                "owner `{o}` may not grant `{s}` (may grant: {})",
                if may.is_empty() {
                    "nothing".to_string()
                } else {
                    may.join(", ")
                }
            ));
        }
    }
    out
}

/// The scopes prompt's menu: each area with the levels that may be asked for in the chosen
/// stores by this owner (`bibs: read, write`), then the areas out of the owner's grants,
/// then what is forbidden, with the policy's reason.
pub fn area_menu(spec: &Spec, stores: &[String], owner: Option<&str>) -> Vec<String> {
    let cat = &spec.catalogue;
    let mut lines = Vec::new();
    let mut beyond = Vec::new();
    let mut forbidden = Vec::new();
    for area in &cat.areas {
        let mut ok = Vec::new();
        for level in &cat.levels {
            let s = Scope {
                area: area.clone(),
                level: level.clone(),
            };
            if let Some(why) = stores.iter().find_map(|st| forbidden_in(spec, st, &s)) {
                // Only the lowest forbidden level of an area (higher ones follow from it).
                if !forbidden
                    .iter()
                    .any(|f: &String| f.starts_with(&format!("`{area}:")))
                {
                    forbidden.push(why);
                }
            } else if scope_problems(spec, std::slice::from_ref(&s), &[], owner).is_empty() {
                ok.push(level.clone());
            }
        }
        if ok.is_empty() {
            if !forbidden
                .iter()
                .any(|f| f.starts_with(&format!("`{area}:")))
            {
                beyond.push(area.clone());
            }
        } else {
            lines.push(format!("{area}: {}", ok.join(", ")));
        }
    }
    if !beyond.is_empty()
        && let Some(o) = owner
    {
        lines.push(format!(
            "not within {o}'s grants: {} (choose another owner for these)",
            beyond.join(", ")
        ));
    }
    lines.extend(forbidden);
    lines
}

/// Parse an expiry: `YYYY-MM-DD` (not in the past), a lifetime such as `180d`, or `never`.
pub fn parse_expiry(input: &str, now: DateTime<Utc>) -> Result<(ExpiryAnswer, Expiry), String> {
    let input = input.trim();
    if input == "never" {
        return Ok((ExpiryAnswer::Expires("never".into()), Expiry::Never));
    }
    if let Ok(d) = NaiveDate::parse_from_str(input, "%Y-%m-%d") {
        let end = d
            .and_hms_opt(23, 59, 59)
            .map(|t| t.and_utc())
            .ok_or_else(|| format!("`{input}` is not a date"))?;
        if end <= now {
            return Err(format!("{input} is in the past"));
        }
        return Ok((ExpiryAnswer::Expires(input.to_string()), Expiry::At(end)));
    }
    match Span::parse(input).filter(|s| s.seconds > 0) {
        Some(span) => Ok((
            ExpiryAnswer::Lifetime(span.to_string()),
            Expiry::Lifetime(span),
        )),
        None => Err(format!(
            "`{input}` is neither a date (YYYY-MM-DD), a lifetime (e.g. 90d, 26w, 1y) nor `never`"
        )),
    }
}

/// What the policy says against an expiry in the chosen stores (`max_lifetime`,
/// `allow_never`).
pub fn expiry_problem(
    spec: &Spec,
    expiry: &Expiry,
    stores: &[String],
    now: DateTime<Utc>,
) -> Option<String> {
    let pol = &spec.policy;
    match *expiry {
        Expiry::Never => stores.iter().find(|s| !pol.never_allowed(s)).map(|s| {
            format!(
                "keys in `{s}` must expire{}",
                pol.max_lifetime
                    .map(|m| format!(" (within {m})"))
                    .unwrap_or_default()
            )
        }),
        Expiry::Lifetime(l) => pol
            .max_lifetime
            .filter(|m| l > *m)
            .map(|max| format!("{l} is longer than the maximum lifetime {max}")),
        Expiry::At(t) => pol
            .max_lifetime
            .filter(|m| t > now + m.to_chrono())
            .map(|max| {
                format!(
                    "{} is more than the maximum lifetime {max} from now (latest: {})",
                    t.format("%Y-%m-%d"),
                    (now + max.to_chrono()).format("%Y-%m-%d")
                )
            }),
    }
}

/// Who would receive the secret: the owner plus `recipients`, teams expanded.
pub fn receivers(spec: &Spec, owner: &str, recipients: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::from([owner.to_string()]);
    for r in recipients {
        match r.strip_prefix("team:") {
            Some(t) => out.extend(
                spec.teams
                    .get(t)
                    .map(|t| t.members.clone())
                    .unwrap_or_default(),
            ),
            None => {
                out.insert(r.clone());
            }
        }
    }
    out
}

/// Check recipients (people, services, `team:NAME`) exist; drop the owner (who receives
/// the secret by default) and duplicates.
pub fn parse_recipients(spec: &Spec, words: &[String], owner: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let known = match w.strip_prefix("team:") {
            Some(t) => spec.teams.contains_key(t),
            None => spec.principals.contains_key(w),
        };
        if !known {
            let teams: Vec<String> = spec.teams.keys().map(|t| format!("team:{t}")).collect();
            let hint = if spec.teams.contains_key(w) {
                format!("; did you mean `team:{w}`?")
            } else {
                mean(
                    w,
                    spec.principals
                        .keys()
                        .map(String::as_str)
                        .chain(teams.iter().map(String::as_str)),
                )
            };
            let choices: Vec<&str> = spec
                .principals
                .keys()
                .map(String::as_str)
                .chain(teams.iter().map(String::as_str))
                .collect();
            return Err(format!(
                "`{w}` is not a person, service or team in people.yaml{hint} (choices: {})",
                choices.join(", ")
            ));
        }
        if w != owner && !out.contains(w) {
            out.push(w.clone());
        }
    }
    Ok(out)
}

/// What the policy's `min_recipients` (per environment) says against these recipients.
pub fn recipients_problem(
    spec: &Spec,
    owner: &str,
    recipients: &[String],
    stores: &[String],
) -> Option<String> {
    let n = receivers(spec, owner, recipients).len();
    stores.iter().find_map(|s| {
        let env = spec.stores.get(s).map(|c| c.environment.as_str())?;
        let (min, _) = spec.policy.min_recipients_for(env);
        (n < min).then(|| {
            format!("keys in `{s}` need at least {min} recipient(s); the owner and these make {n}")
        })
    })
}

/// Free text for one line of Markdown (a table cell): no line breaks, no table pipes, no
/// HTML.
fn md(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The pull request description for a written request (Markdown). `branch`: the topic
/// branch the file was written on (`GitRepo::topic_branch`), else None (a new branch is
/// suggested).
pub fn pr_description(spec: &Spec, a: &Answers, file: &Path, branch: Option<&str>) -> String {
    let file = file.display();
    let person = |id: &str| match spec.principals.get(id).and_then(|p| p.name.clone()) {
        Some(n) => format!("`{id}` ({n})"),
        None => format!("`{id}`"),
    };
    let stores: Vec<String> = a
        .stores
        .iter()
        .map(|s| {
            let env = spec
                .stores
                .get(s)
                .map(|c| c.environment.as_str())
                .unwrap_or("?");
            format!("`{s}` ({env})")
        })
        .collect();
    let expiry = expiry_text(spec, a);
    let mut recipients = vec![format!("{} (owner)", person(&a.owner))];
    for r in &a.recipients {
        match r.strip_prefix("team:").and_then(|t| spec.teams.get(t)) {
            Some(t) => recipients.push(format!("`{r}` ({})", t.members.join(", "))),
            None => recipients.push(person(r)),
        }
    }
    let keys = if a.stores.len() == 1 {
        "a new API key".to_string()
    } else {
        format!("{} new API keys (one per store)", a.stores.len())
    };
    let mut out = format!("## Key request: `{}`\n\n", a.name);
    out.push_str(&format!(
        "This pull request asks for {keys} named `{}`{}.\n\n",
        a.name,
        a.purpose
            .as_deref()
            .map(|p| format!(", for: {}", md(p)))
            .unwrap_or_default()
    ));
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!("| Owner | {} |\n", person(&a.owner)));
    out.push_str(&format!("| Stores | {} |\n", stores.join(", ")));
    out.push_str(&format!("| Scopes | {} |\n", ticks(&a.scopes)));
    out.push_str(&format!("| Expiry | {expiry} |\n"));
    out.push_str(&format!("| Recipients | {} |\n", recipients.join(", ")));
    out.push_str(&format!(
        "| Ticket | {} |\n",
        a.ticket.as_deref().map(md).unwrap_or_else(|| "none".into())
    ));
    out.push_str(&format!("| File | `{file}` |\n"));
    out.push_str(&reviewer_note(spec, a));
    out.push_str(&next_steps(a, &file.to_string(), branch));
    out
}

/// Names in backticks, joined by commas.
fn ticks<S: std::fmt::Display>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long the requested key lives, in words.
fn expiry_text(spec: &Spec, a: &Answers) -> String {
    match &a.expiry {
        Some(ExpiryAnswer::Expires(d)) if d == "never" => "never expires".to_string(),
        Some(ExpiryAnswer::Expires(d)) => format!("expires {d} (end of day, UTC)"),
        Some(ExpiryAnswer::Lifetime(l)) => {
            format!("lifetime {l} from creation (and each rotation)")
        }
        None => match spec.policy.default_lifetime {
            Some(l) => format!("the policy default: lifetime {l} from creation"),
            None => "never expires (no policy default)".to_string(),
        },
    }
}

/// What a reviewer should look at twice (write access, a production store), or nothing.
fn reviewer_note(spec: &Spec, a: &Answers) -> String {
    let lowest = spec.catalogue.levels.first().map(String::as_str);
    let writes: Vec<&String> = a
        .scopes
        .iter()
        .filter(|s| Scope::parse(s).is_some_and(|s| Some(s.level.as_str()) != lowest))
        .collect();
    let prod: Vec<&String> = a
        .stores
        .iter()
        .filter(|s| spec.stores.get(*s).is_some_and(|c| c.is_production()))
        .collect();
    if writes.is_empty() && prod.is_empty() {
        return String::new();
    }
    let mut out = "\n**For the reviewer:**".to_string();
    if !writes.is_empty() {
        out.push_str(&format!(" write access ({});", ticks(writes)));
    }
    if !prod.is_empty() {
        out.push_str(&format!(" a production store ({});", ticks(prod)));
    }
    out.pop();
    out.push_str(".\n");
    out
}

/// The description's "Next steps": commit the file on a branch (`branch` when already on
/// one, else a new `request/NAME`), push it, open the pull request.
fn next_steps(a: &Answers, file: &str, branch: Option<&str>) -> String {
    let new_branch = format!("request/{}", a.name);
    let (switch, branch) = match branch {
        Some(b) => (String::new(), b),
        None => (format!("git switch -c {new_branch}\n"), new_branch.as_str()),
    };
    format!(
        "\n### Next steps\n\n\
         ```sh\n\
         {switch}\
         git add {file}\n\
         git commit -m \"Request API key {name}\"\n\
         git push -u origin {branch}\n\
         ```\n\n\
         Then open a pull request with this text as its description. CI posts the plan (a \
         create in each store above); a reviewer merges it, and CI applies it and delivers the \
         secret, age-encrypted, to the recipients. Each recipient then reads it with\n\n\
         ```sh\n\
         git pull && keyward secret {name} --store {store}\n\
         ```\n",
        name = a.name,
        store = a.stores.first().map(String::as_str).unwrap_or("STORE"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers {
            name: "ill-lookup".into(),
            purpose: Some("ILLiad \"Alma Barcode Lookup\": #1, [a] {b}".into()),
            stores: vec!["alma-production".into(), "alma-sandbox".into()],
            owner: "jdoe".into(),
            scopes: vec!["bibs:read".into(), "users:read".into()],
            expiry: Some(ExpiryAnswer::Lifetime("180d".into())),
            recipients: vec!["team:ill-staff".into()],
            ticket: Some("LSIS-1234".into()),
        }
    }

    #[test]
    fn rendered_text_reads_back_and_fits_the_schema() {
        let a = answers();
        let text = render(
            &a,
            "# yaml-language-server: $schema=../schemas/keys.schema.json",
        );
        check_text(&a, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.starts_with("# yaml-language-server: $schema="));
        assert!(
            text.contains("    scopes: [bibs:read, users:read]\n"),
            "{text}"
        );
        assert!(
            text.contains("    labels: { ticket: LSIS-1234 }\n"),
            "{text}"
        );
        // Awkward scalars are quoted, plain ones are not.
        for s in [
            "yes",
            "123",
            "null",
            "a: b",
            "~",
            "- x",
            "",
            " lead",
            "#x",
            "2027-01-01",
        ] {
            let mut b = a.clone();
            b.purpose = Some(s.to_string());
            let text = render(&b, "#");
            check_text(&b, &text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
        }
        assert_eq!(scalar("ILLiad add-on (v2)"), "ILLiad add-on (v2)");
    }

    fn library() -> Spec {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
        crate::spec::load(&root)
            .unwrap_or_else(|d| panic!("{}", crate::diag::to_json(&d)))
            .spec
    }

    #[test]
    fn answers_are_checked_against_the_policy_as_they_are_given() {
        let spec = library();
        let now = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let prod = vec!["alma-production".to_string()];
        assert!(check_name(&spec, "illiad-barcode-lookup", &prod).is_err());
        assert!(check_name(&spec, "illiad-barcode-lookup", &[]).is_ok());
        assert!(check_name(&spec, "Bad", &[]).is_err());
        // The example's `*` pattern, before the stores are known; the environment word after.
        assert!(name_problem(&spec, "x--y", &[]).is_some_and(|w| w.contains("every store")));
        assert_eq!(name_problem(&spec, "ill-sandbox", &[]), None);
        let why = name_problem(&spec, "ill-sandbox", &prod).expect("sandbox word in production");
        assert!(why.contains("`sandbox`"), "{why}");
        assert_eq!(
            name_problem(&spec, "ill-sandbox", &["alma-sandbox".into()]),
            None
        );
        assert_eq!(
            parse_stores(&spec, &["2".into(), "production".into()]),
            Ok(vec![
                "alma-sandbox".to_string(),
                "alma-production".to_string()
            ])
        );
        assert!(parse_stores(&spec, &["9".into()]).is_err());
        let s = parse_scopes(&spec, &["bibs".into(), "bibs:write".into(), "users".into()])
            .expect("scopes");
        let shown: Vec<String> = s.iter().map(Scope::to_string).collect();
        assert_eq!(shown, ["bibs:write", "users:read"]);
        assert!(parse_scopes(&spec, &["billing".into()]).is_err());
        let cw = parse_scopes(&spec, &["configuration:write".into()]).expect("known");
        let why = scope_problems(&spec, &cw, &prod, None);
        assert!(why[0].contains("not granted"), "{why:?}");
        // asmith may grant bibs:read only.
        let bw = parse_scopes(&spec, &["bibs:write".into()]).expect("known");
        assert_eq!(scope_problems(&spec, &bw, &prod, Some("asmith")).len(), 1);
        let menu = area_menu(&spec, &prod, Some("asmith"));
        assert!(menu.contains(&"bibs: read".to_string()), "{menu:?}");
        assert!(
            menu.iter()
                .any(|l| l.starts_with("not within asmith's grants: acquisitions"))
        );
        assert!(
            menu.iter()
                .any(|l| l.starts_with("`configuration:write` is forbidden"))
        );
        let (_, e) = parse_expiry("800d", now).expect("a lifetime");
        assert!(expiry_problem(&spec, &e, &prod, now).is_some());
        let (_, e) = parse_expiry("never", now).expect("never");
        assert!(expiry_problem(&spec, &e, &prod, now).is_some());
        assert!(parse_expiry("2020-01-01", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
        assert_eq!(
            parse_recipients(&spec, &["jdoe".into(), "team:ill-staff".into()], "jdoe"),
            Ok(vec!["team:ill-staff".to_string()])
        );
        let e = parse_recipients(&spec, &["ill-staff".into()], "jdoe").expect_err("a team");
        assert!(e.contains("team:ill-staff"), "{e}");
    }

    #[test]
    fn the_pr_description_keeps_free_text_on_its_line() {
        let spec = library();
        let mut a = answers();
        a.ticket = Some("LSIS-1 | <b>x</b>\nmore".into());
        let d = pr_description(&spec, &a, Path::new("keys/ill-lookup.yaml"), None);
        assert!(
            d.contains("| Ticket | LSIS-1 \\| &lt;b&gt;x&lt;/b&gt; more |"),
            "{d}"
        );
        assert!(!d.contains("write access"), "only read scopes: {d}");
        assert!(d.contains("a production store (`alma-production`)"), "{d}");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(
                Path::new("/r/examples/library/keys"),
                Path::new("/r/schemas/keys.schema.json")
            ),
            Some(PathBuf::from("../../../schemas/keys.schema.json"))
        );
        assert_eq!(
            relative(Path::new("/r/keys"), Path::new("/r/schemas/k.json")),
            Some(PathBuf::from("../schemas/k.json"))
        );
    }
}
