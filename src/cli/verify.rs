//! `keyward verify`: ask a store whether it accepts a secret (read from stdin when not
//! given, kept in a zeroized buffer) and print its verdict. Must not print the secret.

use anyhow::{Result, bail};
use clap::Args;
use keyward::clock::{Clock, SystemClock};
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use keyward::spec::Loaded;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// The examples under `keyward verify --help`.
pub const AFTER_HELP: &str = "\
Example:
  keyward secret ill-lookup --store alma-sandbox | keyward verify --store alma-sandbox";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The key; omit it to read from stdin (keeps it out of shell history).
    pub key: Option<String>,
    #[arg(long)]
    pub store: Option<String>,
}

/// Run `keyward verify`.
pub async fn run(dir: &Path, args: &VerifyArgs) -> Result<Outcome> {
    let presented = match &args.key {
        Some(k) => Zeroizing::new(k.clone()),
        None => read_stdin()?,
    };
    let Some(loaded) = load_or_report(dir, false)? else {
        return Ok(Outcome::Error);
    };
    let store_name = match &args.store {
        Some(s) => s.clone(),
        None => store_by_tag(&loaded, &presented)?,
    };
    let (_, s) = super::common::open_store(&loaded.spec, &store_name)?;
    let verdict = s.verify(&presented, SystemClock.now()).await?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    Ok(Outcome::ok_if(verdict.valid))
}

fn read_stdin() -> Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        eprint!("Key to verify: ");
        std::io::stderr().flush().ok();
    }
    let mut s = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut s)?;
    Ok(Zeroizing::new(s.trim().to_string()))
}

/// The one store the environment tag in the secret points at.
fn store_by_tag(loaded: &Loaded, presented: &str) -> Result<String> {
    let tag = keyward::secret::parse(presented).map(|p| p.env_tag);
    let candidates: Vec<&String> = loaded
        .spec
        .stores
        .values()
        .filter(|s| {
            tag.as_ref()
                .is_none_or(|t| keyward::secret::env_tag(&s.environment) == *t)
        })
        .map(|s| &s.name)
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        _ => bail!("several stores could hold this key; pass --store"),
    }
}
