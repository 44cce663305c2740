//! `keyward expiring [--notify]`: the expiry report a nightly job runs (keys expiring, due
//! for rotation, or unused for the policy's `unused_after`), and with `--notify` the
//! reminders and unused-key notices owed now (plus retries of notices earlier runs could
//! not send). Reads the stores (their usage once each, where kept); the decisions live in
//! `lifecycle`, the rendering in `expiry_report`, sending in `notify`.

use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use keyward::clock::{Clock, SystemClock};
use keyward::expiry_report::{self, ReportFormat};
use keyward::flow::{actor, load_or_report};
use keyward::outcome::Outcome;
use keyward::spec::Span;
use std::path::Path;

/// Output formats of `keyward expiring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    Text,
    Json,
    Markdown,
}

/// The examples under `keyward expiring --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward expiring                       # within the policy's reminder window (30d)
  keyward expiring --within 7d --format markdown
  keyward expiring --notify               # the nightly job: mail/webhook reminders";

#[derive(Debug, Args)]
pub struct ExpiringArgs {
    /// Window to look ahead, e.g. `30d` (default: the policy's longest reminder offset).
    #[arg(long, value_name = "SPAN")]
    pub within: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormatArg::Text)]
    pub format: ReportFormatArg,
    /// Also send the expiry reminders and the notices ahead of a disable for disuse owed
    /// now (keyward.yaml `notify:`; each once per key and offset) and retry notices earlier
    /// runs could not send. Exit 1 when a message could not be sent.
    #[arg(long)]
    pub notify: bool,
}

/// Run `keyward expiring`.
pub async fn run(dir: &Path, args: &ExpiringArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    let spec = &loaded.spec;
    if args.notify && spec.notify.is_none() {
        eprintln!(
            "error: --notify needs a `notify:` section in keyward.yaml (email and/or webhook; see the README, \"Notifications\"); nothing was sent."
        );
        return Ok(Outcome::Error);
    }
    let within = match &args.within {
        Some(w) => {
            Span::parse(w).ok_or_else(|| anyhow!("`{w}` is not a duration (e.g. 30d, 12h, 2w)"))?
        }
        None => spec.policy.reminder_window(),
    };
    let format = match args.format {
        ReportFormatArg::Text => ReportFormat::Text,
        ReportFormatArg::Json => ReportFormat::Json,
        ReportFormatArg::Markdown => ReportFormat::Markdown,
    };
    let now = SystemClock.now();
    let (stores, _absent) = keyward::observe::open_existing(spec, None)?;
    super::common::warn_modes(spec, stores.keys());
    let observed = keyward::observe::list_stores(&stores).await?;
    let usage = keyward::observe::usage_of(&stores, keyward::unused::ALL_DAYS).await?;
    let seen = keyward::unused::Seen::new(&usage).with_consoles(spec);
    let blind = keyward::unused::blind(spec, &seen);
    let mut items = keyward::lifecycle::due_seen(spec, &observed, &seen, now, within);
    keyward::console::steps::add_renewal(spec, &mut items, now);
    let outbox = keyward::deliver::Outbox::new(spec.delivery.outbox.clone());
    let console = keyward::report::gather::console_steps(spec, &observed, &outbox, now);
    print!(
        "{}",
        expiry_report::render(spec, &items, &console, &blind, within, now, format)
    );
    let mut outcome = if items.is_empty() && console.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Changes
    };
    if args.notify {
        let mut owed = keyward::notify::reminders(spec, &observed, now);
        owed.extend(keyward::notify::unused_notices(spec, &observed, &seen, now));
        if !keyward::notify::run_and_report(spec, &stores, owed, &actor(), now).await {
            outcome = Outcome::Error;
        }
    }
    Ok(outcome)
}
