//! `keyward audit --store X`: the admin walks through the ledger's keys in the console ("is
//! key X still there, with these scopes and this expiry?") and the answers are recorded in
//! the ledger; a key the console no longer has is recorded as gone (revoked), so the next
//! plan shows the difference. Must not change anything in the console nor decide changes.

use super::input::{Operator, Question, Reply};
use super::steps::scopes_console;
use super::store::ConsoleStore;
use crate::store::{Actor, KeyStatus, StoreError};
use chrono::{DateTime, Utc};

/// What an audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Still in the console as the ledger lists them.
    pub as_listed: usize,
    /// No longer in the console (recorded revoked).
    pub gone: Vec<String>,
    pub skipped: usize,
    /// The admin stopped before the end (the audit is then not recorded as complete, nor
    /// when a key was skipped).
    pub stopped: bool,
}

/// Ask `op` about every live key of `cs`'s ledger and record the answers.
pub fn run(
    cs: &ConsoleStore,
    op: &mut dyn Operator,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<AuditReport, StoreError> {
    let ledger = cs.read().map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut report = AuditReport::default();
    let p = cs.preset();
    let keys: Vec<_> = ledger
        .keys
        .iter()
        .filter(|k| k.status != KeyStatus::Revoked)
        .collect();
    op.say(&format!(
        "Audit of {} ({}): {} key(s) in the ledger. Look each one up in {}.\n",
        ledger.store,
        p.title,
        keys.len(),
        p.console
    ));
    for k in keys {
        let expires = k
            .expires
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "no expiry".into());
        op.say(&format!(
            "\n  `{}` ({}, owner {}): {}; expires {expires}; status {}\n",
            k.name,
            k.environment,
            k.owner,
            scopes_console(p, &k.scopes),
            k.status.as_str()
        ));
        let key = format!("{}/{}", ledger.store, k.name);
        let q = Question {
            key: &key,
            name: &k.name,
            text: "  Is it in the console, exactly so?",
            resumed: true,
            choices: Some("[y] yes, as listed / [n] no, it is not there / [s] skip / [q] stop"),
        };
        match op.ask(&q).map_err(|e| StoreError::Backend(e.to_string()))? {
            Reply::Done => {
                cs.record_found(&k.id, |_| {}, actor)?;
                report.as_listed += 1;
            }
            Reply::NotMade => {
                cs.record_found(&k.id, |k| k.status = KeyStatus::Revoked, actor)?;
                report.gone.push(k.name.clone());
            }
            Reply::Skip => report.skipped += 1,
            Reply::Stop => {
                report.stopped = true;
                break;
            }
        }
    }
    // Only a walk through every key counts as an audit of the console.
    if !report.stopped && report.skipped == 0 {
        cs.audited(actor, now)?;
    }
    Ok(report)
}
