//! Plan text helpers both renderers share (the text plan in `render`, the pull-request
//! comment in `markdown`): an action in words, the one-line summary, one-line cleaning of
//! spec-supplied values. Pure; must not know an output format.

use super::Plan;
use crate::diff::{Action, Grace};

/// What happens to a key, in words.
pub fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Rotate => "will be rotated (same id, new secret)",
        Action::Replace => "must be replaced",
        Action::Disable => "will be disabled",
        Action::Revoke => "will be revoked",
        Action::Delete => "will be deleted",
    }
}

/// Until when a rotated key's previous secret keeps working, in words.
pub fn grace_line(g: &Grace) -> String {
    format!(
        "previous secret valid until {} (grace {} from the apply)",
        g.previous_valid_until.format("%Y-%m-%d %H:%M UTC"),
        clean(&g.period)
    )
}

/// Make a spec-supplied value safe to print on one line: newlines become `⏎`, tabs spaces,
/// other control characters (terminal escapes) and bidi overrides the replacement character;
/// secret-shaped text becomes `<redacted>` (before any escaping could hide its shape).
pub fn clean(s: &str) -> String {
    crate::leak::redact(s)
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' => {
                '\u{FFFD}'
            }
            c => c,
        })
        .collect()
}

/// The one-line summary, Terraform style.
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary();
    if s.total() == 0 && !plan.settings.is_empty() {
        return format!("Plan: {} store setting(s) to change.", plan.settings.len());
    }
    if s.total() == 0 {
        return "No changes. The live stores match the spec.".into();
    }
    format!(
        "Plan: {} to create, {} to update, {} to rotate, {} to replace, {} to disable, {} to revoke, {} to delete.",
        s.get(Action::Create),
        s.get(Action::Update),
        s.get(Action::Rotate),
        s.get(Action::Replace),
        s.get(Action::Disable),
        s.get(Action::Revoke),
        s.get(Action::Delete)
    )
}
