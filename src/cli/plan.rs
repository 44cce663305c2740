//! `keyward plan`: its clap arguments, read into `flow::PlanOptions`, and the call into the
//! flow. Must not plan anything itself.

use clap::{Args, ValueEnum};
use keyward::flow::{self, Colors, PlanFormat, PlanOptions};
use keyward::outcome::Outcome;
use std::path::{Path, PathBuf};

/// How a plan is printed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanOutput {
    /// Terraform-like text (colour on a terminal).
    Text,
    /// The JSON plan (`format_version`; schemas/plan.schema.json).
    Json,
    /// A pull-request comment (hidden marker, summary table, details folded, < 60,000 chars).
    Markdown,
}

/// The examples under `keyward plan --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward plan
  keyward plan --detailed-exitcode   # 0 none, 2 changes, 1 error, 3 refused
  keyward plan --format json > plan.json
  keyward plan --base origin/main --format markdown   # a pull request's comment
  keyward plan --rev v1.2 --out plan.json            # save it; then: keyward apply plan.json";

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Exit 2 when there are changes, 0 when none (plan only).
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
    pub format: PlanOutput,
    /// Only act on keys matching PATTERN (`store/name` or `name`, `*` wildcard). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,
    /// Only changes that restore edits made outside keyward (plan: exit 2 when there is drift).
    #[arg(long)]
    pub drift_only: bool,
    /// Read the spec as of git revision REV (a commit, branch or tag) without checking it out.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// A pull request's base (e.g. origin/main): mark the keys the change edits and name
    /// the authors of its commits as the requesters.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Also save the plan (JSON) to FILE, for `keyward apply FILE` (plan only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// An embedded store whose database file is missing although deliveries show keys from
    /// it: re-create it on purpose, re-issuing every such key with a new secret. Repeatable.
    #[arg(long, value_name = "STORE")]
    pub recreate_store: Vec<String>,
}

impl PlanArgs {
    /// The flow's options.
    pub fn options(&self) -> PlanOptions {
        PlanOptions {
            detailed_exitcode: self.detailed_exitcode,
            format: match self.format {
                PlanOutput::Text => PlanFormat::Text,
                PlanOutput::Json => PlanFormat::Json,
                PlanOutput::Markdown => PlanFormat::Markdown,
            },
            only: self.only.clone(),
            drift_only: self.drift_only,
            rev: self.rev.clone(),
            base: self.base.clone(),
            out: self.out.clone(),
            recreate_store: self.recreate_store.clone(),
        }
    }
}

/// Run `keyward plan`.
pub async fn run(dir: &Path, args: &PlanArgs, colors: Colors) -> anyhow::Result<Outcome> {
    flow::plan(dir, &args.options(), colors).await
}
