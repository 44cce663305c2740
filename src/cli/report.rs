//! `keyward report --html DIR`: the web view of the key repository written as a static site
//! (overview, keys table with filters, a page per key and per person/team/service, the
//! expiry timeline), readable without a server: for console stores, CI artifacts and GitHub
//! Pages. Reads the stores, ledgers, deliveries and git history; must not change any of them
//! and must not decide what a page shows (`report` in the library does).

use super::common::known_store;
use anyhow::{Context as _, Result};
use clap::Args;
use keyward::clock::{Clock, SystemClock};
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use keyward::report::{gather, site};
use std::path::{Path, PathBuf};

/// The examples under `keyward report --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward -C examples/library report --html site/   # then open site/index.html
  keyward report --html public/ --store alma-production";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the site into DIR (created if missing; pages of an older report are
    /// overwritten). Relative to the current directory, like `plan --out`.
    #[arg(long, value_name = "DIR", required = true)]
    pub html: PathBuf,
    /// Only this store (default: every store of keyward.yaml).
    #[arg(long)]
    pub store: Option<String>,
}

/// Run `keyward report`.
pub async fn run(dir: &Path, args: &ReportArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    let spec = &loaded.spec;
    known_store(spec, args.store.as_deref())?;
    let report = gather::repository(spec, args.store.as_deref(), SystemClock.now()).await;
    for s in report.stores.iter().filter(|s| s.error.is_some()) {
        eprintln!(
            "warning: store `{}` could not be read; the report shows it with its error: {}",
            s.name,
            s.error.as_deref().unwrap_or_default()
        );
    }
    let n = site::write(&args.html, &report)
        .with_context(|| format!("writing the report into {}", args.html.display()))?;
    eprintln!(
        "Wrote {n} files ({} keys, {} stores) to {}; open {} in a browser.",
        report.keys.len(),
        report.stores.len(),
        args.html.display(),
        args.html.join("index.html").display()
    );
    Ok(Outcome::Ok)
}
