//! Import: turn unmanaged live keys (made in a console) into key entries for the spec, each
//! naming the key it adopts (`adopt: ID`), so `keyward import` can write them as YAML for
//! review. Pure: decides which keys can be imported and what their YAML says; must not do
//! I/O (the CLI writes the file and changes no store: the apply of the reviewed change
//! adopts the keys) and never sees a secret (an imported key keeps its own).

use crate::spec::keys::valid_key_name;
use crate::spec::raw::{KeyEntry, KeyFile, RotationEntry, StateName};
use crate::spec::{PrincipalKind, Scope, Spec};
use crate::store::{KeyStatus, LiveKey};
use chrono::Timelike;
use std::collections::BTreeSet;

/// What import does with one live key.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Write this entry (it adopts the key when applied).
    Import(Box<KeyEntry>),
    /// The spec already defines this name in this store; `adopts`: that entry names this
    /// key in its `adopt:` (the apply adopts it), else it needs `adopt: ID` to.
    InSpec { defined_at: String, adopts: bool },
    /// Left alone, with the reason.
    Skip(String),
}

/// One live key and what import does with it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: LiveKey,
    pub decision: Decision,
}

/// Decide, for every live key of `store`, whether it is imported. Keys keyward already
/// manages are not listed; keys another tool manages, revoked keys, keys whose name or
/// scopes the spec could not hold and keys whose owner is not a person in people.yaml are
/// skipped with the reason. `owner` limits import to that owner's keys.
pub fn plan_import(
    spec: &Spec,
    store: &str,
    lives: &[LiveKey],
    owner: Option<&str>,
) -> Vec<Candidate> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut sorted: Vec<&LiveKey> = lives.iter().filter(|k| !k.is_managed()).collect();
    sorted.sort_by(|a, b| (&a.name, a.created_at, &a.id).cmp(&(&b.name, b.created_at, &b.id)));
    let mut out = Vec::new();
    for k in sorted {
        if owner.is_some_and(|o| o != k.owner) {
            continue;
        }
        let decision = decide(spec, store, k, &mut names);
        out.push(Candidate {
            key: k.clone(),
            decision,
        });
    }
    out
}

fn decide<'a>(spec: &Spec, store: &str, k: &'a LiveKey, names: &mut BTreeSet<&'a str>) -> Decision {
    if let Some(other) = &k.managed_by {
        return Decision::Skip(format!(
            "managed by `{other}`, not keyward: import never takes a key from another tool"
        ));
    }
    if k.status == KeyStatus::Revoked {
        return Decision::Skip("revoked: nothing to manage".into());
    }
    if !valid_key_name(&k.name) {
        return Decision::Skip(format!(
            "the name `{}` is not a valid key name (lowercase letters, digits and `-`); rename it in the console first",
            k.name
        ));
    }
    if !names.insert(k.name.as_str()) {
        return Decision::Skip(format!(
            "another unmanaged key in `{store}` is also named `{}`; rename one in the console first",
            k.name
        ));
    }
    if let Some(d) = spec.key(store, &k.name) {
        return Decision::InSpec {
            defined_at: format!("{}:{}", d.location.file.display(), d.location.line),
            adopts: d.adopt.as_deref() == Some(k.id.as_str()),
        };
    }
    match spec.principals.get(&k.owner).map(|p| p.kind) {
        Some(PrincipalKind::Person) => {}
        Some(PrincipalKind::Service) => {
            return Decision::Skip(format!(
                "owned by the service `{}`; keys are owned by people: import it with --owner after \
                 giving it a person as owner in the console",
                k.owner
            ));
        }
        None => {
            return Decision::Skip(format!(
                "owner `{}` is not in people.yaml; add them (or change the owner in the console) first",
                k.owner
            ));
        }
    }
    for s in &k.scopes {
        let known = Scope::parse(s).is_some_and(|sc| {
            spec.catalogue.areas.contains(&sc.area)
                && spec.catalogue.level_rank(&sc.level).is_some()
        });
        if !known {
            return Decision::Skip(format!(
                "scope `{s}` is not in the scope catalogue of keyward.yaml"
            ));
        }
    }
    if k.scopes.is_empty() {
        return Decision::Skip("it has no scopes; a key in the spec needs at least one".into());
    }
    Decision::Import(Box::new(entry(store, k)))
}

/// The YAML entry for a live key: what it is now (so adopting it changes nothing else), and
/// which key it adopts.
pub fn entry(store: &str, k: &LiveKey) -> KeyEntry {
    let expires = Some(match k.expires_at {
        None => "never".to_string(),
        Some(t) if t.hour() == 23 && t.minute() == 59 && t.second() == 59 => {
            t.format("%Y-%m-%d").to_string()
        }
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    KeyEntry {
        name: k.name.clone(),
        store: store.to_string(),
        owner: k.owner.clone(),
        purpose: k.purpose.clone(),
        scopes: k.scopes.clone(),
        expires,
        lifetime: None,
        recipients: None,
        rotation: (k.spec_generation > 1).then_some(RotationEntry {
            every: None,
            grace: None,
            generation: Some(k.spec_generation),
            on_recipient_added: None,
        }),
        quota: k.quota_per_day.map(|q| format!("{q}/day")),
        labels: (!k.labels.is_empty()).then(|| k.labels.clone()),
        state: (k.status == KeyStatus::Disabled).then_some(StateName::Disabled),
        protected: k.protected.then_some(true),
        include_owner: None,
        adopt: Some(k.id.clone()),
        unused_after: None,
    }
}

/// The key file import writes, starting with `modeline` (the editor's
/// `# yaml-language-server: $schema=` line, as `request::modeline` makes it).
pub fn render_file(
    modeline: &str,
    store: &str,
    entries: Vec<KeyEntry>,
    generated: &str,
) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&KeyFile { keys: entries })?;
    Ok(format!(
        "{modeline}\n\
         # Imported from store `{store}` by `keyward import` on {generated}.\n\
         # Nothing in the store changed: the apply of this file, once reviewed and merged, adopts\n\
         # each key named by `adopt:` (marks it managed by keyward); until then keyward leaves them\n\
         # alone. These keys keep their secrets; the owner receives a secret through keyward at the\n\
         # first rotation (bump `rotation.generation`). Review owners, scopes, expiry and recipients.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::{key, live_from, now, spec};

    #[test]
    fn console_keys_become_entries_and_other_tools_keys_are_refused() {
        let s = spec(vec![key("prod", "in-spec", &["bibs:read"])]);
        let template = key("prod", "x", &["bibs:read"]);
        let mk = |name: &str, managed_by: Option<&str>| {
            let mut l = live_from(&s, &template, name, now());
            l.name = name.into();
            l.managed_by = managed_by.map(String::from);
            l.recipients.clear();
            l
        };
        let mut odd_scope = mk("odd", None);
        odd_scope.scopes = vec!["billing:read".into()];
        let mut stranger = mk("stranger", None);
        stranger.owner = "nobody".into();
        let lives = vec![
            mk("console-made", None),
            mk("terraformed", Some("terraform")),
            mk("in-spec", None),
            mk("Bad Name", None),
            odd_scope,
            stranger,
            mk("managed", Some("keyward")),
        ];
        let c = plan_import(&s, "prod", &lives, None);
        let get = |n: &str| c.iter().find(|c| c.key.name == n).map(|c| &c.decision);
        assert!(matches!(get("console-made"), Some(Decision::Import(_))));
        assert!(matches!(get("terraformed"), Some(Decision::Skip(r)) if r.contains("terraform")));
        assert!(matches!(
            get("in-spec"),
            Some(Decision::InSpec { adopts: false, .. })
        ));
        assert!(
            matches!(get("console-made"), Some(Decision::Import(e)) if e.adopt.as_deref() == Some("console-made"))
        );
        assert!(matches!(get("Bad Name"), Some(Decision::Skip(_))));
        assert!(matches!(get("odd"), Some(Decision::Skip(r)) if r.contains("catalogue")));
        assert!(matches!(get("stranger"), Some(Decision::Skip(r)) if r.contains("people.yaml")));
        assert!(get("managed").is_none());
        // --owner narrows it down.
        assert!(plan_import(&s, "prod", &lives, Some("asmith")).is_empty());
    }
}
