//! people.yaml: people, teams and services with their public recipients and grants.
//! Owns validating that file; must not do I/O and must never echo private key material.

use super::config::{check_id, scope};
use super::model::{Principal, PrincipalKind, RecipientKey, ScopeCatalogue, Team};
use super::pos::YPath;
use super::raw::fields;
use super::yaml::{Ctx, did_you_mean, field};
use crate::diag::{Diagnostic, Location, codes};
use crate::recipient::{self, RecipientError};
use serde_yaml::Value;
use std::collections::BTreeMap;

/// What people.yaml yields. `known` also holds entries that had errors, so references to
/// them do not cascade into "unknown owner".
#[derive(Default)]
pub struct People {
    pub principals: BTreeMap<String, Principal>,
    pub teams: BTreeMap<String, Team>,
    pub known: BTreeMap<String, PrincipalKind>,
    pub team_names: Vec<String>,
}

pub fn parse(ctx: &mut Ctx, cat: &ScopeCatalogue) -> People {
    let mut out = People::default();
    let doc = ctx.doc;
    let top = YPath::root();
    if doc.value.is_null() {
        return out;
    }
    let Some(fields) = ctx.mapping(&doc.value, &top, fields::PEOPLE_FILE) else {
        return out;
    };
    let get = |name: &str| field(&fields, name);
    let mut first_seen: BTreeMap<String, Location> = BTreeMap::new();
    for (section, kind) in [
        ("people", PrincipalKind::Person),
        ("services", PrincipalKind::Service),
    ] {
        let Some(v) = get(section) else { continue };
        let sp = top.key(section);
        let Some(entries) = ctx.mapping(v, &sp, &[]) else {
            continue;
        };
        for (id, val) in entries {
            let ip = sp.key(&id);
            let here = ctx.key_loc(&ip);
            if let Some(prev) = first_seen.get(&id) {
                let d = Diagnostic::error(
                    codes::DUPLICATE_PRINCIPAL,
                    format!("`{id}` is defined twice"),
                )
                .at(here)
                .related("first defined here", prev.clone())
                .hint("people and services share one namespace; rename one of them");
                ctx.push(d);
                continue;
            }
            first_seen.insert(id.clone(), here.clone());
            out.known.insert(id.clone(), kind);
            if !check_id(
                ctx,
                &id,
                &ip,
                if kind == PrincipalKind::Person {
                    "person"
                } else {
                    "service"
                },
            ) {
                continue;
            }
            if let Some(p) = principal(ctx, cat, &id, kind, val, &ip) {
                out.principals.insert(id, p);
            }
        }
    }
    if let Some(v) = get("teams") {
        let tp = top.key("teams");
        if let Some(entries) = ctx.mapping(v, &tp, &[]) {
            for (id, val) in entries {
                let ip = tp.key(&id);
                out.team_names.push(id.clone());
                if !check_id(ctx, &id, &ip, "team") {
                    continue;
                }
                if let Some(t) = team(ctx, &out, &id, val, &ip) {
                    out.teams.insert(id, t);
                }
            }
        }
    }
    out
}

fn principal(
    ctx: &mut Ctx,
    cat: &ScopeCatalogue,
    id: &str,
    kind: PrincipalKind,
    v: &Value,
    p: &YPath,
) -> Option<Principal> {
    let allowed: &[&str] = match kind {
        PrincipalKind::Person => fields::PERSON,
        PrincipalKind::Service => fields::SERVICE,
    };
    let fields = ctx.mapping(v, p, allowed)?;
    let get = |n: &str| field(&fields, n);
    let name = get("name").and_then(|v| ctx.text(v, &p.key("name")));
    let email = get("email")
        .and_then(|v| ctx.text(v, &p.key("email")))
        .map(|e| e.trim().to_string())
        .filter(|e| {
            if super::config::valid_email(e) {
                return true;
            }
            ctx.err(
                codes::INVALID_VALUE,
                &p.key("email"),
                format!("`{e}` is not a mail address"),
                "write a plain address, e.g. `jdoe@example.edu` (notifications go there)",
            );
            false
        });
    let mut recipients: Vec<RecipientKey> = Vec::new();
    let mut ok = true;
    let rp = p.key("recipients");
    let list = match get("recipients") {
        None => &[][..],
        Some(v) => ctx.seq(v, &rp).unwrap_or_default(),
    };
    for (i, r) in list.iter().enumerate() {
        let ip = rp.idx(i);
        let Value::String(text) = r else {
            ctx.wrong_type(
                &ip,
                r,
                "a public key string (`age1...` or `ssh-ed25519 ...`)",
            );
            ok = false;
            continue;
        };
        match recipient::parse(text) {
            Ok(_) => {
                let key = RecipientKey::new(text);
                if recipients.iter().any(|k| k.fingerprint == key.fingerprint) {
                    ctx.warn(
                        codes::DUPLICATE_RECIPIENT,
                        &ip,
                        format!("`{id}` lists the same public key twice"),
                        "remove the duplicate",
                    );
                } else {
                    recipients.push(key);
                }
            }
            Err(RecipientError::PrivateKey) => {
                ok = false;
                ctx.err(
                    codes::PRIVATE_KEY,
                    &ip,
                    format!("a PRIVATE key is pasted as a recipient of `{id}` (its value is not shown)"),
                    "remove it now and treat that identity as compromised: generate a new one, and put only its PUBLIC key (`age1...`, from `age-keygen -y`) here; the secret may be in git history",
                );
            }
            Err(e) => {
                ok = false;
                ctx.err(
                    codes::INVALID_RECIPIENT,
                    &ip,
                    format!("invalid recipient for `{id}`: {e}"),
                    "use an age public key (`age1...`) or an SSH public key line (`ssh-ed25519 AAAA... comment`)",
                );
            }
        }
    }
    if list.is_empty() {
        ok = false;
        let what = if kind == PrincipalKind::Person {
            "person"
        } else {
            "service"
        };
        let d = Diagnostic::error(codes::NO_RECIPIENTS, format!("{what} `{id}` has no recipients"))
            .at(ctx.key_loc(p))
            .hint("add `recipients: [\"age1...\"]` with their age or SSH public key, or nothing can be delivered to them");
        ctx.push(d);
    }
    let may_grant = match get("may_grant") {
        None => None,
        Some(v) => {
            let gp = p.key("may_grant");
            let mut scopes = Vec::new();
            for (i, s) in ctx.seq(v, &gp).unwrap_or_default().iter().enumerate() {
                match scope(ctx, cat, s, &gp.idx(i)) {
                    Some(sc) => scopes.push(sc),
                    None => ok = false,
                }
            }
            Some(scopes)
        }
    };
    ok.then(|| Principal {
        id: id.to_string(),
        kind,
        name,
        email,
        recipients,
        may_grant,
        location: Some(ctx.key_loc(p)),
    })
}

fn team(ctx: &mut Ctx, people: &People, id: &str, v: &Value, p: &YPath) -> Option<Team> {
    let fields = ctx.mapping(v, p, fields::TEAM)?;
    let mp = p.key("members");
    let Some((_, mv)) = fields.iter().find(|(k, _)| k == "members") else {
        ctx.missing(p, "members", "add `members: [person-id, ...]`");
        return None;
    };
    let mut members: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, m) in ctx.seq(mv, &mp).unwrap_or_default().iter().enumerate() {
        let ip = mp.idx(i);
        let Some(name) = ctx.string(m, &ip) else {
            ok = false;
            continue;
        };
        if !people.known.contains_key(&name) {
            ok = false;
            let hint = if name.starts_with("team:") {
                "teams cannot contain teams; list the people".to_string()
            } else {
                did_you_mean(
                    &name,
                    people.known.keys().map(String::as_str),
                    "people and services",
                )
            };
            ctx.err(
                codes::UNKNOWN_MEMBER,
                &ip,
                format!("team `{id}` has unknown member `{name}`"),
                hint,
            );
            continue;
        }
        if !members.contains(&name) {
            members.push(name);
        }
    }
    if members.is_empty() && ok {
        ctx.warn(
            codes::EMPTY_TEAM,
            p,
            format!("team `{id}` has no members"),
            "add members or remove the team",
        );
    }
    members.sort();
    ok.then(|| Team {
        id: id.to_string(),
        members,
        location: Some(ctx.key_loc(p)),
    })
}
