//! `keyward audit --store X`: its clap arguments, who answers (the admin at a terminal, or a
//! `--console-input` file), and the summary. The walk itself is `console::audit`.

use anyhow::{Result, anyhow};
use chrono::SubsecRound;
use clap::Args;
use keyward::clock::{Clock, SystemClock};
use keyward::console::store::ConsoleStore;
use keyward::flow::{actor, load_or_report};
use keyward::outcome::Outcome;
use keyward::spec::StoreKind;
use std::path::{Path, PathBuf};

/// The examples under `keyward audit --help`.
pub const AFTER_HELP: &str = "\
Example:
  keyward audit --store alma-production";

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The console store to audit.
    #[arg(long, value_name = "STORE")]
    pub store: String,
    /// Answers for scripts and tests: {"KEY": {"done": true}} (as listed) or
    /// {"KEY": {"done": false}} (not in the console), mode 0600.
    #[arg(long, value_name = "FILE")]
    pub console_input: Option<PathBuf>,
}

/// Run `keyward audit`.
pub async fn run(dir: &Path, args: &AuditArgs, color_err: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color_err)? else {
        return Ok(Outcome::Error);
    };
    let store = &args.store;
    let cfg = super::common::store(&loaded.spec, store)?;
    let StoreKind::Console(console) = &cfg.kind else {
        return Err(anyhow!(
            "store `{store}` is not a console store: keyward lists its keys itself (`keyward keys`)"
        ));
    };
    let cs = ConsoleStore::open(cfg, console)?;
    let Some(mut op) = super::common::console_operator(args.console_input.as_deref())? else {
        eprintln!(
            "error: an audit asks the admin about each key: run `keyward audit --store {store}` at a terminal (or give --console-input FILE)"
        );
        return Ok(Outcome::Refused);
    };
    let now = SystemClock.now().trunc_subsecs(0);
    let r = keyward::console::audit::run(&cs, op.as_mut(), &actor(), now)?;
    eprintln!(
        "\nAudit of {store}: {} as listed, {} not in the console, {} skipped{}.",
        r.as_listed,
        r.gone.len(),
        r.skipped,
        if r.stopped {
            " (stopped before the end)"
        } else {
            ""
        }
    );
    for name in &r.gone {
        eprintln!("  {store}/{name}: recorded as gone; the next plan shows what to do");
    }
    eprintln!(
        "Commit the ledger ({}) so the team sees the audit.",
        console.ledger_rel.display()
    );
    Ok(if r.stopped || r.skipped > 0 {
        Outcome::Refused
    } else {
        Outcome::Ok
    })
}
