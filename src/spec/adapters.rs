//! The settings of the stores keyward reaches but does not run (`kind: exec` adapters,
//! `postgres-roles`, `redis-acl`) in keyward.yaml: parsed into `StoreKind` with every
//! problem reported at its line. Must not open a connection or start a process.

use super::envvar::env_name;
use super::model::{ConnUrl, StoreKind};
use super::pos::YPath;
use super::yaml::{Ctx, field};
use crate::diag::codes;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The kinds this module parses.
pub const KINDS: &[&str] = &["exec", "postgres-roles", "redis-acl"];

/// Fields that belong to some kinds only: (field, kinds that take it).
const OWNED: &[(&str, &[&str])] = &[
    ("path", &["sqlite"]),
    ("url", &["http", "postgres-roles", "redis-acl"]),
    ("token_env", &["http"]),
    ("url_env", &["postgres-roles", "redis-acl"]),
    ("role_prefix", &["postgres-roles"]),
    ("user_prefix", &["redis-acl"]),
    ("grants", &["postgres-roles", "redis-acl"]),
    ("command", &["exec"]),
    ("env", &["exec"]),
    ("timeout", &["exec"]),
];

/// Report every field of `fields` that `kind` does not take.
pub fn refuse_foreign(ctx: &mut Ctx, kind: &str, fields: &[(String, &Value)], sp: &YPath) {
    for (f, _) in fields {
        let Some((_, kinds)) = OWNED.iter().find(|(n, _)| n == f) else {
            continue;
        };
        if !kinds.contains(&kind) {
            ctx.err(
                codes::INVALID_STORE,
                &sp.key(f),
                format!("`{f}` does not apply to a {kind} store"),
                format!("remove it; `{f}` is for {} stores", kinds.join(" / ")),
            );
        }
    }
}

/// Parse the settings of a store of one of `KINDS`.
pub fn parse_kind(
    ctx: &mut Ctx,
    kind: &str,
    fields: &[(String, &Value)],
    sp: &YPath,
    root: &Path,
) -> Option<StoreKind> {
    let get = |n: &str| field(fields, n);
    match kind {
        "exec" => {
            let mut k = parse_exec(ctx, get("command"), get("env"), get("timeout"), sp)?;
            // A relative program path is relative to the repository, not to where keyward
            // happens to run; a bare name is looked up on PATH when the store is opened.
            if let StoreKind::Exec { command, .. } = &mut k
                && command[0].contains('/')
                && Path::new(&command[0]).is_relative()
            {
                command[0] = root.join(&command[0]).display().to_string();
            }
            Some(k)
        }
        "postgres-roles" => {
            let url = conn_url(
                ctx,
                get("url"),
                get("url_env"),
                sp,
                &["postgres://", "postgresql://"],
            );
            let prefix = prefix(ctx, get("role_prefix"), &sp.key("role_prefix"), "kw_", 32);
            let grants = grants(ctx, get("grants"), &sp.key("grants"), false);
            Some(StoreKind::PostgresRoles {
                url: url?,
                role_prefix: prefix?,
                grants: grants?,
            })
        }
        _ => {
            let url = conn_url(ctx, get("url"), get("url_env"), sp, &["redis://"]);
            let prefix = prefix(ctx, get("user_prefix"), &sp.key("user_prefix"), "kw-", 64);
            let grants = grants(ctx, get("grants"), &sp.key("grants"), true);
            Some(StoreKind::RedisAcl {
                url: url?,
                user_prefix: prefix?,
                grants: grants?,
            })
        }
    }
}

fn parse_exec(
    ctx: &mut Ctx,
    command: Option<&Value>,
    env: Option<&Value>,
    timeout: Option<&Value>,
    sp: &YPath,
) -> Option<StoreKind> {
    let Some(cv) = command else {
        ctx.missing(
            sp,
            "command",
            "add `command: [keyward-store-NAME, --flag, value]`",
        );
        return None;
    };
    let cp = sp.key("command");
    let command: Vec<String> = match cv {
        Value::String(s) => vec![s.clone()],
        other => {
            let items = ctx.seq(other, &cp)?;
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                out.push(ctx.string(v, &cp.idx(i))?);
            }
            out
        }
    };
    if command.first().is_none_or(|c| c.trim().is_empty()) {
        ctx.err(
            codes::INVALID_STORE,
            &cp,
            "the adapter command is empty",
            "give the program first, then its arguments: `[keyward-store-gateway, --region, eu]`",
        );
        return None;
    }
    let mut vars = Vec::new();
    if let Some(ev) = env {
        let ep = sp.key("env");
        for (i, v) in ctx.seq(ev, &ep)?.iter().enumerate() {
            vars.push(env_name(ctx, v, &ep.idx(i))?);
        }
    }
    let timeout_secs = match timeout {
        None => 30,
        Some(t) => ctx
            .positive_span(t, &sp.key("timeout"))?
            .seconds
            .clamp(1, 3600) as u64,
    };
    Some(StoreKind::Exec {
        command,
        env: vars,
        timeout_secs,
    })
}

fn conn_url(
    ctx: &mut Ctx,
    url: Option<&Value>,
    url_env: Option<&Value>,
    sp: &YPath,
    schemes: &[&str],
) -> Option<ConnUrl> {
    match (url, url_env) {
        (Some(_), Some(_)) => {
            ctx.err(
                codes::INVALID_STORE,
                &sp.key("url_env"),
                "give either `url` or `url_env`, not both",
                "keep `url_env` when the URL carries a password",
            );
            None
        }
        (None, None) => {
            ctx.missing(
                sp,
                "url",
                format!(
                    "add `url: \"{}...\"`, or `url_env: VAR` naming a variable that holds it",
                    schemes[0]
                ),
            );
            None
        }
        (None, Some(e)) => env_name(ctx, e, &sp.key("url_env")).map(ConnUrl::Env),
        (Some(u), None) => {
            let p = sp.key("url");
            let u = ctx.string(u, &p)?;
            if schemes.iter().any(|s| u.starts_with(s)) {
                Some(ConnUrl::Value(u))
            } else {
                ctx.err(
                    codes::INVALID_STORE,
                    &p,
                    format!(
                        "`{}` is not a {} URL",
                        u.split('@').next_back().unwrap_or(""),
                        schemes[0]
                    ),
                    format!("write it as `{}host:port`", schemes[0]),
                );
                None
            }
        }
    }
}

fn prefix(
    ctx: &mut Ctx,
    v: Option<&Value>,
    p: &YPath,
    default: &str,
    max: usize,
) -> Option<String> {
    let Some(v) = v else {
        return Some(default.to_owned());
    };
    let s = ctx.string(v, p)?;
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Some(s)
    } else {
        ctx.err(
            codes::INVALID_STORE,
            p,
            format!("`{s}` is not a usable name prefix"),
            format!("1 to {max} letters, digits, `-`, `_` or `.`, e.g. `{default}`"),
        );
        None
    }
}

/// `grants: { bibs:read: [bibs_reader] }`: scope -> the store's permission names.
fn grants(
    ctx: &mut Ctx,
    v: Option<&Value>,
    p: &YPath,
    acl_rules: bool,
) -> Option<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else {
        return Some(out);
    };
    let mut ok = true;
    for (scope, val) in ctx.mapping(v, p, &[])? {
        let sp = p.key(&scope);
        let Some(items) = ctx.seq(val, &sp) else {
            ok = false;
            continue;
        };
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(n) = ctx.string(item, &sp.idx(i)) else {
                ok = false;
                continue;
            };
            let bad = if acl_rules {
                n.is_empty()
                    || n.chars().any(char::is_whitespace)
                    || n.starts_with(['>', '<', '#', '!'])
                    || n.eq_ignore_ascii_case("nopass")
            } else {
                n.is_empty()
                    || n.len() > 63
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            };
            if bad {
                let hint = if acl_rules {
                    "one ACL rule per item (`+@read`, `~bibs:*`); passwords are keyward's"
                } else {
                    "the name of an existing group role: letters, digits, `-`, `_`, `.`"
                };
                ctx.err(
                    codes::INVALID_STORE,
                    &sp.idx(i),
                    format!("`{n}` cannot be granted"),
                    hint,
                );
                ok = false;
                continue;
            }
            names.push(n);
        }
        out.insert(scope, names);
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::{CONFIG_FILE, PEOPLE_FILE, StoreKind, load_from_files};
    use crate::diag::codes;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn load(stores: &str) -> Result<BTreeMap<String, StoreKind>, Vec<(String, usize)>> {
        let r = age::x25519::Identity::generate().to_public().to_string();
        let files = BTreeMap::from([
            (
                PathBuf::from(CONFIG_FILE),
                format!("version: 1\nstores:\n{stores}").into_bytes(),
            ),
            (
                PathBuf::from(PEOPLE_FILE),
                format!("people:\n  jdoe: {{ recipients: [\"{r}\"] }}\n").into_bytes(),
            ),
        ]);
        match load_from_files(Path::new("/repo"), files) {
            Ok(l) => Ok(l
                .spec
                .stores
                .into_iter()
                .map(|(n, c)| (n, c.kind))
                .collect()),
            Err(d) => Err(d
                .iter()
                .map(|d| {
                    (
                        d.code.to_string(),
                        d.location.as_ref().map_or(0, |l| l.line),
                    )
                })
                .collect()),
        }
    }

    #[test]
    fn credential_stores_parse_with_defaults() {
        let s = load(
            "  pg: { kind: postgres-roles, url_env: PG_URL, environment: production, grants: { bibs:read: [bibs_reader] } }\n\
             \x20 cache: { kind: redis-acl, url: \"redis://127.0.0.1:6379\", user_prefix: app-, environment: sandbox }\n",
        )
        .expect("valid");
        assert_eq!(
            s["pg"],
            StoreKind::PostgresRoles {
                url: super::ConnUrl::Env("PG_URL".into()),
                role_prefix: "kw_".into(),
                grants: BTreeMap::from([("bibs:read".into(), vec!["bibs_reader".into()])]),
            }
        );
        assert_eq!(
            s["cache"],
            StoreKind::RedisAcl {
                url: super::ConnUrl::Value("redis://127.0.0.1:6379".into()),
                user_prefix: "app-".into(),
                grants: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let errs = load(
            "  a: { kind: postgres-roles, url: \"postgres://x\", url_env: X, environment: production }\n\
             \x20 b: { kind: sqlite, grants: { bibs:read: [r] }, environment: production }\n\
             \x20 c: { kind: redis-acl, url: \"redis://h\", environment: sandbox, grants: { bibs:read: [\">pw\"] } }\n\
             \x20 d: { kind: redis-acl, environment: sandbox, user_prefix: \"bad prefix\" }\n\
             \x20 e: { kind: postgres-roles, url: \"mysql://h\", environment: production }\n\
             \x20 f: { kind: redis-acls, environment: sandbox }\n",
        )
        .expect_err("invalid");
        let want = [
            (codes::INVALID_STORE, 3),
            (codes::INVALID_STORE, 4),
            (codes::INVALID_STORE, 5),
            (codes::MISSING_FIELD, 6),
            (codes::INVALID_STORE, 6),
            (codes::INVALID_STORE, 7),
            (codes::INVALID_VALUE, 8),
        ];
        for (code, line) in want {
            assert!(
                errs.iter().any(|(c, l)| c == code && *l == line),
                "{code} at line {line} in {errs:?}"
            );
        }
    }
}
