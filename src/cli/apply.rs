//! `keyward apply [FILE]`: its clap arguments, read into `flow::ApplyRunOptions`, and the
//! call into the flow. Must not apply anything itself.

use super::plan::PlanArgs;
use clap::Args;
use keyward::flow::{self, ApplyRunOptions, Colors};
use keyward::outcome::Outcome;
use std::path::{Path, PathBuf};

/// The examples under `keyward apply --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward apply                 # asks for confirmation on a terminal
  keyward apply --auto-approve --commit-deliveries   # CI, then: git push
  keyward apply plan.json       # exactly a saved plan; exit 3 if it is stale";

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// A plan saved by `keyward plan --out FILE`: apply exactly it, after checking that the
    /// spec and the live keys it was computed from are unchanged (exit 3 when stale).
    #[arg(value_name = "FILE")]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Keys applied at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Apply even when the plan crosses a safety threshold (keyward.yaml `guards:`).
    #[arg(long)]
    pub force: bool,
    /// Apply even when spec files or deliveries have uncommitted changes.
    #[arg(long)]
    pub allow_dirty: bool,
    /// After applying, commit the delivery outbox to git (CI then pushes it).
    #[arg(long)]
    pub commit_deliveries: bool,
    /// With --commit-deliveries: commit on BRANCH (made from HEAD if missing) instead of the
    /// checked-out branch, without touching the working tree.
    #[arg(long, value_name = "BRANCH", requires = "commit_deliveries")]
    pub branch: Option<String>,
    /// Only the changes of this store (e.g. a console store's checklist at a terminal).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Answers to console steps, for scripts and tests: a JSON object
    /// {"KEY": {"secret": "...", "client_id": "...", "done": true}}, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub console_input: Option<PathBuf>,
}

impl ApplyArgs {
    /// The flow's options.
    pub fn options(&self) -> ApplyRunOptions {
        ApplyRunOptions {
            plan_file: self.plan_file.clone(),
            plan: {
                let mut p = self.plan.options();
                p.only.extend(self.store.iter().map(|s| format!("{s}/*")));
                p
            },
            auto_approve: self.auto_approve,
            concurrency: self.concurrency,
            force: self.force,
            allow_dirty: self.allow_dirty,
            commit_deliveries: self.commit_deliveries,
            branch: self.branch.clone(),
            store: self.store.clone(),
            console_input: self.console_input.clone(),
        }
    }
}

/// Run `keyward apply`.
pub async fn run(dir: &Path, args: &ApplyArgs, colors: Colors) -> anyhow::Result<Outcome> {
    flow::apply(dir, &args.options(), colors).await
}
