//! `keyward request`: the command line of a key request — flags, line-based prompts on a
//! terminal (questions and notes on stderr), the final check of the new key file with the
//! same loader and policy as `keyward validate`, writing it (never over an existing file),
//! and the pull request description on stdout. Must not prompt without a terminal, write
//! anything before every check has passed, or touch a live store.

use crate::cli::exit;
use crate::clock::{Clock, SystemClock};
use crate::diag;
use crate::request::{self, Answers, ExpiryAnswer};
use crate::spec::{self, Spec};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

pub const AFTER_HELP: &str = "\
On a terminal, keyward asks for every value not given as a flag (stores, areas and people
are listed; a forbidden scope is refused at once with the policy's reason). Without a
terminal it never asks: a missing value is an error naming its flag.

Before writing, the new file is checked against the keys JSON Schema and, together with
the rest of the repository, by the same checks as `keyward validate` (exit 1 for an
invalid spec, 3 for a policy violation; nothing is written). An existing file or key is
never overwritten. The pull request description is printed on stdout.

Examples:
  keyward request                                   # asks, on a terminal
  keyward request --name illiad-lookup --purpose 'ILLiad barcode lookup' \\
      --env production --env sandbox --owner jdoe --scope bibs:read --scope users:read \\
      --lifetime 180d --recipient team:ill-staff --ticket LSIS-1234
  keyward request --name reports --store alma-sandbox --owner rkumar --scope analytics \\
      --expires 2027-06-30 --output keys/reports/sandbox.yaml > pr.md";

#[derive(Debug, Args, Default, Clone)]
pub struct RequestArgs {
    /// The key's name, usually the application's: lowercase letters, digits and `-`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// What the key is for, for whom (shown to reviewers).
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// A store from keyward.yaml. Repeatable: one key per store.
    #[arg(long = "store", value_name = "STORE")]
    pub stores: Vec<String>,
    /// Every store of an environment (e.g. production, sandbox). Repeatable.
    #[arg(long = "env", value_name = "ENV")]
    pub envs: Vec<String>,
    /// The person in people.yaml who owns the key (their `may_grant` bounds it).
    #[arg(long, value_name = "PERSON")]
    pub owner: Option<String>,
    /// `area:level` (an area alone is read), e.g. `bibs:read`. Repeatable.
    #[arg(long = "scope", value_name = "AREA:LEVEL")]
    pub scopes: Vec<String>,
    /// Expiry date, YYYY-MM-DD (end of that day, UTC), or `never`.
    #[arg(long, value_name = "DATE", conflicts_with = "lifetime")]
    pub expires: Option<String>,
    /// Lifetime from creation and each rotation, e.g. 180d (default: the policy's).
    #[arg(long, value_name = "SPAN")]
    pub lifetime: Option<String>,
    /// Who else receives the secret: a person, a service or `team:NAME`. Repeatable.
    #[arg(long = "recipient", value_name = "ID")]
    pub recipients: Vec<String>,
    /// The ticket that asked for the key (label `ticket`).
    #[arg(long, value_name = "TICKET")]
    pub ticket: Option<String>,
    /// The key file to write, under keys/ (default keys/NAME.yaml; must not exist).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Never ask, even on a terminal: a missing value is an error.
    #[arg(long)]
    pub no_input: bool,
}

/// Split repeatable flag values and typed answers on commas and whitespace.
fn words<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| {
            s.as_ref()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Line-based questions: the question on stderr, the answer from stdin; re-asked until
/// it passes its check (at most `MAX_TRIES` times).
struct Prompter<R: BufRead> {
    input: R,
}

const MAX_TRIES: usize = 10;

impl<R: BufRead> Prompter<R> {
    fn say(&self, text: &str) {
        eprintln!("{text}");
    }

    fn ask<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<T> {
        for _ in 0..MAX_TRIES {
            match default {
                Some(d) if !d.is_empty() => eprint!("{question} [{d}]: "),
                _ => eprint!("{question}: "),
            }
            std::io::stderr().flush().ok();
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                eprintln!();
                bail!("the input ended before the request was complete; nothing was written");
            }
            let mut answer = line.trim().to_string();
            if answer.is_empty()
                && let Some(d) = default
            {
                answer = d.to_string();
            }
            match check(&answer) {
                Ok(v) => return Ok(v),
                Err(why) => {
                    for l in why.lines() {
                        eprintln!("  ✗ {l}");
                    }
                }
            }
        }
        bail!("no acceptable answer after {MAX_TRIES} tries; nothing was written")
    }
}

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
            p.kind == spec::PrincipalKind::Person
                && p.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email.trim()))
        })
        .map(|p| p.id.clone())
}

/// Values given as flags, checked for form (the policy is checked on the whole file).
struct Given {
    name: Option<String>,
    purpose: Option<String>,
    stores: Option<Vec<String>>,
    owner: Option<String>,
    scopes: Option<Vec<String>>,
    expiry: Option<ExpiryAnswer>,
    recipients: Option<Vec<String>>,
    ticket: Option<String>,
}

fn from_flags(spec: &Spec, a: &RequestArgs, now: chrono::DateTime<chrono::Utc>) -> Result<Given> {
    let store_words: Vec<String> = words(&a.stores).into_iter().chain(words(&a.envs)).collect();
    let stores = if store_words.is_empty() {
        None
    } else {
        Some(
            request::parse_stores(spec, &store_words)
                .map_err(|e| anyhow::anyhow!("--store/--env: {e}"))?,
        )
    };
    if let Some(n) = &a.name {
        request::check_name(spec, n, stores.as_deref().unwrap_or(&[]))
            .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    }
    if let Some(o) = &a.owner {
        request::check_owner(spec, o).map_err(|e| anyhow::anyhow!("--owner: {e}"))?;
    }
    let scopes = if a.scopes.is_empty() {
        None
    } else {
        let s = request::parse_scopes(spec, &words(&a.scopes))
            .map_err(|e| anyhow::anyhow!("--scope: {}", e.join("; ")))?;
        Some(s.iter().map(ToString::to_string).collect())
    };
    let expiry = match (&a.expires, &a.lifetime) {
        (Some(e), _) => {
            let (ans, _) =
                request::parse_expiry(e, now).map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
            if !matches!(ans, ExpiryAnswer::Expires(_)) {
                bail!(
                    "--expires: `{e}` is not a date (YYYY-MM-DD) or `never`; for a lifetime use --lifetime"
                );
            }
            Some(ans)
        }
        (None, Some(l)) => {
            let (ans, _) =
                request::parse_expiry(l, now).map_err(|e| anyhow::anyhow!("--lifetime: {e}"))?;
            if !matches!(ans, ExpiryAnswer::Lifetime(_)) {
                bail!("--lifetime: `{l}` is not a lifetime (e.g. 90d); for a date use --expires");
            }
            Some(ans)
        }
        (None, None) => None,
    };
    let recipients = if a.recipients.is_empty() {
        None
    } else {
        // The owner is dropped later, once known.
        Some(
            request::parse_recipients(spec, &words(&a.recipients), "")
                .map_err(|e| anyhow::anyhow!("--recipient: {e}"))?,
        )
    };
    let text = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(Given {
        name: a.name.clone(),
        purpose: text(&a.purpose),
        stores,
        owner: a.owner.clone(),
        scopes,
        expiry,
        recipients,
        ticket: text(&a.ticket),
    })
}

/// The flags of the required values that are missing.
fn missing(spec: &Spec, g: &Given) -> Vec<&'static str> {
    let mut out = Vec::new();
    if g.name.is_none() {
        out.push("--name");
    }
    if g.purpose.is_none() && spec.policy.required_fields.iter().any(|f| f == "purpose") {
        out.push("--purpose");
    }
    if g.stores.is_none() {
        out.push("--store (or --env)");
    }
    if g.owner.is_none() {
        out.push("--owner");
    }
    if g.scopes.is_none() {
        out.push("--scope");
    }
    if g.ticket.is_none() && spec.policy.required_labels.iter().any(|l| l == "ticket") {
        out.push("--ticket");
    }
    out
}

/// Ask for every value the flags left out.
fn interview<R: BufRead>(
    p: &mut Prompter<R>,
    spec: &Spec,
    g: Given,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Answers> {
    p.say("A new API key request: keyward asks a few questions and writes a key file for a pull request.\nNothing is written until every answer has passed the policy. Ctrl-C quits.\n");
    let known_stores = g.stores.clone().unwrap_or_default();
    let name = match g.name {
        Some(n) => n,
        None => p.ask(
            "Application name (the key's name: lowercase letters, digits, -)",
            None,
            |a| {
                request::check_name(spec, a, &known_stores)?;
                match request::name_problem(spec, a, &known_stores) {
                    Some(why) => Err(why),
                    None => Ok(a.to_string()),
                }
            },
        )?,
    };
    let purpose_required = spec.policy.required_fields.iter().any(|f| f == "purpose");
    let purpose = match g.purpose {
        Some(x) => Some(x),
        None => p.ask("Purpose (what the key is for, for whom)", None, |a| {
            if a.is_empty() && purpose_required {
                Err("the policy requires a purpose".to_string())
            } else {
                Ok((!a.is_empty()).then(|| a.to_string()))
            }
        })?,
    };
    let stores = match g.stores {
        Some(s) => s,
        None => {
            p.say("Stores in keyward.yaml:");
            for (i, s) in spec.stores.values().enumerate() {
                p.say(&format!("  {}) {:<24} {}", i + 1, s.name, s.environment));
            }
            p.ask(
                "Stores (numbers, names or environments; several make one key per store)",
                None,
                |a| {
                    let s = request::parse_stores(spec, &words(&[a]))?;
                    request::check_name(spec, &name, &s)?;
                    match request::name_problem(spec, &name, &s) {
                        Some(why) => Err(format!(
                            "{why}; press Ctrl-C to start again with another name"
                        )),
                        None => Ok(s),
                    }
                },
            )?
        }
    };
    let owner = match g.owner {
        Some(o) => o,
        None => {
            let people: Vec<String> = spec
                .principals
                .values()
                .filter(|x| x.kind == spec::PrincipalKind::Person)
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
            )?
        }
    };
    let scopes = match g.scopes {
        Some(s) => s,
        None => {
            p.say("API areas (write implies read):");
            for line in request::area_menu(spec, &stores, Some(&owner)) {
                p.say(&format!("  {line}"));
            }
            p.ask(
                "Scopes (e.g. `bibs users:write`; an area alone is read)",
                None,
                |a| {
                    let parsed =
                        request::parse_scopes(spec, &words(&[a])).map_err(|e| e.join("\n"))?;
                    let problems = request::scope_problems(spec, &parsed, &stores, Some(&owner));
                    if problems.is_empty() {
                        Ok(parsed.iter().map(ToString::to_string).collect::<Vec<_>>())
                    } else {
                        Err(problems.join("\n"))
                    }
                },
            )?
        }
    };
    let expiry = match g.expiry {
        Some(e) => Some(e),
        None => {
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
                            None => {
                                request::expiry_problem(spec, &spec::Expiry::Never, &stores, now)
                                    .map_or(Ok(None), Err)
                            }
                        };
                    }
                    let (ans, e) = request::parse_expiry(a, now)?;
                    match request::expiry_problem(spec, &e, &stores, now) {
                        Some(why) => Err(why),
                        None => Ok(Some(ans)),
                    }
                },
            )?
        }
    };
    let recipients = match g.recipients {
        Some(r) => r.into_iter().filter(|r| *r != owner).collect(),
        None => {
            let list = |kind: spec::PrincipalKind| {
                spec.principals
                    .values()
                    .filter(|x| x.kind == kind)
                    .map(|x| x.id.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            p.say(&format!(
                "Recipients receive the secret, age-encrypted. People: {}",
                list(spec::PrincipalKind::Person)
            ));
            let teams: Vec<String> = spec
                .teams
                .values()
                .map(|t| format!("team:{} ({})", t.id, t.members.join(", ")))
                .collect();
            if !teams.is_empty() {
                p.say(&format!("  Teams: {}", teams.join(", ")));
            }
            let services = list(spec::PrincipalKind::Service);
            if !services.is_empty() {
                p.say(&format!("  Services: {services}"));
            }
            p.ask(
                &format!(
                    "Recipients besides the owner {owner} (space-separated; empty: the owner only)"
                ),
                None,
                |a| {
                    let r = request::parse_recipients(spec, &words(&[a]), &owner)?;
                    match request::recipients_problem(spec, &owner, &r, &stores) {
                        Some(why) => Err(why),
                        None => Ok(r),
                    }
                },
            )?
        }
    };
    let ticket_required = spec.policy.required_labels.iter().any(|l| l == "ticket");
    let ticket = match g.ticket {
        Some(t) => Some(t),
        None => p.ask(
            "Ticket that asked for the key (e.g. LSIS-1234; empty: none)",
            None,
            |a| {
                if a.is_empty() && ticket_required {
                    Err("the policy requires a ticket label".to_string())
                } else {
                    Ok((!a.is_empty()).then(|| a.to_string()))
                }
            },
        )?,
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

/// Where the file goes, relative to the root: `--output` (under keys/, .yaml) or
/// `keys/NAME.yaml`.
fn output_rel(dir: &Path, output: Option<&Path>, name: &str) -> Result<PathBuf> {
    let rel = match output {
        None => PathBuf::from(spec::KEYS_DIR).join(format!("{name}.yaml")),
        Some(o) => o.strip_prefix(dir).unwrap_or(o).to_path_buf(),
    };
    let escapes = rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if rel.is_absolute() || escapes || !spec::is_spec_file(&rel) || !rel.starts_with(spec::KEYS_DIR)
    {
        bail!(
            "--output must be a .yaml file under keys/ (got {}), or the spec would not read it",
            rel.display()
        );
    }
    Ok(rel)
}

/// Run `keyward request`.
pub fn request_cmd(dir: &Path, args: &RequestArgs, color_err: bool) -> Result<i32> {
    let Some(loaded) = crate::flow::load_or_report(dir, color_err)? else {
        eprintln!(
            "The repository's spec must be valid before a key can be requested; ask its admins."
        );
        return Ok(exit::ERROR);
    };
    let spec = &loaded.spec;
    let now = SystemClock.now();
    let given = from_flags(spec, args, now)?;
    let lacking = missing(spec, &given);
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let answers = if lacking.is_empty() {
        let recipients = given.recipients.unwrap_or_default();
        let owner = given.owner.unwrap_or_default();
        Answers {
            name: given.name.unwrap_or_default(),
            purpose: given.purpose,
            stores: given.stores.unwrap_or_default(),
            recipients: recipients.into_iter().filter(|r| *r != owner).collect(),
            owner,
            scopes: given.scopes.unwrap_or_default(),
            expiry: given.expiry,
            ticket: given.ticket,
        }
    } else if terminal && !args.no_input {
        let mut p = Prompter {
            input: std::io::stdin().lock(),
        };
        interview(&mut p, spec, given, now)?
    } else {
        let why = if args.no_input {
            "--no-input"
        } else {
            "not on a terminal: stdin and stdout must both be one"
        };
        bail!(
            "missing {} ({why}, so keyward does not ask); e.g.\n  keyward request --name illiad-lookup --purpose 'ILLiad barcode lookup' --store {} --owner PERSON --scope bibs:read{}",
            lacking.join(", "),
            spec.stores
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("STORE"),
            if lacking.contains(&"--ticket") {
                " --ticket LSIS-1234"
            } else {
                ""
            }
        );
    };

    let rel = output_rel(dir, args.output.as_deref(), &answers.name)?;
    let path = dir.join(&rel);
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; keyward never overwrites a key file: choose another file with --output, or edit that one",
            rel.display()
        );
    }
    for s in &answers.stores {
        if let Some(at) = request::existing(spec, s, &answers.name) {
            bail!(
                "a key named `{}` already exists in store `{s}` ({at}); choose another --name, or edit that file to change the key",
                answers.name
            );
        }
    }
    let (line, found) = request::modeline(dir, &rel);
    let text = request::render(&answers, &line);
    request::check_text(&answers, &text)?;

    // The same loader and policy as `keyward validate`, with the new file in memory.
    let checked = match spec::load_with_file(dir, &rel, text.clone().into_bytes()) {
        Ok(l) => l,
        Err(diags) => {
            let mut sources = spec::sources_for(dir, &diags);
            sources.insert(rel.clone(), text.clone());
            eprint!("{}", diag::render(&diags, &sources, color_err));
            eprintln!(
                "\nThe request would make the spec invalid ({} error(s)); nothing was written ({} is what keyward would have written).",
                diags.error_count(),
                rel.display()
            );
            return Ok(exit::ERROR);
        }
    };
    let mut found_diags = checked.warnings.clone();
    found_diags.extend(crate::policy::check(&checked.spec, now));
    found_diags.sort();
    if found_diags.has_errors() {
        eprint!(
            "{}",
            diag::render(&found_diags, &checked.sources, color_err)
        );
        eprintln!(
            "\nRefused: the request breaks policy ({} violation(s)); nothing was written. Change the request, or ask the admins about the rule.",
            found_diags.error_count()
        );
        return Ok(exit::REFUSED);
    }
    if !found_diags.is_empty() {
        eprint!(
            "{}",
            diag::render(&found_diags, &checked.sources, color_err)
        );
    }

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    write_new(&path, text.as_bytes()).with_context(|| format!("writing {}", rel.display()))?;
    let n = answers.stores.len();
    eprintln!(
        "Wrote {} ({n} key{}: {}). It passes `keyward validate`. The pull request description follows on stdout.",
        rel.display(),
        if n == 1 { "" } else { "s" },
        answers.stores.join(", ")
    );
    if !found {
        eprintln!(
            "note: no schemas/keys.schema.json found; run `keyward schema --write` so editors can check the file."
        );
    }
    print!("{}", request::pr_description(spec, &answers, &rel));
    Ok(exit::OK)
}

/// Create `path` (failing if anything is there, even a dangling symlink), write, fsync.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let done = f.write_all(bytes).and_then(|()| f.sync_all());
    if done.is_err() {
        let _ = std::fs::remove_file(path);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_commas_and_spaces() {
        assert_eq!(
            words(&["bibs:read, users:write", "courses"]),
            ["bibs:read", "users:write", "courses"]
        );
    }

    #[test]
    fn prompts_reask_until_the_check_passes_and_stop_at_end_of_input() {
        let mut p = Prompter {
            input: std::io::Cursor::new(b"Bad Name\nok-name\n".to_vec()),
        };
        let got = p
            .ask("name", None, |a| {
                if crate::spec::keys::valid_key_name(a) {
                    Ok(a.to_string())
                } else {
                    Err("bad".to_string())
                }
            })
            .expect("second answer passes");
        assert_eq!(got, "ok-name");
        let mut p = Prompter {
            input: std::io::Cursor::new(b"\n".to_vec()),
        };
        assert_eq!(
            p.ask("x", Some("dflt"), |a| Ok::<_, String>(a.to_string()))
                .expect("default"),
            "dflt"
        );
        let err = p
            .ask("x", None, |a| Ok::<_, String>(a.to_string()))
            .expect_err("input ended");
        assert!(err.to_string().contains("nothing was written"));
    }

    #[test]
    fn output_must_stay_under_keys() {
        let d = Path::new("/repo");
        assert_eq!(
            output_rel(d, None, "a").expect("default"),
            PathBuf::from("keys/a.yaml")
        );
        assert!(output_rel(d, Some(Path::new("keys/../x.yaml")), "a").is_err());
        assert!(output_rel(d, Some(Path::new("other/x.yaml")), "a").is_err());
        assert!(output_rel(d, Some(Path::new("keys/x.txt")), "a").is_err());
        assert_eq!(
            output_rel(d, Some(Path::new("/repo/keys/t/x.yaml")), "a").expect("inside"),
            PathBuf::from("keys/t/x.yaml")
        );
    }
}
