//! The plain options of the `plan` and `apply` flows (what the command line asked for, no
//! clap types) and who runs them. Data only: must not read files, stores or the terminal.

use crate::store::Actor;
use std::path::PathBuf;

/// How a plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanFormat {
    /// Terraform-like text (colour on a terminal).
    #[default]
    Text,
    /// The JSON plan (`format_version`; schemas/plan.schema.json).
    Json,
    /// A pull-request comment (hidden marker, summary table, details folded, < 60,000 chars).
    Markdown,
}

/// Options of `keyward plan` (and of the plan `keyward apply` makes).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Changes are an outcome of their own (exit 2).
    pub detailed_exitcode: bool,
    pub format: PlanFormat,
    /// Only act on keys matching these patterns (`store/name` or `name`, `*` wildcard).
    pub only: Vec<String>,
    /// Only changes that restore edits made outside keyward.
    pub drift_only: bool,
    /// Read the spec as of this git revision without checking it out.
    pub rev: Option<String>,
    /// A pull request's base: mark the keys the change edits and who asked for them.
    pub base: Option<String>,
    /// Also save the plan (JSON) to this file (plan only).
    pub out: Option<PathBuf>,
    /// Embedded stores whose database is missing to re-create on purpose, re-issuing every
    /// key their deliveries show (plan shows it, apply does it).
    pub recreate_store: Vec<String>,
}

/// Options of `keyward apply`.
#[derive(Debug, Clone, Default)]
pub struct ApplyRunOptions {
    /// A saved plan to apply exactly (after its staleness checks).
    pub plan_file: Option<PathBuf>,
    pub plan: PlanOptions,
    /// Do not ask for confirmation.
    pub auto_approve: bool,
    /// Keys applied at once.
    pub concurrency: usize,
    /// Apply even when the plan crosses a safety threshold.
    pub force: bool,
    /// Apply even when spec files or deliveries have uncommitted changes.
    pub allow_dirty: bool,
    /// After applying, commit the delivery outbox to git.
    pub commit_deliveries: bool,
    /// With `commit_deliveries`: commit on this branch instead of the checked-out one.
    pub branch: Option<String>,
    /// `--store STORE`: only this store's changes (`plan.only` carries `STORE/*`); an
    /// unknown store is an error.
    pub store: Option<String>,
    /// Answers to console steps for scripts and tests (`--console-input FILE`, 0600 JSON).
    pub console_input: Option<PathBuf>,
}

/// Whether stdout and stderr get colour.
#[derive(Debug, Clone, Copy, Default)]
pub struct Colors {
    pub out: bool,
    pub err: bool,
}

/// Who runs this command, as recorded in events: `KEYWARD_ACTOR`, else `USER`, else
/// `unknown` (no commit yet; the apply flow adds the one it applies).
pub fn actor() -> Actor {
    let who = std::env::var("KEYWARD_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string());
    Actor { who, commit: None }
}

/// A step of a flow: `Ok(Ok(value))` goes on, `Ok(Err(outcome))` stops the flow with that
/// outcome (the step has printed why), `Err` is an error.
pub type Step<T> = anyhow::Result<Result<T, crate::outcome::Outcome>>;
