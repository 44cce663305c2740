//! `keyward request`: the command line of a key request — flags, line-based prompts on a
//! terminal (questions and notes on stderr), the final check of the new key file with the
//! same loader and policy as `keyward validate`, writing it (never over an existing file),
//! and the pull request description on stdout. Must not prompt without a terminal, write
//! anything before every check has passed, or touch a live store.

mod args;
mod given;
mod interview;
mod prompt;

pub use args::{AFTER_HELP, RequestArgs};

use anyhow::{Context as _, Result, bail};
use given::{Given, from_flags, missing};
use keyward::clock::{Clock, SystemClock};
use keyward::diag;
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use keyward::request::{self, Answers};
use keyward::spec::{self, Spec};
use prompt::Prompter;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

type Now = chrono::DateTime<chrono::Utc>;

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

/// Run `keyward request`: answers → file text → the checks of `validate` → write → the
/// pull request description.
pub fn run(dir: &Path, args: &RequestArgs, color_err: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color_err)? else {
        eprintln!(
            "The repository's spec must be valid before a key can be requested; ask its admins."
        );
        return Ok(Outcome::Error);
    };
    let spec = &loaded.spec;
    let now = SystemClock.now();
    let answers = answers(spec, args, now)?;
    let rel = output_rel(dir, args.output.as_deref(), &answers.name)?;
    let path = dir.join(&rel);
    refuse_existing(spec, &answers, &rel, &path)?;
    let (line, found) = request::modeline(dir, &rel);
    let text = request::render(&answers, &line);
    request::check_text(&answers, &text)?;
    if let Some(stop) = check_like_validate(dir, &rel, &text, now, color_err)? {
        return Ok(stop);
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
    // Already on a topic branch: the next steps commit there, not on a new one.
    let branch = keyward::git::GitRepo::discover(dir)
        .ok()
        .flatten()
        .and_then(|g| g.topic_branch());
    print!(
        "{}",
        request::pr_description(spec, &answers, &rel, branch.as_deref())
    );
    Ok(Outcome::Ok)
}

/// The answers: all from the flags, else asked for on a terminal, else an error naming
/// every missing flag.
fn answers(spec: &Spec, args: &RequestArgs, now: Now) -> Result<Answers> {
    let given = from_flags(spec, args, now)?;
    let lacking = missing(spec, &given);
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if lacking.is_empty() {
        return Ok(from_given(given));
    }
    if terminal && !args.no_input {
        let mut p = Prompter {
            input: std::io::stdin().lock(),
        };
        return interview::interview(&mut p, spec, given, now);
    }
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
}

/// Every required value was given as a flag.
fn from_given(given: Given) -> Answers {
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
}

/// Never over an existing file or key.
fn refuse_existing(spec: &Spec, answers: &Answers, rel: &Path, path: &Path) -> Result<()> {
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
    Ok(())
}

/// The same loader and policy as `keyward validate`, with the new file in memory: the
/// outcome that stops the request (1 invalid, 3 policy), if any. Warnings are shown.
fn check_like_validate(
    dir: &Path,
    rel: &Path,
    text: &str,
    now: Now,
    color_err: bool,
) -> Result<Option<Outcome>> {
    let checked = match spec::load_with_file(dir, rel, text.as_bytes().to_vec()) {
        Ok(l) => l,
        Err(diags) => {
            let mut sources = spec::sources_for(dir, &diags);
            sources.insert(rel.to_path_buf(), text.to_string());
            eprint!("{}", diag::render(&diags, &sources, color_err));
            eprintln!(
                "\nThe request would make the spec invalid ({} error(s)); nothing was written ({} is what keyward would have written).",
                diags.error_count(),
                rel.display()
            );
            return Ok(Some(Outcome::Error));
        }
    };
    let mut found = checked.warnings.clone();
    found.extend(keyward::policy::check(&checked.spec, now));
    found.sort();
    if !found.is_empty() {
        eprint!("{}", diag::render(&found, &checked.sources, color_err));
    }
    if found.has_errors() {
        eprintln!(
            "\nRefused: the request breaks policy ({} violation(s)); nothing was written. Change the request, or ask the admins about the rule.",
            found.error_count()
        );
        return Ok(Some(Outcome::Refused));
    }
    Ok(None)
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
