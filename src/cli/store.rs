//! `keyward store check STORE`: run the conformance kit (`keyward::store::check`) against a
//! store of keyward.yaml and print its pass/fail table (or JSON). Works on keys of its own
//! and removes them; must not touch any other key, and never prints a secret.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use keyward::spec::{Spec, StoreConfig, StoreKind};
use keyward::store::check::{self, CheckOptions};
use std::io::Write as _;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum StoreArgs {
    /// Run the conformance kit against a store: create, list, rotate with grace, disable,
    /// enable, revoke, delete, version conflicts, idempotent retries, unmanaged keys
    /// untouched, paging, expiry. Exit 1 when a check fails.
    #[command(
        after_help = "Examples:\n  keyward store check local\n  keyward store check gateway --format json --paging-keys 500"
    )]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The store, as named in keyward.yaml.
    pub store: String,
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// How many keys the paging check creates (and removes).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub paging_keys: usize,
    /// The scope the test keys get (default: the first scope of the store's grants table,
    /// else the first scope of the catalogue).
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CheckFormat {
    Text,
    Json,
}

/// The scope test keys get when none is asked for.
fn default_scope(spec: &Spec, cfg: &StoreConfig) -> Option<String> {
    match &cfg.kind {
        StoreKind::PostgresRoles { grants, .. } | StoreKind::RedisAcl { grants, .. } => {
            grants.keys().next().cloned()
        }
        _ => {
            let area = spec.catalogue.areas.first()?;
            let level = spec.catalogue.levels.first()?;
            Some(format!("{area}:{level}"))
        }
    }
}

/// Run `keyward store ...`.
pub async fn run(dir: &Path, args: &StoreArgs, color: bool) -> Result<Outcome> {
    let StoreArgs::Check(args) = args;
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    let spec = &loaded.spec;
    let cfg = super::common::store(spec, &args.store)?;
    if matches!(cfg.kind, StoreKind::Console(_)) {
        // The kit would write its kwcheck-* keys (2,000 for paging) into the committed
        // ledger, keys no console holds, and check nothing of the console itself.
        anyhow::bail!(
            "store `{0}` is a console store: keyward has no API into the console to check, and \
             test keys would only be written to its ledger\n  hint: `keyward audit --store {0}` \
             checks the ledger against what the console holds",
            cfg.name
        );
    }
    let store = super::common::open(spec, cfg)?;
    let opts = CheckOptions {
        environment: cfg.environment.clone(),
        scopes: args
            .scope
            .clone()
            .or_else(|| default_scope(spec, cfg))
            .into_iter()
            .collect(),
        paging_keys: args.paging_keys,
    };
    eprintln!(
        "checking store `{}` ({}) with test keys named kwcheck-*; they are removed afterwards",
        cfg.name,
        cfg.kind.name()
    );
    let report = check::run(store.as_ref(), &opts).await;
    let text = match args.format {
        CheckFormat::Text => report.table(),
        CheckFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    Ok(Outcome::ok_if(report.passed()))
}
