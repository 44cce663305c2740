//! `keyward import`: adopt keys made in a console. Writes YAML for the unmanaged keys of a
//! store, checks the spec still loads, then adopts each key (the YAML is written first, so
//! an interrupted import leaves keys in the spec that the next import adopts, never adopted
//! keys missing from the spec, which the next apply would revoke). Secrets are never
//! touched; what to import is decided in `import` (pure).

use super::common::unknown_store;
use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward::flow::{actor, load_or_report};
use keyward::import::{Decision, plan_import, render_file};
use keyward::outcome::Outcome;
use keyward::spec::raw::KeyEntry;
use keyward::spec::{self, Loaded};
use keyward::store::{KeyPatch, KeyWrite, ListFilter, LiveKey, MANAGED_BY, Store, list_all};
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
    let (entries, adopt) = decide(&loaded, store, &lives, args.owner.as_deref());
    if adopt.is_empty() {
        eprintln!("Nothing to import from {store}.");
        return Ok(Outcome::Ok);
    }
    let count = entries.len();
    if !entries.is_empty() {
        write_entries(dir, &rel, store, entries, color)?;
        eprintln!("Wrote {count} key(s) to {}.", rel.display());
    }
    let failed = adopt_all(s.as_ref(), &adopt).await;
    if failed > 0 {
        eprintln!("{failed} key(s) could not be adopted; run `keyward import` again to retry.");
        return Ok(Outcome::Error);
    }
    eprintln!(
        "Imported {count} key(s) from {store}. They keep their secrets; their owners receive a secret \
         through keyward at the first rotation. Next: `keyward plan` shows no changes."
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

/// The entries to write and the keys to adopt (saying why the others are skipped).
fn decide(
    loaded: &Loaded,
    store: &str,
    lives: &[LiveKey],
    owner: Option<&str>,
) -> (Vec<KeyEntry>, Vec<LiveKey>) {
    let candidates = plan_import(&loaded.spec, store, lives, owner);
    let mut entries = Vec::new();
    let mut adopt = Vec::new();
    for c in candidates {
        match &c.decision {
            Decision::Import(e) => {
                entries.push((**e).clone());
                adopt.push(c.key);
            }
            Decision::AdoptOnly { defined_at } => {
                eprintln!(
                    "{}: already defined at {defined_at}; adopting it, the next plan reconciles it with the spec",
                    c.key.name
                );
                adopt.push(c.key);
            }
            Decision::Skip(why) => eprintln!("skipped {} ({}): {why}", c.key.name, c.key.id),
        }
    }
    (entries, adopt)
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
    // The spec must still load with the new file; otherwise undo and adopt nothing.
    if let Err(d) = spec::load(dir) {
        let sources = keyward::diag::sources_from_files(
            &[(rel.to_path_buf(), std::fs::read(&path).unwrap_or_default())].into(),
        );
        eprint!("{}", keyward::diag::render(&d, &sources, color));
        std::fs::remove_file(&path).ok();
        bail!(
            "the imported keys would make the spec invalid; {} was removed and nothing was adopted",
            rel.display()
        );
    }
    Ok(())
}

/// Mark each key managed by keyward, recording the state it was adopted in (so later
/// console edits show as drift). Returns how many could not be adopted.
async fn adopt_all(s: &dyn Store, adopt: &[LiveKey]) -> usize {
    let actor = actor();
    let mut failed = 0;
    for k in adopt {
        let patch = KeyPatch {
            managed_by: Some(Some(MANAGED_BY.to_string())),
            ..KeyPatch::default()
        };
        let adopted = match s
            .update(KeyWrite::new(&k.id, k.version, &actor), patch)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                failed += 1;
                eprintln!("error: adopting {} ({}): {e}", k.name, k.id);
                continue;
            }
        };
        let record = KeyPatch {
            applied_digest: Some(adopted.state_digest()),
            ..KeyPatch::default()
        };
        if let Err(e) = s
            .update(KeyWrite::new(&adopted.id, adopted.version, &actor), record)
            .await
        {
            eprintln!(
                "warning: {} adopted, but its state was not recorded: {e}",
                k.name
            );
        }
        eprintln!("adopted {} ({})", k.name, k.id);
    }
    failed
}
