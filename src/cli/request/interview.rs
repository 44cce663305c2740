//! The interview of `keyward request` on a terminal: one question per value the flags left
//! out, each listing the choices and checking the answer against the spec and policy as it
//! is given (the `request` library module decides what is acceptable). Must not write
//! anything.

use super::given::Given;
use super::prompt::{Prompter, words};
use anyhow::Result;
use keyward::request::{self, Answers, ExpiryAnswer};
use keyward::spec::{self, PrincipalKind, Spec};
use std::io::BufRead;

type Now = chrono::DateTime<chrono::Utc>;

/// The person in people.yaml whose email is git's `user.email`, as the default owner.
fn default_owner(spec: &Spec) -> Option<String> {
    let cfg = git2::Repository::discover(&spec.root)
        .and_then(|r| r.config())
        .or_else(|_| git2::Config::open_default())
        .ok()?;
    let email = cfg.get_string("user.email").ok()?;
    spec.principals
        .values()
        .find(|p| {
            p.kind == PrincipalKind::Person
                && p.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email.trim()))
        })
        .map(|p| p.id.clone())
}

/// Ask for every value the flags left out.
pub fn interview<R: BufRead>(
    p: &mut Prompter<R>,
    spec: &Spec,
    g: Given,
    now: Now,
) -> Result<Answers> {
    p.say("A new API key request: keyward asks a few questions and writes a key file for a pull request.\nNothing is written until every answer has passed the policy. Ctrl-C quits.\n");
    let known_stores = g.stores.clone().unwrap_or_default();
    let name = match g.name {
        Some(n) => n,
        None => ask_name(p, spec, &known_stores)?,
    };
    let purpose = match g.purpose {
        Some(x) => Some(x),
        None => ask_purpose(p, spec)?,
    };
    let stores = match g.stores {
        Some(s) => s,
        None => ask_stores(p, spec, &name)?,
    };
    let owner = match g.owner {
        Some(o) => o,
        None => ask_owner(p, spec)?,
    };
    let scopes = match g.scopes {
        Some(s) => s,
        None => ask_scopes(p, spec, &stores, &owner)?,
    };
    let expiry = match g.expiry {
        Some(e) => Some(e),
        None => ask_expiry(p, spec, &stores, now)?,
    };
    let recipients = match g.recipients {
        Some(r) => r.into_iter().filter(|r| *r != owner).collect(),
        None => ask_recipients(p, spec, &stores, &owner)?,
    };
    let ticket = match g.ticket {
        Some(t) => Some(t),
        None => ask_ticket(p, spec)?,
    };
    Ok(Answers {
        name,
        purpose,
        stores,
        owner,
        scopes,
        expiry,
        recipients,
        ticket,
    })
}

fn ask_name<R: BufRead>(p: &mut Prompter<R>, spec: &Spec, stores: &[String]) -> Result<String> {
    p.ask(
        "Application name (the key's name: lowercase letters, digits, -)",
        None,
        |a| {
            request::check_name(spec, a, stores)?;
            match request::name_problem(spec, a, stores) {
                Some(why) => Err(why),
                None => Ok(a.to_string()),
            }
        },
    )
}

fn ask_purpose<R: BufRead>(p: &mut Prompter<R>, spec: &Spec) -> Result<Option<String>> {
    let required = spec.policy.required_fields.iter().any(|f| f == "purpose");
    p.ask("Purpose (what the key is for, for whom)", None, |a| {
        if a.is_empty() && required {
            Err("the policy requires a purpose".to_string())
        } else {
            Ok((!a.is_empty()).then(|| a.to_string()))
        }
    })
}

fn ask_stores<R: BufRead>(p: &mut Prompter<R>, spec: &Spec, name: &str) -> Result<Vec<String>> {
    p.say("Stores in keyward.yaml:");
    for (i, s) in spec.stores.values().enumerate() {
        p.say(&format!("  {}) {:<24} {}", i + 1, s.name, s.environment));
    }
    p.ask(
        "Stores (numbers, names or environments; several make one key per store)",
        None,
        |a| {
            let s = request::parse_stores(spec, &words(&[a]))?;
            request::check_name(spec, name, &s)?;
            match request::name_problem(spec, name, &s) {
                Some(why) => Err(format!(
                    "{why}; press Ctrl-C to start again with another name"
                )),
                None => Ok(s),
            }
        },
    )
}

fn ask_owner<R: BufRead>(p: &mut Prompter<R>, spec: &Spec) -> Result<String> {
    let people: Vec<String> = spec
        .principals
        .values()
        .filter(|x| x.kind == PrincipalKind::Person)
        .map(|x| match &x.name {
            Some(n) => format!("{} ({n})", x.id),
            None => x.id.clone(),
        })
        .collect();
    p.say(&format!("People: {}", people.join(", ")));
    let default = default_owner(spec);
    p.ask(
        "Owner (a person; their grants bound the key)",
        default.as_deref(),
        |a| request::check_owner(spec, a).map(|_| a.to_string()),
    )
}

fn ask_scopes<R: BufRead>(
    p: &mut Prompter<R>,
    spec: &Spec,
    stores: &[String],
    owner: &str,
) -> Result<Vec<String>> {
    p.say("API areas (write implies read):");
    for line in request::area_menu(spec, stores, Some(owner)) {
        p.say(&format!("  {line}"));
    }
    p.ask(
        "Scopes (e.g. `bibs users:write`; an area alone is read)",
        None,
        |a| {
            let parsed = request::parse_scopes(spec, &words(&[a])).map_err(|e| e.join("\n"))?;
            let problems = request::scope_problems(spec, &parsed, stores, Some(owner));
            if problems.is_empty() {
                Ok(parsed.iter().map(ToString::to_string).collect::<Vec<_>>())
            } else {
                Err(problems.join("\n"))
            }
        },
    )
}

fn ask_expiry<R: BufRead>(
    p: &mut Prompter<R>,
    spec: &Spec,
    stores: &[String],
    now: Now,
) -> Result<Option<ExpiryAnswer>> {
    let default = match (spec.policy.default_lifetime, spec.policy.max_lifetime) {
        (Some(d), _) => format!("empty: the policy default, {d}"),
        (None, Some(m)) => format!("at most {m}"),
        (None, None) => "empty: never".to_string(),
    };
    p.ask(
        &format!("Expiry (YYYY-MM-DD, or a lifetime such as 180d; {default})"),
        None,
        |a| {
            if a.is_empty() {
                return match spec.policy.default_lifetime {
                    Some(_) => Ok(None),
                    None => request::expiry_problem(spec, &spec::Expiry::Never, stores, now)
                        .map_or(Ok(None), Err),
                };
            }
            let (ans, e) = request::parse_expiry(a, now)?;
            match request::expiry_problem(spec, &e, stores, now) {
                Some(why) => Err(why),
                None => Ok(Some(ans)),
            }
        },
    )
}

/// List who can receive the secret: people, teams, services.
fn say_recipients<R: BufRead>(p: &mut Prompter<R>, spec: &Spec) {
    let list = |kind: PrincipalKind| {
        spec.principals
            .values()
            .filter(|x| x.kind == kind)
            .map(|x| x.id.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    p.say(&format!(
        "Recipients receive the secret, age-encrypted. People: {}",
        list(PrincipalKind::Person)
    ));
    let teams: Vec<String> = spec
        .teams
        .values()
        .map(|t| format!("team:{} ({})", t.id, t.members.join(", ")))
        .collect();
    if !teams.is_empty() {
        p.say(&format!("  Teams: {}", teams.join(", ")));
    }
    let services = list(PrincipalKind::Service);
    if !services.is_empty() {
        p.say(&format!("  Services: {services}"));
    }
}

fn ask_recipients<R: BufRead>(
    p: &mut Prompter<R>,
    spec: &Spec,
    stores: &[String],
    owner: &str,
) -> Result<Vec<String>> {
    say_recipients(p, spec);
    p.ask(
        &format!("Recipients besides the owner {owner} (space-separated; empty: the owner only)"),
        None,
        |a| {
            let r = request::parse_recipients(spec, &words(&[a]), owner)?;
            match request::recipients_problem(spec, owner, &r, stores) {
                Some(why) => Err(why),
                None => Ok(r),
            }
        },
    )
}

fn ask_ticket<R: BufRead>(p: &mut Prompter<R>, spec: &Spec) -> Result<Option<String>> {
    let required = spec.policy.required_labels.iter().any(|l| l == "ticket");
    p.ask(
        "Ticket that asked for the key (e.g. LSIS-1234; empty: none)",
        None,
        |a| {
            if a.is_empty() && required {
                Err("the policy requires a ticket label".to_string())
            } else {
                Ok((!a.is_empty()).then(|| a.to_string()))
            }
        },
    )
}
