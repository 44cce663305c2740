//! What the stores' capabilities mean for a plan: a key field its store cannot honour is a
//! diagnostic at the key's line (KW430; plan refuses), what a store does differently but
//! still honours is said in the plan as a note (`expiry: emulated`, `no overlap on
//! rotation`), and a rotation in a store with no overlap carries no grace. Must not change
//! a store or decide a change.

use crate::diag::{Diagnostic, Diagnostics, codes};
use crate::diff::{Action, Note};
use crate::plan::Plan;
use crate::spec::Spec;
use crate::spec::model::{DesiredState, Expiry};
use crate::store::{Capabilities, ExpiryMode, Overlap};
use std::collections::BTreeMap;

/// The key fields of `spec` that their store cannot honour.
pub fn diagnostics(spec: &Spec, caps: &BTreeMap<String, Capabilities>) -> Diagnostics {
    let mut out = Diagnostics::default();
    for k in &spec.keys {
        let Some(c) = caps.get(&k.store) else {
            continue;
        };
        if matches!(k.state, DesiredState::Revoked | DesiredState::Deleted) {
            continue;
        }
        let mut cannot = |field: &str, what: String, hint: &str| {
            out.push(
                Diagnostic::error(
                    codes::STORE_CANNOT,
                    format!("key `{}`: store `{}` {what}", k.name, k.store),
                )
                .at(k.field_location(field))
                .hint(hint.to_owned()),
            );
        };
        // Only an expiry the key file asks for: a policy default is not the key's doing.
        let written = ["expires", "lifetime"]
            .into_iter()
            .find(|f| k.field_locations.contains_key(*f));
        if c.expiry_mode() == ExpiryMode::None
            && !matches!(k.expiry, Expiry::Never)
            && let Some(field) = written
        {
            cannot(
                field,
                "cannot expire keys (expiry: none)".into(),
                "remove the expiry, or keep the key in a store that expires keys",
            );
        }
        if k.quota.is_some() && !c.quota {
            cannot(
                "quota",
                "does not count calls, so a quota would never be enforced".into(),
                "remove `quota:`; the service behind the store limits its own calls",
            );
        }
        if k.state == DesiredState::Disabled && !c.disable {
            cannot(
                "state",
                "cannot disable keys".into(),
                "revoke the key (`state: revoked`) or keep it active",
            );
        }
    }
    out.sort();
    out
}

/// A rotation in a store with no overlap (`rotation_overlap: none`: PostgreSQL roles, vendor
/// consoles) keeps no previous secret, so it has no grace: the plan must not say "previous
/// secret valid until". The key's `rotation.grace` stays in the spec (a replace, which
/// makes a second key, still honours it).
pub fn honour_overlap(plan: &mut Plan, caps: &BTreeMap<String, Capabilities>) {
    for c in plan
        .actions
        .iter_mut()
        .filter(|c| c.action == Action::Rotate)
    {
        if caps
            .get(&c.store)
            .is_some_and(|cap| cap.rotation_overlap == Overlap::None)
        {
            c.grace = None;
        }
    }
}

/// What the plan should say about how its stores carry out its changes. A console store's
/// rotation says it in the vendor's words already (the change's reasons: "the old value
/// stops working at once: ..."), so it gets no generic overlap note.
pub fn notes(spec: &Spec, plan: &Plan, caps: &BTreeMap<String, Capabilities>) -> Vec<Note> {
    let mut out = Vec::new();
    for c in &plan.actions {
        let Some(cap) = caps.get(&c.store) else {
            continue;
        };
        let console = crate::console::checklist::is_console(spec, &c.store);
        let note = |message: &str| Note {
            store: c.store.clone(),
            name: c.name.clone(),
            message: message.to_owned(),
        };
        let makes_secret = matches!(c.action, Action::Create | Action::Replace | Action::Rotate);
        if c.action == Action::Rotate && cap.rotation_overlap == Overlap::None && !console {
            out.push(note(
                "no overlap on rotation: the old secret stops at once (the store holds one secret per key)",
            ));
        }
        if makes_secret && cap.expiry_mode() == ExpiryMode::Emulated {
            out.push(note(
                "expiry: emulated: the store does not expire keys itself; apply and the nightly run switch the key off when it expires",
            ));
        }
    }
    out
}
