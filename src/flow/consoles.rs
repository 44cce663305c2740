//! The console steps of an apply: who answers them (the admin at a terminal, a
//! `--console-input` file, or nobody), running the checklist after the other stores, and
//! the refusal (exit 3) for steps left pending. Orchestration only: the checklist itself is
//! `console::checklist`.

use super::options::{ApplyRunOptions, Step};
use crate::apply::{ApplyReport, Context};
use crate::console::checklist::{self, ChecklistReport};
use crate::console::input::{InputFile, Operator, Terminal};
use crate::diff::Change;
use crate::outcome::Outcome;
use crate::store::Actor;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// Run the console changes. Without a terminal and without `--console-input` nothing waits
/// and nothing is recorded: every console change stays pending.
pub async fn run(
    cx: &Context<'_>,
    changes: &[Change],
    opts: &ApplyRunOptions,
    actor: &Actor,
) -> Step<ChecklistReport> {
    if changes.is_empty() {
        return Ok(Ok(ChecklistReport::default()));
    }
    if let Some(path) = &opts.console_input {
        let mut file = match InputFile::read(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: --console-input: {e}");
                return Ok(Err(Outcome::Refused));
            }
        };
        let report = checklist::run(cx, changes, &mut file, actor).await;
        for name in file.unused() {
            eprintln!(
                "warning: --console-input names `{name}`, which no console step of this plan asks for"
            );
        }
        return Ok(Ok(report));
    }
    let terminal = std::io::stdin()
        .is_terminal()
        .then(Terminal::open)
        .flatten();
    let mut op: Box<dyn Operator> = match terminal {
        Some(t) => Box::new(t),
        None => {
            let mut report = ChecklistReport::default();
            for c in changes {
                *report.pending.entry(c.store.clone()).or_default() += 1;
            }
            return Ok(Ok(report));
        }
    };
    eprintln!(
        "\n{} step(s) to do by hand in vendor consoles. For each: do it in the console, then answer here.",
        changes.len()
    );
    Ok(Ok(checklist::run(cx, changes, op.as_mut(), actor).await))
}

/// Fold the checklist's results into the apply report; returns the pending steps by store.
pub fn merge(report: &mut ApplyReport, c: ChecklistReport) -> BTreeMap<String, usize> {
    report.done.extend(c.done);
    report.failed.extend(c.failed);
    report
        .done
        .sort_by(|a, b| (&a.store, a.action, &a.name).cmp(&(&b.store, b.action, &b.name)));
    c.pending
}

/// Console steps recorded without `--commit-deliveries`: the ledger is the console's state
/// the team shares, so say which ledger files to commit with the deliveries.
pub fn remind_to_commit(spec: &crate::spec::Spec, report: &ApplyReport, opts: &ApplyRunOptions) {
    if opts.commit_deliveries {
        return;
    }
    let ledgers: std::collections::BTreeSet<String> = report
        .done
        .iter()
        .filter_map(|d| match &spec.stores.get(&d.store)?.kind {
            crate::spec::StoreKind::Console(c) => Some(c.ledger_rel.display().to_string()),
            _ => None,
        })
        .collect();
    if ledgers.is_empty() {
        return;
    }
    eprintln!(
        "note: the console steps are recorded in {}; commit it with the deliveries and push it, so the team shares one ledger (`keyward apply --commit-deliveries` commits both).",
        ledgers.into_iter().collect::<Vec<_>>().join(", ")
    );
}

/// Steps left pending refuse (exit 3), naming each store and how to finish.
pub fn pending_outcome(pending: &BTreeMap<String, usize>) -> Outcome {
    eprintln!();
    for (store, n) in pending {
        eprintln!(
            "{n} manual step{} pending for store {store}; run `keyward apply --store {store}` at a terminal",
            if *n == 1 { "" } else { "s" }
        );
    }
    Outcome::Refused
}
