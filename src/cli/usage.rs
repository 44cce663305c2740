//! `keyward usage`: the verify calls the stores have counted (`keyward serve` writes them),
//! by key, owner or store, with calls per day, as text or JSON. Reads the stores only; the
//! grouping and rendering live in `usage_report`.

use super::common::known_store;
use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use keyward::clock::{Clock, SystemClock};
use keyward::flow::load_or_report;
use keyward::observe;
use keyward::outcome::Outcome;
use keyward::spec::Span;
use keyward::store::usage::since_day;
use keyward::usage_report::{self, GroupBy, UsageFormat};
use std::path::Path;

/// The examples under `keyward usage --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward usage --since 30d
  keyward usage --by owner --format json
  keyward keys --unused-for 90d    # keys nothing has used";

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// One row per key, per owner or per store.
    #[arg(long, value_enum, default_value_t = ByArg::Key)]
    pub by: ByArg,
    /// The window, ending today (UTC), e.g. `30d`, `2w`.
    #[arg(long, default_value = "30d", value_name = "SPAN")]
    pub since: String,
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ByArg {
    Key,
    Owner,
    Store,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

/// Whole days in `span` (at least one: today).
pub fn window_days(span: &str) -> Result<u32> {
    let s = Span::parse(span)
        .ok_or_else(|| anyhow!("`{span}` is not a duration (e.g. 30d, 2w, 90d)"))?;
    let days = s.to_chrono().num_days().max(1);
    Ok(u32::try_from(days).unwrap_or(u32::MAX))
}

/// Run `keyward usage`.
pub async fn run(dir: &Path, args: &UsageArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    known_store(&loaded.spec, args.store.as_deref())?;
    let since = since_day(SystemClock.now(), window_days(&args.since)?);
    let (stores, _absent) = observe::open_existing(&loaded.spec, args.store.as_deref())?;
    let usage = observe::usage_of(&stores, &since).await?;
    let keys = observe::list_stores(&stores).await?;
    let by = match args.by {
        ByArg::Key => GroupBy::Key,
        ByArg::Owner => GroupBy::Owner,
        ByArg::Store => GroupBy::Store,
    };
    let format = match args.format {
        FormatArg::Text => UsageFormat::Text,
        FormatArg::Json => UsageFormat::Json,
    };
    let mut report = usage_report::build(&usage, &keys, &since, by);
    report.consoles = report
        .not_visible
        .iter()
        .filter(|s| {
            loaded
                .spec
                .stores
                .get(*s)
                .is_some_and(|c| c.kind.name() == "console")
        })
        .cloned()
        .collect();
    let today = keyward::store::usage::day_of(&SystemClock.now());
    for (name, store) in &stores {
        let Ok(Some(budget)) = store.budget().await else {
            continue;
        };
        let spent = store.budget_spent(&today).await?;
        let u = usage.get(name).and_then(Option::as_ref);
        let live = keys.get(name).map(Vec::as_slice).unwrap_or(&[]);
        report.budgets.extend(usage_report::budget_lines(
            name, &budget, &spent, u, live, &today,
        ));
    }
    print!("{}", usage_report::render(&report, format));
    Ok(Outcome::Ok)
}
