//! `keyward init`, `keyward validate` and `keyward schema`: the key repository itself —
//! scaffold one, check its spec (every problem at once, plus the policy report) and print
//! or write the JSON Schemas. Must not open a store.

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use keyward::clock::{Clock, SystemClock};
use keyward::diag;
use keyward::outcome::Outcome;
use keyward::spec;
use std::path::{Path, PathBuf};

/// The examples under `keyward init --help`.
pub const INIT_AFTER_HELP: &str = "\
Example:
  keyward init my-keys && cd my-keys && keyward keygen -o me.txt";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create (default: the -C directory).
    pub dir: Option<PathBuf>,
}

/// The examples under `keyward validate --help`.
pub const VALIDATE_AFTER_HELP: &str = "\
Example:
  keyward -C examples/library validate
  keyward validate --format json";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
    pub format: DiagFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiagFormat {
    Text,
    Json,
}

/// The examples under `keyward schema --help`.
pub const SCHEMA_AFTER_HELP: &str = "\
Examples:
  keyward schema keys > keys.schema.json
  keyward schema --write            # into ./schemas
  keyward schema --write docs/schemas";

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// keyward, people, keys or plan.
    #[arg(required_unless_present = "write")]
    pub name: Option<String>,
    /// Write every schema into DIR (default `schemas`, relative to -C).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "schemas")]
    pub write: Option<PathBuf>,
}

/// Run `keyward validate`.
pub fn validate(dir: &Path, args: &ValidateArgs, color: bool) -> Result<Outcome> {
    let format = args.format;
    let now = SystemClock.now();
    // One pass: the policy is checked on the keys that read cleanly even when others
    // have errors (a second round of fixes only for what the first could not show).
    let checked = spec::check(dir);
    let spec_ok = !checked.diags.has_errors();
    let mut all = checked.diags;
    if checked.policy_known {
        let mut policy = keyward::policy::check(&checked.spec, now);
        spec::cap_reported(&mut policy);
        all.extend(policy);
    }
    let spec = spec_ok.then_some(checked.spec);
    let sources = checked.sources;
    all.sort();
    match format {
        DiagFormat::Json => {
            let mut v: serde_json::Value = serde_json::from_str(&diag::to_json(&all))?;
            if let (Some(o), Some(spec)) = (v.as_object_mut(), &spec) {
                o.insert(
                    "report".into(),
                    serde_json::to_value(keyward::policy::report(spec))?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DiagFormat::Text => {
            print!("{}", diag::render(&all, &sources, color));
            match &spec {
                Some(s) if !all.has_errors() => {
                    println!(
                        "The spec is valid: {} key(s) in {} store(s), {} principal(s).",
                        s.keys.len(),
                        s.stores.len(),
                        s.principals.len()
                    );
                }
                _ => println!("{} error(s) found.", all.error_count()),
            }
            if let Some(s) = &spec {
                print!(
                    "{}",
                    keyward::policy::render_report(&keyward::policy::report(s))
                );
            }
        }
    }
    Ok(if all.has_errors() {
        Outcome::Error
    } else {
        Outcome::Ok
    })
}

/// Run `keyward schema`.
pub fn schema(dir: &Path, args: &SchemaArgs) -> Result<Outcome> {
    let (name, write) = (args.name.as_deref(), args.write.as_deref());
    if let Some(out) = write {
        let out = dir.join(out);
        let changed = keyward::schema::write_all(&out)?;
        if changed.is_empty() {
            eprintln!("The schemas in {} are current.", out.display());
        }
        for p in changed {
            eprintln!("wrote {}", p.display());
        }
        if name.is_none() {
            return Ok(Outcome::Ok);
        }
    }
    if let Some(n) = name {
        print!("{}", keyward::schema::text(&keyward::schema::get(n)?));
    }
    Ok(Outcome::Ok)
}

const INIT_CONFIG: &str = "\
# yaml-language-server: $schema=schemas/keyward.schema.json
version: 1
stores:
  production: { kind: sqlite, path: .keyward/production.db, environment: production }
  sandbox:    { kind: sqlite, path: .keyward/sandbox.db, environment: sandbox }
scopes:
  areas: [acquisitions, analytics, bibs, configuration, courses, electronic, resource-sharing, task-lists, users]
  levels: [read, write]
policy:
  default_lifetime: 365d
  max_lifetime: 730d
  max_keys_per_owner: 10
  min_recipients: 1
  forbid:
    - { scope: configuration:write, reason: \"Read/write access to the Configuration API is not granted.\" }
delivery:
  outbox: deliveries
  retain: 7d
";

const INIT_PEOPLE: &str = "\
# yaml-language-server: $schema=schemas/people.schema.json
# Add yourself: run `keyward keygen -o ~/.config/keyward/identities.txt` and paste the
# printed age1... public recipient below. Never paste the AGE-SECRET-KEY line.
people: {}
teams: {}
services: {}
";

/// `keyward init`'s repository must be a git repository (apply records the commit it
/// applies, CI plans pull requests): make one when `dir` is not inside one yet, else say
/// which one it is in.
fn init_git(dir: &Path) -> Result<()> {
    match keyward::git::GitRepo::discover(dir)? {
        Some(repo) => {
            let top = repo
                .workdir()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            eprintln!(
                "{} is inside the git repository {}; commit the files there.",
                dir.display(),
                top.trim_end_matches('/')
            );
        }
        None => {
            keyward::git::GitRepo::init(dir, "main")?;
            eprintln!(
                "initialised a git repository in {} (branch main)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Run `keyward init [DIR]` (`default` is the -C directory).
pub fn init(default: &Path, args: &InitArgs) -> Result<Outcome> {
    let dir = args.dir.as_deref().unwrap_or(default);
    std::fs::create_dir_all(dir.join("keys"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let files: [(&str, &str); 4] = [
        ("keyward.yaml", INIT_CONFIG),
        ("people.yaml", INIT_PEOPLE),
        (".gitignore", ".keyward/\n"),
        ("keys/.gitkeep", ""),
    ];
    let mut wrote = Vec::new();
    let schemas = keyward::schema::all();
    let schema_files = schemas
        .iter()
        .map(|(f, t)| (format!("schemas/{f}"), t.as_str()));
    let files = files
        .iter()
        .map(|(n, c)| (n.to_string(), *c))
        .chain(schema_files);
    std::fs::create_dir_all(dir.join("schemas"))
        .with_context(|| format!("creating {}", dir.join("schemas").display()))?;
    for (name, content) in files {
        let p = dir.join(name);
        if p.exists() {
            eprintln!("kept existing {}", p.display());
            continue;
        }
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        wrote.push(p);
    }
    for p in &wrote {
        eprintln!("created {}", p.display());
    }
    init_git(dir)?;
    eprintln!(
        "\nNext: `keyward keygen`, add yourself to people.yaml, write a key in keys/, then `keyward -C {} plan`.",
        dir.display()
    );
    Ok(Outcome::Ok)
}
