//! `keyward force-unlock`: release an apply lock left behind by an apply that died on
//! another machine. Touches only the named store's lock.

use anyhow::Result;
use clap::Args;
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use std::path::Path;

/// The examples under `keyward force-unlock --help`.
pub const AFTER_HELP: &str = "\
Example:
  keyward force-unlock --store alma-production 2d4b004f82b5a9f8";

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lease id from the `locked by` message.
    pub lease_id: String,
    #[arg(long)]
    pub store: String,
}

/// Run `keyward force-unlock`.
pub async fn run(dir: &Path, args: &ForceUnlockArgs, color_err: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color_err)? else {
        return Ok(Outcome::Error);
    };
    let (_, s) = super::common::open_store(&loaded.spec, &args.store)?;
    s.unlock(&args.lease_id).await?;
    eprintln!(
        "Released lease {} on {} (if it was still held).",
        args.lease_id, args.store
    );
    Ok(Outcome::Ok)
}
