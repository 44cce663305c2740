//! `keyward import`: write YAML for the keys made in a console (the unmanaged keys of a
//! store), each entry naming the key it adopts (`adopt: ID`), and check the spec still
//! loads. Changes no store: the keys are adopted (marked managed by keyward) by the apply
//! of the reviewed change, so an apply from a branch without that YAML leaves them alone.
//! Secrets are never touched; what to import is decided in `import` (pure).

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward::flow::load_or_report;
use keyward::import::{Decision, plan_import, render_file};
use keyward::outcome::Outcome;
use keyward::spec::raw::KeyEntry;
use keyward::spec::{self, Loaded};
use keyward::store::{ListFilter, LiveKey, list_all};
use std::path::{Path, PathBuf};

/// The examples under `keyward import --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward import --store alma-production
  keyward import --store alma-sandbox --owner jdoe --output keys/jdoe-sandbox.yaml";

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(long)]
    pub store: String,
    /// Only keys owned by this person.
    #[arg(long)]
    pub owner: Option<String>,
    /// Key file to write (must not exist yet).
    #[arg(
        long,
        short = 'o',
        default_value = "keys/imported.yaml",
        value_name = "FILE"
    )]
    pub output: PathBuf,
    /// A console store: the template listing the console's keys (default
    /// `import-STORE.yaml`; written on the first run, read on the next).
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// A console store: the values to import, for scripts and tests: a JSON object
    /// {"KEY": {"secret": "..."}}, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub console_input: Option<PathBuf>,
}

/// Run `keyward import`.
pub async fn run(dir: &Path, args: &ImportArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    let store = args.store.as_str();
    let cfg = super::common::store(&loaded.spec, store)?;
    if let keyward::spec::StoreKind::Console(console) = &cfg.kind {
        return console_import(dir, &loaded, args, (cfg, console), color).await;
    }
    let rel = output_rel(dir, &args.output)?;
    let s = super::common::open(&loaded.spec, cfg)?;
    let lives = list_all(s.as_ref(), &ListFilter::default()).await?;
    let entries = decide(&loaded, store, &lives, args.owner.as_deref());
    if entries.is_empty() {
        eprintln!("Nothing to import from {store}.");
        return Ok(Outcome::Ok);
    }
    let count = entries.len();
    // The spec must still load with the new file; otherwise it is removed.
    write_key_file(dir, &rel, Check::Loads, color, |modeline, generated| {
        render_file(modeline, store, entries, generated)
    })?;
    eprintln!(
        "Wrote {count} key(s) to {} (from {store}). Nothing in the store changed: the apply of this \
         file, once reviewed and merged, adopts them (they keep their secrets; their owners \
         receive a secret through keyward at the first rotation). Next: commit it and open a \
         pull request; `keyward plan` shows each adoption.",
        rel.display()
    );
    Ok(Outcome::Ok)
}

/// `--output` relative to the repository: a .yaml file under keys/.
fn output_rel(dir: &Path, output: &Path) -> Result<PathBuf> {
    let rel = output.strip_prefix(dir).unwrap_or(output).to_path_buf();
    if rel.is_absolute() || !spec::is_spec_file(&rel) || !rel.starts_with(spec::KEYS_DIR) {
        bail!(
            "--output must be a .yaml file under keys/ (got {}), or the spec would not read it",
            rel.display()
        );
    }
    Ok(rel)
}

/// The entries to write (saying why the other keys are left out).
fn decide(loaded: &Loaded, store: &str, lives: &[LiveKey], owner: Option<&str>) -> Vec<KeyEntry> {
    let mut entries = Vec::new();
    for c in plan_import(&loaded.spec, store, lives, owner) {
        match c.decision {
            Decision::Import(e) => entries.push(*e),
            Decision::InSpec { adopts: true, .. } => {}
            Decision::InSpec { defined_at, .. } => eprintln!(
                "{} ({}): already defined at {defined_at}; to adopt this key there, add `adopt: {}` to that entry",
                c.key.name, c.key.id, c.key.id
            ),
            Decision::Skip(why) => eprintln!("skipped {} ({}): {why}", c.key.name, c.key.id),
        }
    }
    entries
}

/// What the spec must still do once a new key file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Load.
    Loads,
    /// Load and pass its policy (nothing is imported otherwise).
    LoadsAndPolicy,
}

/// Write the new key file `rel` (refused when it exists), rendered by `render` from its
/// modeline and today's date; when the spec fails `check` with it, the problems are shown
/// and the file is removed again.
fn write_key_file(
    dir: &Path,
    rel: &Path,
    check: Check,
    color: bool,
    render: impl FnOnce(&str, &str) -> Result<String, serde_yaml::Error>,
) -> Result<()> {
    let path = dir.join(rel);
    if path.exists() {
        bail!(
            "{} already exists; choose another file with --output",
            rel.display()
        );
    }
    let now = keyward::clock::Clock::now(&keyward::clock::SystemClock);
    let (modeline, _) = keyward::request::modeline(dir, rel);
    let text = render(&modeline, &now.format("%Y-%m-%d").to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", rel.display()))?;
    let problems = match spec::load(dir) {
        Ok(l) if check == Check::LoadsAndPolicy => {
            let found = keyward::policy::check(&l.spec, now);
            found.has_errors().then_some((found, l.sources))
        }
        Ok(_) => None,
        Err(d) => {
            let sources = keyward::diag::sources_from_files(
                &[(rel.to_path_buf(), std::fs::read(&path).unwrap_or_default())].into(),
            );
            Some((d, sources))
        }
    };
    if let Some((d, sources)) = problems {
        eprint!("{}", keyward::diag::render(&d, &sources, color));
        std::fs::remove_file(&path).ok();
        bail!(
            "the imported keys would make the spec invalid; {} was removed{}",
            rel.display(),
            match check {
                Check::Loads => "",
                Check::LoadsAndPolicy => " and nothing was imported",
            }
        );
    }
    Ok(())
}

/// `keyward import --store X` on a console store (`console::import`): write the template,
/// or read it, ask for each value, then write the key YAML, the deliveries and the ledger.
async fn console_import(
    dir: &Path,
    loaded: &Loaded,
    args: &ImportArgs,
    (cfg, console): (
        &keyward::spec::StoreConfig,
        &keyward::spec::ConsoleStoreConfig,
    ),
    color: bool,
) -> Result<Outcome> {
    use keyward::console::import as ci;
    let store = args.store.as_str();
    let cs = std::sync::Arc::new(keyward::console::ConsoleStore::open(cfg, console)?);
    let t_rel = args
        .template
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("import-{store}.yaml")));
    let t_path = dir.join(&t_rel);
    if !t_path.exists() {
        std::fs::write(&t_path, ci::template_text(&loaded.spec, store, &cs))
            .with_context(|| format!("writing {}", t_rel.display()))?;
        eprintln!(
            "Wrote {}: list in it the keys {} shows, then run `keyward import --store {store}` again.",
            t_rel.display(),
            cs.preset().console
        );
        return Ok(Outcome::Ok);
    }
    let ledger = cs.read()?;
    let checked = ci::read_template(&t_path, &t_rel).and_then(|(t, text)| {
        Ok((
            ci::check(&loaded.spec, &cs, &ledger, (&t, &text, &t_rel))?,
            t,
        ))
    });
    let (checked, template) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Outcome::Error);
        }
    };
    if checked.is_empty() {
        eprintln!(
            "{} lists no key; add the keys the console shows.",
            t_rel.display()
        );
        return Ok(Outcome::Error);
    }
    let Some(mut op) = super::common::console_operator(args.console_input.as_deref())? else {
        eprintln!(
            "error: import asks for each key's value: run `keyward import --store {store}` at a terminal (or give --console-input FILE)"
        );
        return Ok(Outcome::Refused);
    };
    let answers = ci::ask(&cs, &ledger, checked, op.as_mut())?;
    if answers.stopped || answers.keys.is_empty() {
        eprintln!(
            "Stopped: nothing was imported; {} is unchanged.",
            t_rel.display()
        );
        return Ok(Outcome::Refused);
    }
    let out_rel = if args.output == Path::new("keys/imported.yaml") {
        PathBuf::from(format!("keys/imported-{store}.yaml"))
    } else {
        output_rel(dir, &args.output)?
    };
    let entries: Vec<KeyEntry> = answers
        .keys
        .iter()
        .filter_map(|a| a.checked.entry.clone())
        .collect();
    let count = answers.keys.len();
    let undelivered = answers.keys.iter().filter(|a| a.secret.is_none()).count();
    if !entries.is_empty() {
        // The spec must load and pass its policy with it; otherwise it is removed and
        // nothing is imported.
        write_key_file(
            dir,
            &out_rel,
            Check::LoadsAndPolicy,
            color,
            |modeline, day| keyward::console::import::render_keys(modeline, store, entries, day),
        )?;
    }
    let Ok(now_loaded) = spec::load(dir) else {
        bail!("the spec does not load after writing {}", out_rel.display());
    };
    let delivered = ci::adopt(
        &now_loaded.spec,
        cs,
        answers.keys,
        &keyward::flow::actor(),
        &keyward::clock::SystemClock,
    )
    .await?;
    match ci::remaining(&template, answers.skipped) {
        Some(left) => std::fs::write(&t_path, left)?,
        None => std::fs::remove_file(&t_path)?,
    }
    eprintln!(
        "Imported {count} key(s) from {store}: {} delivered (sealed to their recipients under {}), {undelivered} undelivered (their recipients get a value at the next rotation).\n\
         Wrote {} and {}. Commit them with the deliveries and open a pull request; `keyward plan` shows no changes.",
        delivered.len(),
        loaded
            .spec
            .delivery
            .outbox
            .strip_prefix(&loaded.spec.root)
            .unwrap_or(&loaded.spec.delivery.outbox)
            .display(),
        out_rel.display(),
        console.ledger_rel.display()
    );
    Ok(Outcome::Ok)
}
