//! keyward.yaml: version, stores, scope catalogue, policy and delivery settings.
//! Owns validating that file (and the scope syntax shared by all files); must not do I/O.

use super::envvar::env_name;
use super::model::{
    DeliveryConfig, EmailNotify, ForbiddenScope, GuardLimits, Guards, NamePattern, NoticeKind,
    NotifyConfig, Policy, Scope, ScopeCatalogue, SmtpTls, Span, StoreConfig, StoreKind,
    WebhookNotify,
};
use super::pos::YPath;
use super::raw::fields;
use super::yaml::{Ctx, did_you_mean, field};
use crate::diag::{Diagnostic, codes};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const SUPPORTED_VERSION: u64 = 1;

/// What keyward.yaml yields. `store_names` also holds stores whose entries had errors,
/// so references to them do not cascade into "unknown store".
pub struct Config {
    pub stores: BTreeMap<String, StoreConfig>,
    pub store_names: BTreeSet<String>,
    pub catalogue: ScopeCatalogue,
    pub policy: Policy,
    pub delivery: DeliveryConfig,
    pub guards: Guards,
    pub notify: Option<NotifyConfig>,
}

impl Config {
    pub fn defaults(root: &Path) -> Config {
        Config {
            stores: BTreeMap::new(),
            store_names: BTreeSet::new(),
            catalogue: ScopeCatalogue::default(),
            policy: Policy::default(),
            delivery: DeliveryConfig {
                outbox: root.join("deliveries"),
                retain: Span::days(7),
            },
            guards: Guards::default(),
            notify: None,
        }
    }
}

/// Identifier rule for stores, people, services and teams: lowercase letters, digits,
/// `-`, `_` and `.`, 1..=64 chars, starting with a letter or digit.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

pub fn check_id(ctx: &mut Ctx, id: &str, p: &YPath, what: &str) -> bool {
    if valid_id(id) {
        return true;
    }
    let d = Diagnostic::error(codes::INVALID_ID, format!("`{id}` is not a valid {what} id"))
        .at(ctx.key_loc(p))
        .hint("use lowercase letters, digits, `-`, `_` or `.` (at most 64, starting with a letter or digit)");
    ctx.push(d);
    false
}

/// Parse and check one `area:level` against the catalogue.
pub fn scope(ctx: &mut Ctx, cat: &ScopeCatalogue, v: &Value, p: &YPath) -> Option<Scope> {
    let s = ctx.string(v, p)?;
    let Some(sc) = Scope::parse(s.trim()) else {
        ctx.err(
            codes::MALFORMED_SCOPE,
            p,
            format!("`{s}` is not a scope"),
            "write scopes as `area:level`, e.g. `bibs:read`",
        );
        return None;
    };
    if !cat.areas.contains(&sc.area) {
        let hint = did_you_mean(&sc.area, cat.areas.iter().map(String::as_str), "areas");
        ctx.err(
            codes::UNKNOWN_AREA,
            p,
            format!("unknown scope area `{}`", sc.area),
            hint,
        );
        return None;
    }
    if cat.level_rank(&sc.level).is_none() {
        let hint = did_you_mean(&sc.level, cat.levels.iter().map(String::as_str), "levels");
        ctx.err(
            codes::UNKNOWN_LEVEL,
            p,
            format!("unknown access level `{}` in `{s}`", sc.level),
            hint,
        );
        return None;
    }
    Some(sc)
}

pub fn parse(ctx: &mut Ctx, root: &Path) -> Config {
    let mut cfg = Config::defaults(root);
    let doc = ctx.doc;
    let top = YPath::root();
    let Some(fields) = ctx.mapping(&doc.value, &top, fields::CONFIG) else {
        return cfg;
    };
    let get = |name: &str| field(&fields, name);

    match get("version") {
        None => ctx.push(
            Diagnostic::error(codes::MISSING_FIELD, "missing required field `version`")
                .at(ctx.loc(&top))
                .hint("start keyward.yaml with `version: 1`"),
        ),
        Some(v) => {
            let p = top.key("version");
            if v.as_u64() != Some(SUPPORTED_VERSION) {
                let shown = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => format!("\"{s}\""),
                    other => super::yaml::type_name(other).to_string(),
                };
                ctx.err(
                    codes::UNSUPPORTED_VERSION,
                    &p,
                    format!("unsupported version {shown}"),
                    format!("this keyward understands `version: {SUPPORTED_VERSION}`"),
                );
            }
        }
    }

    if let Some(v) = get("scopes") {
        parse_catalogue(ctx, v, &top.key("scopes"), &mut cfg);
    }
    match get("stores") {
        Some(v) => parse_stores(ctx, v, &top.key("stores"), root, &mut cfg),
        None => ctx.push(
            Diagnostic::error(codes::MISSING_FIELD, "missing required field `stores`")
                .at(ctx.loc(&top))
                .hint("declare at least one store, e.g. `stores: { alma-production: { kind: sqlite, environment: production } }`"),
        ),
    }
    if let Some(v) = get("policy") {
        parse_policy(ctx, v, &top.key("policy"), &mut cfg);
    }
    if let Some(v) = get("delivery") {
        parse_delivery(ctx, v, &top.key("delivery"), root, &mut cfg);
    }
    let outbox_given = get("delivery")
        .and_then(serde_yaml::Value::as_mapping)
        .is_some_and(|m| m.contains_key("outbox"));
    super::outbox_place::check(ctx, &cfg.stores, &cfg.delivery.outbox, root, outbox_given);
    if let Some(v) = get("guards") {
        cfg.guards = parse_guards(ctx, v, &top.key("guards"));
    }
    if let Some(v) = get("notify") {
        cfg.notify = parse_notify(ctx, v, &top.key("notify"));
    }
    cfg
}

const GUARD_FIELDS: &[&str] = fields::GUARD_LIMITS;

/// One guard value: a count (or a percentage, 0-100), or `none` to switch it off.
fn guard_value(ctx: &mut Ctx, v: &Value, p: &YPath, percent: bool) -> Option<Option<u64>> {
    match v {
        Value::Null => return Some(None),
        Value::String(s) if s == "none" || s == "off" => return Some(None),
        _ => {}
    }
    let n = ctx.uint(v, p)?;
    if percent && n > 100 {
        ctx.err(
            codes::INVALID_VALUE,
            p,
            format!("{n} is not a percentage"),
            "use a whole number from 0 to 100, or `none` to switch this guard off",
        );
        return None;
    }
    Some(Some(n))
}

/// The limits in one mapping (the top level of `guards:` or its `production:`), starting
/// from `base`. Returns the limits and which fields were set.
fn parse_limits(
    ctx: &mut Ctx,
    fields: &[(String, &Value)],
    p: &YPath,
    base: GuardLimits,
) -> (GuardLimits, Vec<&'static str>) {
    let mut out = base;
    let mut set = Vec::new();
    for (k, val) in fields {
        let Some(name) = GUARD_FIELDS.iter().find(|f| **f == k.as_str()) else {
            continue;
        };
        let Some(v) = guard_value(ctx, val, &p.key(k), name.ends_with("_percent")) else {
            continue;
        };
        set.push(*name);
        match *name {
            "max_revokes" => out.max_revokes = v,
            "max_revoke_percent" => out.max_revoke_percent = v,
            "max_replaces" => out.max_replaces = v,
            _ => out.max_replace_percent = v,
        }
    }
    (out, set)
}

/// The stricter of two limits (`None` = no limit).
fn stricter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// `guards:` — safety thresholds. Values left out keep the built-in defaults; for
/// production stores, each value not set under `production:` is the stricter of the
/// top-level value and the built-in production default.
fn parse_guards(ctx: &mut Ctx, v: &Value, p: &YPath) -> Guards {
    let mut g = Guards::default();
    let Some(fields) = ctx.mapping(v, p, fields::GUARDS) else {
        return g;
    };
    let (top, top_set) = parse_limits(ctx, &fields, p, GuardLimits::DEFAULT);
    g.default = top;
    let mut prod = GuardLimits::PRODUCTION;
    for f in &top_set {
        match *f {
            "max_revokes" => prod.max_revokes = stricter(prod.max_revokes, top.max_revokes),
            "max_revoke_percent" => {
                prod.max_revoke_percent = stricter(prod.max_revoke_percent, top.max_revoke_percent)
            }
            "max_replaces" => prod.max_replaces = stricter(prod.max_replaces, top.max_replaces),
            _ => {
                prod.max_replace_percent =
                    stricter(prod.max_replace_percent, top.max_replace_percent)
            }
        }
    }
    for (k, val) in &fields {
        match k.as_str() {
            "production" => {
                let pp = p.key("production");
                if let Some(pf) = ctx.mapping(val, &pp, GUARD_FIELDS) {
                    prod = parse_limits(ctx, &pf, &pp, prod).0;
                }
            }
            "min_keys_for_percent" => {
                if let Some(n) = ctx.uint(val, &p.key(k)) {
                    g.min_keys_for_percent = n;
                }
            }
            _ => {}
        }
    }
    g.production = prod;
    g
}

fn parse_catalogue(ctx: &mut Ctx, v: &Value, p: &YPath, cfg: &mut Config) {
    let Some(fields) = ctx.mapping(v, p, fields::SCOPES) else {
        return;
    };
    let mut cat = ScopeCatalogue::default();
    for (k, val) in fields {
        let fp = p.key(&k);
        let Some(items) = ctx.seq(val, &fp) else {
            continue;
        };
        let mut out: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = fp.idx(i);
            let Some(s) = ctx.string(item, &ip) else {
                continue;
            };
            if s.is_empty() || s.contains(':') || s.chars().any(char::is_whitespace) {
                ctx.err(
                    codes::INVALID_CATALOGUE,
                    &ip,
                    format!("`{s}` is not a valid name here"),
                    "names must be non-empty, without `:` or spaces",
                );
            } else if out.contains(&s) {
                ctx.err(
                    codes::INVALID_CATALOGUE,
                    &ip,
                    format!("`{s}` is listed twice"),
                    "remove the duplicate",
                );
            } else {
                out.push(s);
            }
        }
        if out.is_empty() {
            ctx.err(
                codes::INVALID_CATALOGUE,
                &fp,
                format!("`{fp}` must not be empty"),
                "list at least one entry",
            );
            continue;
        }
        if k == "areas" {
            cat.areas = out;
        } else {
            cat.levels = out;
        }
    }
    cfg.catalogue = cat;
}

/// An `http` store: `url` is https (plain http only on loopback: the token would cross the
/// network in clear) with no user info, and `token_env` names a `KEYWARD_*` variable, so a
/// pull request cannot make CI send another secret of its environment (issue 15, item 12).
fn parse_http_store(
    ctx: &mut Ctx,
    sp: &YPath,
    path: Option<&Value>,
    url: Option<&Value>,
    token_env: Option<&Value>,
) -> Option<StoreKind> {
    if path.is_some() {
        ctx.err(
            codes::INVALID_STORE,
            &sp.key("path"),
            "`path` does not apply to an http store",
            "remove it, or use `kind: sqlite`",
        );
    }
    let url = match url {
        None => {
            ctx.missing(sp, "url", "add `url: \"https://keyward.example.edu\"`");
            None
        }
        Some(u) => ctx
            .string(u, &sp.key("url"))
            .and_then(|u| http_store_url(ctx, &sp.key("url"), u)),
    };
    let token_env = token_env.and_then(|t| {
        let name = ctx.string(t, &sp.key("token_env"))?;
        if name.starts_with(TOKEN_ENV_PREFIX) {
            return Some(name);
        }
        ctx.err(
            codes::UNSAFE_ENDPOINT,
            &sp.key("token_env"),
            format!("`token_env: {name}` does not start with `{TOKEN_ENV_PREFIX}`"),
            format!(
                "rename the variable to `{TOKEN_ENV_PREFIX}{name}`: only `{TOKEN_ENV_PREFIX}*` variables are sent to a store"
            ),
        );
        None
    });
    url.map(|url| StoreKind::Http { url, token_env })
}

/// The prefix every store `token_env` must have.
pub const TOKEN_ENV_PREFIX: &str = "KEYWARD_";

/// An http store's URL, parsed with the client's parser: http(s) with a host and no user
/// info; plain http only on loopback.
fn http_store_url(ctx: &mut Ctx, p: &YPath, u: String) -> Option<String> {
    let problem = match url::Url::parse(u.trim()) {
        Ok(x) if matches!(x.scheme(), "http" | "https") && x.host().is_some() => {
            token_exposure(&u, &x)
        }
        _ => Some((
            codes::INVALID_STORE,
            format!("`{u}` is not an http(s) URL"),
            "write it as `https://host:port`",
        )),
    };
    match problem {
        None => Some(u),
        Some((code, msg, hint)) => {
            ctx.err(code, p, msg, hint);
            None
        }
    }
}

/// How sending the store token to `parsed` (the URL `u` as written) would expose it, if it
/// would: user info in the URL, or plain http beyond loopback.
fn token_exposure(u: &str, parsed: &url::Url) -> Option<(&'static str, String, &'static str)> {
    let shown = parsed.host_str().unwrap_or_default();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some((
            codes::UNSAFE_ENDPOINT,
            format!("the store URL carries user info (`...@{shown}`)"),
            "remove the part before `@`; the token comes from `token_env`",
        ));
    }
    let loopback = parsed
        .host()
        .is_some_and(|h| crate::net::is_loopback_host(&h));
    if parsed.scheme() == "http" && !loopback {
        return Some((
            codes::UNSAFE_ENDPOINT,
            format!("`{u}` would send the store token to {shown} unencrypted"),
            "use `https://`; plain `http://` is only allowed on loopback (127.0.0.1, ::1, localhost)",
        ));
    }
    None
}

fn parse_stores(ctx: &mut Ctx, v: &Value, p: &YPath, root: &Path, cfg: &mut Config) {
    let Some(entries) = ctx.mapping(v, p, &[]) else {
        return;
    };
    if entries.is_empty() {
        ctx.err(
            codes::MISSING_FIELD,
            p,
            "no stores are declared",
            "declare at least one store",
        );
    }
    for (name, val) in entries {
        let sp = p.key(&name);
        cfg.store_names.insert(name.clone());
        if !check_id(ctx, &name, &sp, "store") {
            continue;
        }
        let Some(fields) = ctx.mapping(val, &sp, fields::STORE) else {
            continue;
        };
        let kind = match field(&fields, "kind") {
            None => {
                ctx.missing(&sp, "kind", "add `kind: sqlite` (embedded) or `kind: http`");
                None
            }
            Some(k) => ctx.string(k, &sp.key("kind")),
        };
        let environment = store_environment(ctx, &fields, &sp);
        if let Some(k) = kind.as_deref() {
            super::adapters::refuse_foreign(ctx, k, &fields, &sp);
        }
        let kind_name = kind.clone();
        let kind = match kind.as_deref() {
            None => None,
            Some(k) if super::adapters::KINDS.contains(&k) => {
                super::adapters::parse_kind(ctx, k, &fields, &sp, root)
            }
            Some("sqlite") => sqlite_store(ctx, &fields, &sp, root, &name),
            Some("http") => parse_http_store(
                ctx,
                &sp,
                field(&fields, "path"),
                field(&fields, "url"),
                field(&fields, "token_env"),
            ),
            Some("console") => {
                super::console_store::parse(ctx, &fields, &sp, root, &name).map(StoreKind::Console)
            }
            Some(other) => {
                let hint = did_you_mean(
                    other,
                    [
                        "sqlite",
                        "http",
                        "console",
                        "exec",
                        "postgres-roles",
                        "redis-acl",
                    ],
                    "kinds",
                );
                ctx.err(
                    codes::INVALID_VALUE,
                    &sp.key("kind"),
                    format!("unknown store kind `{other}`"),
                    hint,
                );
                None
            }
        };
        let budget = match (field(&fields, "budget"), kind_name.as_deref()) {
            (Some(b), Some(k)) => super::budget::parse(ctx, &name, k, b, &sp.key("budget")),
            _ => None,
        };
        if let (Some(kind), Some(environment)) = (kind, environment) {
            let location = Some(ctx.key_loc(&sp));
            cfg.stores.insert(
                name.clone(),
                StoreConfig {
                    name,
                    kind,
                    environment,
                    location,
                    budget,
                },
            );
        }
    }
}

/// A store's `environment`: required, a short lowercase name.
fn store_environment(ctx: &mut Ctx, fields: &[(String, &Value)], sp: &YPath) -> Option<String> {
    let Some(e) = field(fields, "environment") else {
        ctx.missing(
            sp,
            "environment",
            "add `environment: production` or `environment: sandbox`",
        );
        return None;
    };
    let e = ctx.string(e, &sp.key("environment"));
    if e.as_deref().is_some_and(|e| !valid_id(e)) {
        ctx.err(
            codes::INVALID_STORE,
            &sp.key("environment"),
            "the environment must be a short lowercase name",
            "e.g. `production` or `sandbox`",
        );
        return None;
    }
    e
}

/// `kind: sqlite`: an embedded database file (default `.keyward/NAME.db`).
fn sqlite_store(
    ctx: &mut Ctx,
    fields: &[(String, &Value)],
    sp: &YPath,
    root: &Path,
    name: &str,
) -> Option<StoreKind> {
    let (here, hint) = ("a sqlite store", "remove it, or use `kind: http`");
    ctx.not_applicable(
        codes::INVALID_STORE,
        fields,
        sp,
        &["url", "token_env"],
        here,
        hint,
    );
    let path = match field(fields, "path") {
        None => Some(root.join(".keyward").join(format!("{name}.db"))),
        Some(v) => ctx.string(v, &sp.key("path")).and_then(|s| {
            if s.trim().is_empty() {
                ctx.err(
                    codes::INVALID_STORE,
                    &sp.key("path"),
                    "the sqlite path is empty",
                    "give a file path, e.g. `.keyward/alma.db`",
                );
                None
            } else {
                Some(root.join(s))
            }
        }),
    };
    path.map(|path| StoreKind::Sqlite { path })
}

fn parse_policy(ctx: &mut Ctx, v: &Value, p: &YPath, cfg: &mut Config) {
    let Some(fields) = ctx.mapping(v, p, fields::POLICY) else {
        return;
    };
    let mut pol = Policy::default();
    for (k, val) in fields {
        let fp = p.key(&k);
        pol.locations.insert(k.clone(), ctx.loc(&fp));
        match k.as_str() {
            "default_lifetime" | "max_lifetime" => {
                let span = match val {
                    Value::Null => None,
                    Value::String(s) if s == "never" => None,
                    _ => ctx.positive_span(val, &fp),
                };
                if k == "default_lifetime" {
                    pol.default_lifetime = span;
                } else {
                    pol.max_lifetime = span;
                }
            }
            "max_keys_per_owner" => {
                if let Some(n) = ctx.uint(val, &fp) {
                    pol.max_keys_per_owner = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            "min_recipients" => parse_min_recipients(ctx, val, &fp, &mut pol),
            "allow_never" => {
                let names = store_list(ctx, val, &fp, cfg);
                pol.allow_never = Some(names);
            }
            "required_fields" => parse_required_fields(ctx, val, &fp, &mut pol),
            "required_labels" => parse_required_labels(ctx, val, &fp, &mut pol),
            "name_patterns" => parse_name_patterns(ctx, val, &fp, cfg, &mut pol),
            "reminders" => parse_reminders(ctx, val, &fp, &mut pol),
            "unused_after" => parse_unused_after(ctx, val, &fp, &mut pol),
            _ => {
                let Some(rules) = ctx.seq(val, &fp) else {
                    continue;
                };
                for (i, rule) in rules.iter().enumerate() {
                    if let Some(r) = parse_forbid(ctx, rule, &fp.idx(i), cfg) {
                        pol.forbid.push(r);
                    }
                }
            }
        }
    }
    if let (Some(d), Some(m)) = (pol.default_lifetime, pol.max_lifetime)
        && d > m
    {
        ctx.err(
            codes::DEFAULT_EXCEEDS_MAX,
            &p.key("default_lifetime"),
            format!("default_lifetime {d} is longer than max_lifetime {m}"),
            "every key without an explicit expiry would break the policy; shorten default_lifetime",
        );
    }
    cfg.policy = pol;
}

/// Each string of the list `val` with its path; a non-list or non-string is reported.
fn each_string(ctx: &mut Ctx, val: &Value, fp: &YPath, mut f: impl FnMut(&mut Ctx, YPath, String)) {
    let Some(items) = ctx.seq(val, fp) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let ip = fp.idx(i);
        if let Some(s) = ctx.string(item, &ip) {
            f(ctx, ip, s);
        }
    }
}

/// `required_fields`: which fields every key must set.
fn parse_required_fields(ctx: &mut Ctx, val: &Value, fp: &YPath, pol: &mut Policy) {
    each_string(ctx, val, fp, |ctx, ip, f| {
        if !fields::REQUIRABLE.contains(&f.as_str()) {
            let hint = did_you_mean(&f, fields::REQUIRABLE.iter().copied(), "fields");
            let msg = format!("`{f}` cannot be required");
            ctx.err(codes::INVALID_VALUE, &ip, msg, hint);
        } else if !pol.required_fields.contains(&f) {
            pol.required_fields.push(f);
        }
    });
}

/// `required_labels`: which labels every key must carry.
fn parse_required_labels(ctx: &mut Ctx, val: &Value, fp: &YPath, pol: &mut Policy) {
    each_string(ctx, val, fp, |ctx, ip, l| {
        if l.trim().is_empty() {
            let hint = "name the label keys must carry, e.g. `ticket`";
            ctx.err(codes::INVALID_VALUE, &ip, "an empty label name", hint);
        } else if !pol.required_labels.contains(&l) {
            pol.required_labels.push(l);
        }
    });
}

/// `name_patterns`: per store (or `*`), a regular expression every key name must match.
fn parse_name_patterns(ctx: &mut Ctx, val: &Value, fp: &YPath, cfg: &Config, pol: &mut Policy) {
    let Some(entries) = ctx.mapping(val, fp, &[]) else {
        return;
    };
    for (store, pv) in entries {
        let sp = fp.key(&store);
        if store != "*" && !cfg.store_names.contains(&store) {
            let hint = did_you_mean(&store, cfg.store_names.iter().map(String::as_str), "stores");
            ctx.push(
                Diagnostic::error(codes::UNKNOWN_STORE, format!("unknown store `{store}`"))
                    .at(ctx.key_loc(&sp))
                    .hint(hint),
            );
            continue;
        }
        let Some(pattern) = ctx.string(pv, &sp) else {
            continue;
        };
        match regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
        {
            Ok(regex) => {
                pol.locations
                    .insert(format!("name_patterns.{store}"), ctx.loc(&sp));
                pol.name_patterns.push(NamePattern {
                    store,
                    pattern,
                    regex,
                });
            }
            Err(e) => {
                let why = e.to_string();
                let why = why.lines().last().unwrap_or("").trim().to_string();
                ctx.err(
                    codes::INVALID_VALUE,
                    &sp,
                    format!("`{pattern}` is not a valid regular expression: {why}"),
                    "write a regular expression the whole key name must match, e.g. `[a-z]+(-[a-z0-9]+)*-prod`",
                );
            }
        }
    }
}

/// `reminders`: distinct offsets before expiry, longest first.
fn parse_reminders(ctx: &mut Ctx, val: &Value, fp: &YPath, pol: &mut Policy) {
    let Some(items) = ctx.seq(val, fp) else {
        return;
    };
    let mut spans = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = fp.idx(i);
        let Some(s) = ctx.positive_span(item, &ip) else {
            continue;
        };
        if spans.contains(&s) {
            ctx.err(
                codes::INVALID_VALUE,
                &ip,
                format!("reminder offset `{s}` is listed twice"),
                "list distinct offsets before expiry, e.g. `[30d, 14d, 7d, 1d]`",
            );
            continue;
        }
        spans.push(s);
    }
    spans.sort_by(|a, b| b.cmp(a));
    pol.reminders = spans;
}

/// `unused_after: 120d` (or `never`): at least a day, since a call is counted per UTC day
/// and the usage of a running server is written every few seconds.
fn parse_unused_after(ctx: &mut Ctx, val: &Value, fp: &YPath, pol: &mut Policy) {
    if val.as_str() == Some("never") || val.is_null() {
        return;
    }
    let Some(span) = ctx.positive_span(val, fp) else {
        return;
    };
    if span < Span::days(1) {
        ctx.err(
            codes::UNUSED_AFTER_TOO_SHORT,
            fp,
            format!("unused_after {span} is shorter than a day"),
            "keys used once a day or less would be disabled between two calls; write days, e.g. `120d`",
        );
        return;
    }
    pol.unused_after = Some(span);
}

/// `min_recipients: 2` or `min_recipients: { default: 1, production: 2 }`.
fn parse_min_recipients(ctx: &mut Ctx, v: &Value, p: &YPath, pol: &mut Policy) {
    if !matches!(v, Value::Mapping(_)) {
        if let Some(n) = ctx.uint(v, p) {
            pol.min_recipients = usize::try_from(n).unwrap_or(usize::MAX);
        }
        return;
    }
    let Some(entries) = ctx.mapping(v, p, &[]) else {
        return;
    };
    for (env, val) in entries {
        let ep = p.key(&env);
        if env != "default" && !check_id(ctx, &env, &ep, "environment") {
            continue;
        }
        let Some(n) = ctx.uint(val, &ep) else {
            continue;
        };
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if env == "default" {
            pol.min_recipients = n;
        } else {
            pol.locations
                .insert(format!("min_recipients.{env}"), ctx.loc(&ep));
            pol.min_recipients_by_env.insert(env, n);
        }
    }
}

/// A list of store names from keyward.yaml; unknown names are reported.
fn store_list(ctx: &mut Ctx, v: &Value, p: &YPath, cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in ctx.seq(v, p).unwrap_or_default().iter().enumerate() {
        let ip = p.idx(i);
        let Some(name) = ctx.string(s, &ip) else {
            continue;
        };
        if !cfg.store_names.contains(&name) {
            let hint = did_you_mean(&name, cfg.store_names.iter().map(String::as_str), "stores");
            ctx.err(
                codes::UNKNOWN_STORE,
                &ip,
                format!("unknown store `{name}`"),
                hint,
            );
            continue;
        }
        out.push(name);
    }
    out
}

fn parse_forbid(ctx: &mut Ctx, v: &Value, p: &YPath, cfg: &Config) -> Option<ForbiddenScope> {
    let fields = ctx.mapping(v, p, fields::FORBID)?;
    let get = |n: &str| field(&fields, n);
    let scope = match get("scope") {
        None => {
            ctx.missing(
                p,
                "scope",
                "add the scope to forbid, e.g. `scope: configuration:write`",
            );
            None
        }
        Some(s) => scope(ctx, &cfg.catalogue, s, &p.key("scope")),
    };
    let reason = match get("reason") {
        None => {
            ctx.missing(p, "reason", "say why, so requesters understand the refusal");
            None
        }
        Some(r) => ctx.text(r, &p.key("reason")),
    };
    let mut stores = Vec::new();
    if let Some(sv) = get("stores") {
        let sp = p.key("stores");
        for (i, s) in ctx.seq(sv, &sp).unwrap_or_default().iter().enumerate() {
            let ip = sp.idx(i);
            let Some(name) = ctx.string(s, &ip) else {
                continue;
            };
            if !cfg.store_names.contains(&name) {
                let hint =
                    did_you_mean(&name, cfg.store_names.iter().map(String::as_str), "stores");
                ctx.err(
                    codes::UNKNOWN_STORE,
                    &ip,
                    format!("unknown store `{name}`"),
                    hint,
                );
                continue;
            }
            stores.push(name);
        }
    }
    let mut environments = Vec::new();
    if let Some(ev) = get("environments") {
        let ep = p.key("environments");
        let known: BTreeSet<&str> = cfg
            .stores
            .values()
            .map(|s| s.environment.as_str())
            .collect();
        for (i, e) in ctx.seq(ev, &ep).unwrap_or_default().iter().enumerate() {
            let ip = ep.idx(i);
            let Some(env) = ctx.string(e, &ip) else {
                continue;
            };
            // A misspelt environment would switch the rule off silently: refuse it.
            if !known.contains(env.as_str()) {
                let hint = did_you_mean(&env, known.iter().copied(), "environments");
                ctx.err(
                    codes::INVALID_VALUE,
                    &ip,
                    format!("no store serves the environment `{env}`"),
                    hint,
                );
                continue;
            }
            environments.push(env);
        }
    }
    Some(ForbiddenScope {
        scope: scope?,
        reason: reason?,
        stores,
        environments,
        location: Some(ctx.loc(p)),
    })
}

fn parse_delivery(ctx: &mut Ctx, v: &Value, p: &YPath, root: &Path, cfg: &mut Config) {
    let Some(fields) = ctx.mapping(v, p, fields::DELIVERY) else {
        return;
    };
    for (k, val) in fields {
        let fp = p.key(&k);
        if k == "outbox" {
            if let Some(s) = ctx.string(val, &fp) {
                if s.trim().is_empty() {
                    ctx.err(
                        codes::INVALID_VALUE,
                        &fp,
                        "the outbox path is empty",
                        "e.g. `outbox: deliveries`",
                    );
                } else {
                    cfg.delivery.outbox = root.join(s);
                }
            }
        } else if let Some(s) = ctx.span(val, &fp) {
            cfg.delivery.retain = s;
        }
    }
}

/// A plain mail address `local@domain`: one `@`, both sides non-empty, no spaces, quotes,
/// angle brackets, commas or control characters (so it cannot smuggle a header).
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && (domain.contains('.') || domain == "localhost")
        && s.len() <= 254
        && !s.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | '"' | ',' | ';' | '(' | ')' | '\\')
        })
}

/// `addr@example.edu` or `Display Name <addr@example.edu>`.
fn valid_mailbox(s: &str) -> bool {
    let s = s.trim();
    match s.rsplit_once('<') {
        Some((name, rest)) => {
            rest.strip_suffix('>').is_some_and(valid_email)
                && !name
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '<' | '>' | '"'))
        }
        None => valid_email(s),
    }
}

/// Is `host` the local machine (so a plain connection never leaves it)?
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `notify:` — email and/or webhook channels, and which messages they carry.
fn parse_notify(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<NotifyConfig> {
    let fields = ctx.mapping(v, p, fields::NOTIFY)?;
    let get = |n: &str| field(&fields, n);
    let mut ok = true;
    let email = match get("email") {
        None => None,
        Some(ev) => {
            let e = parse_notify_email(ctx, ev, &p.key("email"));
            ok &= e.is_some();
            e
        }
    };
    let webhook = match get("webhook") {
        None => None,
        Some(wv) => {
            let w = parse_notify_webhook(ctx, wv, &p.key("webhook"));
            ok &= w.is_some();
            w
        }
    };
    let mut on: BTreeSet<NoticeKind> = NoticeKind::ALL.into_iter().collect();
    if let Some(ov) = get("on") {
        let op = p.key("on");
        on.clear();
        for (i, item) in ctx.seq(ov, &op).unwrap_or_default().iter().enumerate() {
            let ip = op.idx(i);
            let Some(name) = ctx.string(item, &ip) else {
                ok = false;
                continue;
            };
            match NoticeKind::parse(&name) {
                Some(k) => {
                    on.insert(k);
                }
                None => {
                    ok = false;
                    let hint =
                        did_you_mean(&name, NoticeKind::ALL.map(NoticeKind::as_str), "messages");
                    ctx.err(
                        codes::INVALID_VALUE,
                        &ip,
                        format!("unknown message kind `{name}`"),
                        hint,
                    );
                }
            }
        }
    }
    if email.is_none() && webhook.is_none() && ok {
        ctx.push(
            Diagnostic::error(codes::MISSING_FIELD, "`notify` names no channel")
                .at(ctx.key_loc(p))
                .hint("add `email:` (SMTP) and/or `webhook:` (JSON POST), or remove `notify:`"),
        );
        return None;
    }
    ok.then(|| NotifyConfig {
        email,
        webhook,
        on,
        location: Some(ctx.key_loc(p)),
    })
}

fn parse_notify_email(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<EmailNotify> {
    let fields = ctx.mapping(v, p, fields::NOTIFY_EMAIL)?;
    let get = |n: &str| field(&fields, n);
    let mut ok = true;
    let host = smtp_host(ctx, get("host"), p);
    let tls = smtp_tls(ctx, get("tls"), p);
    let port = match get("port") {
        None => tls.map(SmtpTls::default_port),
        Some(pv) => ctx.uint(pv, &p.key("port")).and_then(|n| {
            let port = u16::try_from(n).ok().filter(|n| *n > 0);
            if port.is_none() {
                ctx.err(
                    codes::INVALID_VALUE,
                    &p.key("port"),
                    format!("{n} is not a TCP port"),
                    "use 587 (starttls), 465 (tls) or 25",
                );
            }
            port
        }),
    };
    let (username, password_env) = smtp_login(ctx, &fields, p, &mut ok);
    let connections = smtp_connections(ctx, get("connections"), p);
    ok &= connections.is_some();
    if let (Some(SmtpTls::None), Some(h)) = (tls, &host)
        && username.is_some()
        && !is_loopback_host(h)
    {
        ctx.err(
            codes::INVALID_VALUE,
            &p.key("tls"),
            format!("`tls: none` would send the SMTP password to {h} in plain text"),
            "use `tls: starttls` (or `tls`); `none` with a login is only allowed for a relay on loopback",
        );
        ok = false;
    }
    let from = mail_from(ctx, get("from"), p);
    let to = get("to").map_or_else(Vec::new, |tv| mail_to(ctx, tv, &p.key("to"), &mut ok));
    let owners = match get("owners") {
        None => true,
        Some(b) => ctx.boolean(b, &p.key("owners")).unwrap_or(true),
    };
    if !owners && to.is_empty() && ok {
        ctx.err(
            codes::INVALID_VALUE,
            &p.key("owners"),
            "with `owners: false` and no `to:` addresses, email reaches nobody",
            "add `to: [security@example.edu]`, or set `owners: true`",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(EmailNotify {
        host: host?,
        port: port?,
        tls: tls?,
        username,
        password_env,
        from: from?,
        to,
        owners,
        connections: connections?,
        location: Some(ctx.key_loc(p)),
    })
}

/// `notify.email.connections`: how many SMTP connections a run keeps open at once
/// ([`EmailNotify::DEFAULT_CONNECTIONS`] when absent), 1 to [`EmailNotify::MAX_CONNECTIONS`].
fn smtp_connections(ctx: &mut Ctx, v: Option<&Value>, p: &YPath) -> Option<u8> {
    let Some(v) = v else {
        return Some(EmailNotify::DEFAULT_CONNECTIONS);
    };
    let cp = p.key("connections");
    let n = ctx.uint(v, &cp)?;
    let max = EmailNotify::MAX_CONNECTIONS;
    let fits = u8::try_from(n).ok().filter(|n| (1..=max).contains(n));
    if fits.is_none() {
        ctx.err(
            codes::INVALID_VALUE,
            &cp,
            format!("{n} SMTP connections is outside 1-{max}"),
            format!(
                "use 1 to {max} (default {}): most servers limit the connections of one login",
                EmailNotify::DEFAULT_CONNECTIONS
            ),
        );
    }
    fits
}

/// `notify.email.host`: a host name or address alone (no port, no path).
fn smtp_host(ctx: &mut Ctx, v: Option<&Value>, p: &YPath) -> Option<String> {
    let Some(h) = v else {
        ctx.missing(
            p,
            "host",
            "add the SMTP server, e.g. `host: smtp.example.edu`",
        );
        return None;
    };
    let h = ctx.string(h, &p.key("host"))?.trim().to_string();
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    let bad_colon = h.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err();
    if h.is_empty() || h.contains('/') || h.contains(char::is_whitespace) || bad_colon {
        ctx.err(
            codes::INVALID_VALUE,
            &p.key("host"),
            format!("`{h}` is not a host name"),
            "give the host alone (e.g. `smtp.example.edu`); the port goes in `port:`",
        );
        return None;
    }
    Some(h)
}

/// `notify.email.tls`: starttls (the default), tls or none.
fn smtp_tls(ctx: &mut Ctx, v: Option<&Value>, p: &YPath) -> Option<SmtpTls> {
    let Some(t) = v else {
        return Some(SmtpTls::Starttls);
    };
    match ctx.string(t, &p.key("tls"))?.as_str() {
        "starttls" => Some(SmtpTls::Starttls),
        "tls" => Some(SmtpTls::Tls),
        "none" => Some(SmtpTls::None),
        other => {
            let hint = did_you_mean(other, ["starttls", "tls", "none"], "values");
            ctx.err(
                codes::INVALID_VALUE,
                &p.key("tls"),
                format!("unknown SMTP security `{other}`"),
                hint,
            );
            None
        }
    }
}

/// `notify.email.username` and `password_env`: both or neither (clears `ok` when not).
fn smtp_login(
    ctx: &mut Ctx,
    fields: &[(String, &Value)],
    p: &YPath,
    ok: &mut bool,
) -> (Option<String>, Option<String>) {
    let username = field(fields, "username").and_then(|u| ctx.text(u, &p.key("username")));
    let password_env = field(fields, "password_env").and_then(|e| {
        let n = env_name(ctx, e, &p.key("password_env"));
        *ok &= n.is_some();
        n
    });
    if username.is_some() != password_env.is_some() && *ok {
        let (field, hint) = if username.is_some() {
            (
                "username",
                "add `password_env: NAME`, the environment variable holding the SMTP password",
            )
        } else {
            ("password_env", "add `username:` for the SMTP login")
        };
        ctx.err(
            codes::MISSING_FIELD,
            &p.key(field),
            "an SMTP login needs both `username` and `password_env`",
            hint,
        );
        *ok = false;
    }
    (username, password_env)
}

/// `notify.email.from`: required, a mailbox (`keyward <keyward@example.edu>`).
fn mail_from(ctx: &mut Ctx, v: Option<&Value>, p: &YPath) -> Option<String> {
    let Some(f) = v else {
        ctx.missing(
            p,
            "from",
            "add the sender, e.g. `from: keyward <keyward@example.edu>`",
        );
        return None;
    };
    let f = ctx.string(f, &p.key("from"))?;
    if !valid_mailbox(&f) {
        ctx.err(
            codes::INVALID_VALUE,
            &p.key("from"),
            format!("`{f}` is not a mail address"),
            "write `keyward@example.edu` or `keyward <keyward@example.edu>`",
        );
        return None;
    }
    Some(f.trim().to_string())
}

/// `notify.email.to`: plain addresses, each once (clears `ok` on a bad one).
fn mail_to(ctx: &mut Ctx, v: &Value, tp: &YPath, ok: &mut bool) -> Vec<String> {
    let mut to = Vec::new();
    for (i, item) in ctx.seq(v, tp).unwrap_or_default().iter().enumerate() {
        let ip = tp.idx(i);
        let Some(a) = ctx.string(item, &ip) else {
            *ok = false;
            continue;
        };
        let a = a.trim().to_string();
        if !valid_email(&a) {
            ctx.err(
                codes::INVALID_VALUE,
                &ip,
                format!("`{a}` is not a mail address"),
                "write a plain address, e.g. `security@example.edu`",
            );
            *ok = false;
        } else if !to.contains(&a) {
            to.push(a);
        }
    }
    to
}

/// A webhook URL, parsed once with the parser the HTTP client uses (so no spelling such
/// as `http://evil.example\\@localhost/` reads as one host here and another there): http(s)
/// with a host and no user info; plain http only to loopback; an IP literal that is not
/// public only with `allow_private`. Host names are resolved and checked at each send.
fn webhook_url(ctx: &mut Ctx, p: &YPath, u: &str, allow_private: bool) -> Option<url::Url> {
    let bad = |ctx: &mut Ctx, code: &'static str, msg: String, hint: &str| {
        ctx.err(code, p, msg, hint);
        None
    };
    let parsed = match url::Url::parse(u) {
        Ok(x) if matches!(x.scheme(), "http" | "https") && x.host().is_some() => x,
        _ => {
            return bad(
                ctx,
                codes::INVALID_VALUE,
                format!("`{u}` is not an http(s) URL"),
                "write it as `https://host/path`",
            );
        }
    };
    let host = parsed.host().expect("checked above");
    let shown = parsed.host_str().unwrap_or_default().to_string();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad(
            ctx,
            codes::UNSAFE_ENDPOINT,
            format!("the webhook URL carries user info (`...@{shown}`)"),
            "remove the part before `@`; sign requests with `secret_env` instead",
        );
    }
    let why = crate::net::host_ip(&host).and_then(crate::net::non_public);
    if let Some(why) = why.filter(|_| !allow_private) {
        return bad(
            ctx,
            codes::UNSAFE_ENDPOINT,
            format!("the webhook host {shown} is {why}"),
            "point it at a public receiver, or add `allow_private: true` under `notify.webhook` if the receiver is on your own network",
        );
    }
    if parsed.scheme() == "http" && !crate::net::is_loopback_host(&host) {
        return bad(
            ctx,
            codes::INVALID_VALUE,
            format!("`{u}` would send notifications to {shown} unencrypted"),
            "use `https://`; plain `http://` is only allowed on loopback",
        );
    }
    Some(parsed)
}

fn parse_notify_webhook(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<WebhookNotify> {
    let fields = ctx.mapping(v, p, fields::NOTIFY_WEBHOOK)?;
    let get = |n: &str| field(&fields, n);
    let allow_private = match get("allow_private") {
        None => false,
        Some(b) => ctx.boolean(b, &p.key("allow_private")).unwrap_or(false),
    };
    let url = match get("url") {
        None => {
            ctx.missing(p, "url", "add `url: https://hooks.example.edu/keyward`");
            None
        }
        Some(u) => ctx
            .string(u, &p.key("url"))
            .and_then(|u| webhook_url(ctx, &p.key("url"), u.trim(), allow_private)),
    };
    let secret_env = match get("secret_env") {
        None => None,
        Some(e) => Some(env_name(ctx, e, &p.key("secret_env"))?),
    };
    Some(WebhookNotify {
        url: url?,
        secret_env,
        allow_private,
        location: Some(ctx.key_loc(p)),
    })
}
