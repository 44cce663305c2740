//! Composing a budget alert (a threshold of a store's shared daily budget crossed): its
//! subject and text, the email to the fixed `notify.email.to` addresses (a budget has no
//! owner) and the webhook body (`event: budget.threshold`). Pure: no I/O, no clock; holds no
//! secret (store, scope, counts and the key names and owners that spent the most).

use super::compose::{Email, Outgoing, WEBHOOK_FORMAT_VERSION, WebhookCall};
use crate::spec::EmailNotify;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The webhook event of a budget alert.
pub const EVENT: &str = "budget.threshold";

/// One of the keys that spent the most of a budget today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopUser {
    pub key: String,
    pub key_id: String,
    pub owner: String,
    /// Valid calls today (as written by the servers' last usage flush).
    pub calls: u64,
}

/// A crossed threshold, ready to tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetAlert {
    /// `budget/STORE/SCOPE/DAY/PERCENT`: the same on every retry.
    pub id: String,
    pub store: String,
    /// `store`, or `label:name=value`.
    pub scope: String,
    /// The UTC day, YYYY-MM-DD.
    pub day: String,
    pub percent: u8,
    /// Calls counted against the budget today when the alert was made.
    pub spent: u64,
    pub daily: u64,
    pub top: Vec<TopUser>,
}

fn what(a: &BudgetAlert) -> String {
    match a.scope.strip_prefix("label:") {
        Some(label) => format!("the keys labelled {label} in store {}", a.store),
        None => format!("store {}", a.store),
    }
}

/// The subject line.
pub fn subject(a: &BudgetAlert) -> String {
    if a.percent >= 100 {
        format!(
            "[keyward] {}: the daily budget of {} calls is spent",
            what(a),
            a.daily
        )
    } else {
        format!(
            "[keyward] {}: {}% of the daily budget spent ({} of {})",
            what(a),
            a.percent,
            a.spent,
            a.daily
        )
    }
}

/// The plain-text body.
pub fn text(a: &BudgetAlert) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "The shared daily budget of {} ({} valid calls per UTC day) reached {}% on {}: {} calls counted.",
        what(a),
        a.daily,
        a.percent,
        a.day,
        a.spent
    );
    if a.percent >= 100 {
        t.push_str(
            "Verify now refuses the keys it covers with the reason `budget_exceeded` until the day ends (00:00 UTC).\n",
        );
    }
    if !a.top.is_empty() {
        t.push_str("\nWho spent it today (valid calls):\n");
        for u in &a.top {
            let _ = writeln!(
                t,
                "  {:>8}  {} (owner {}, id {})",
                u.calls, u.key, u.owner, u.key_id
            );
        }
    }
    t.push_str("\nSee `keyward usage --by key --since 1d` for the whole picture.\n");
    t.push_str("\n-- \nkeyward - this message never contains a secret\n");
    t
}

/// The email: to the fixed `to:` addresses; `None` when there are none.
pub fn email(a: &BudgetAlert, cfg: &EmailNotify) -> Option<Email> {
    if cfg.to.is_empty() {
        return None;
    }
    let digest = hex::encode(&Sha256::digest(a.id.as_bytes())[..12]);
    let domain = super::compose::domain_of(&cfg.from);
    Some(Email {
        from: cfg.from.clone(),
        to: cfg.to.clone(),
        subject: subject(a),
        text: text(a),
        message_id: format!("<{digest}.budget@{domain}>"),
    })
}

/// The webhook call: the alert's fields plus `format_version`, `event`, `subject`, `text`.
pub fn webhook(a: &BudgetAlert) -> WebhookCall {
    let mut v = serde_json::to_value(a).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("format_version".into(), WEBHOOK_FORMAT_VERSION.into());
        o.insert("event".into(), EVENT.into());
        o.insert("subject".into(), subject(a).into());
        o.insert("text".into(), text(a).into());
    }
    WebhookCall {
        body: serde_json::to_vec(&v).unwrap_or_default(),
        event: EVENT.into(),
        id: a.id.clone(),
    }
}

/// The message for a channel (`None`: nothing to send on it).
pub fn outgoing(a: &BudgetAlert, email_cfg: Option<&EmailNotify>, webhook: bool) -> Vec<Outgoing> {
    let mut out = Vec::new();
    if let Some(e) = email_cfg.and_then(|c| email(a, c)) {
        out.push(Outgoing::Email(e));
    }
    if webhook {
        out.push(Outgoing::Webhook(self::webhook(a)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(percent: u8) -> BudgetAlert {
        BudgetAlert {
            id: format!("budget/prod/store/2026-12-07/{percent}"),
            store: "prod".into(),
            scope: "store".into(),
            day: "2026-12-07".into(),
            percent,
            spent: 40_000,
            daily: 50_000,
            top: vec![TopUser {
                key: "ill".into(),
                key_id: "ID1".into(),
                owner: "jdoe".into(),
                calls: 30_000,
            }],
        }
    }

    #[test]
    fn the_alert_says_how_much_is_spent_and_who_spent_it() {
        let a = alert(80);
        assert_eq!(
            subject(&a),
            "[keyward] store prod: 80% of the daily budget spent (40000 of 50000)"
        );
        assert!(
            text(&a).contains("30000  ill (owner jdoe, id ID1)"),
            "{}",
            text(&a)
        );
        assert!(subject(&alert(100)).contains("is spent"));
        assert!(text(&alert(100)).contains("budget_exceeded"));
        let w = webhook(&a);
        let v: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(v["event"], EVENT);
        assert_eq!(v["percent"], 80);
        assert_eq!(v["top"][0]["owner"], "jdoe");
        assert!(!super::super::compose::leaks_secret(&Outgoing::Webhook(w)));
    }
}
