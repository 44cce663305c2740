//! `keyward import`: write YAML for the keys made in a console (the unmanaged keys of a
//! store), each entry naming the key it adopts (`adopt: ID`), and check the spec still
//! loads. Changes no store: the keys are adopted (marked managed by keyward) by the apply
//! of the reviewed change, so an apply from a branch without that YAML leaves them alone.
//! Secrets are never touched; what to import is decided in `import` (pure).

use super::common::unknown_store;
use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward::flow::load_or_report;
use keyward::import::{Decision, plan_import, render_file};
use keyward::outcome::Outcome;
use keyward::spec::raw::KeyEntry;
use keyward::spec::{self, Loaded};
use keyward::store::{ListFilter, LiveKey, list_all};
use std::path::{Path, PathBuf};

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
}

/// Run `keyward import`.
pub async fn run(dir: &Path, args: &ImportArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    let store = args.store.as_str();
    let cfg = loaded
        .spec
        .stores
        .get(store)
        .ok_or_else(|| unknown_store(&loaded.spec, store))?;
    let rel = output_rel(dir, &args.output)?;
    let s = keyward::observe::open(cfg)?;
    super::common::warn_modes(&loaded.spec, [&cfg.name]);
    let lives = list_all(s.as_ref(), &ListFilter::default()).await?;
    let entries = decide(&loaded, store, &lives, args.owner.as_deref());
    if entries.is_empty() {
        eprintln!("Nothing to import from {store}.");
        return Ok(Outcome::Ok);
    }
    let count = entries.len();
    write_entries(dir, &rel, store, entries, color)?;
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

/// Write the new key file; the spec must still load with it, otherwise it is removed.
fn write_entries(
    dir: &Path,
    rel: &Path,
    store: &str,
    entries: Vec<KeyEntry>,
    color: bool,
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
    let text = render_file(
        &modeline,
        store,
        entries,
        &now.format("%Y-%m-%d").to_string(),
    )?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", rel.display()))?;
    // The spec must still load with the new file; otherwise undo.
    if let Err(d) = spec::load(dir) {
        let sources = keyward::diag::sources_from_files(
            &[(rel.to_path_buf(), std::fs::read(&path).unwrap_or_default())].into(),
        );
        eprint!("{}", keyward::diag::render(&d, &sources, color));
        std::fs::remove_file(&path).ok();
        bail!(
            "the imported keys would make the spec invalid; {} was removed",
            rel.display()
        );
    }
    Ok(())
}
