//! The words of a console step: a preset's step templates filled in for one planned change
//! (the console page, the name to type, the areas and levels to tick, the expiry, the
//! environment). Pure text: must not talk to anyone nor read a ledger.

use super::preset::{Pick, Preset, StepKind};
use crate::diff::{Action, Change};
use crate::spec::{ConsoleStoreConfig, DesiredKey};
use chrono::{DateTime, Utc};

/// The step kind a planned change needs in the console; None when nothing is done there
/// (only keyward's own metadata changes: purpose, labels, recipients, protection).
pub fn kind_of(c: &Change) -> Option<StepKind> {
    match c.action {
        Action::Create | Action::Replace => Some(StepKind::Create),
        Action::Rotate => Some(StepKind::Rotate),
        Action::Disable => Some(StepKind::Disable),
        Action::Revoke => Some(StepKind::Revoke),
        Action::Delete => Some(StepKind::Delete),
        Action::Update => {
            let console_side = c.patch.scopes.is_some()
                || c.patch.expires_at.is_some()
                || c.set_status.is_some()
                || c.fields
                    .iter()
                    .any(|f| matches!(f.field.as_str(), "scopes" | "expires" | "status"));
            console_side.then_some(StepKind::Update)
        }
    }
}

/// How the console lists `scopes` ("Users and Fulfillment: Read-only; ...").
pub fn scopes_console(p: &Preset, scopes: &[String]) -> String {
    let one = |s: &String| {
        let Some((area, level)) = s.split_once(':') else {
            return s.clone();
        };
        let a = p.area_label(area).unwrap_or(area);
        match (p.pick, p.level_label(level)) {
            (Pick::One, _) => a.to_string(),
            (Pick::Any, Some(l)) => format!("{a}: {l}"),
            (Pick::Any, None) => format!("{a}: {level}"),
        }
    };
    if scopes.is_empty() {
        return "(none)".into();
    }
    scopes.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// What a step needs to know besides the preset.
pub struct StepFacts<'a> {
    pub name: &'a str,
    pub environment: &'a str,
    pub owner: &'a str,
    pub scopes: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
}

impl<'a> StepFacts<'a> {
    /// From the desired key when there is one (create, update, rotate), else from the change.
    pub fn of(c: &'a Change, d: Option<&'a DesiredKey>, now: DateTime<Utc>) -> StepFacts<'a> {
        match d {
            Some(d) => StepFacts {
                name: &d.name,
                environment: &d.environment,
                owner: &d.owner,
                scopes: crate::diff::scope_strings(&d.scopes),
                expires: crate::diff::expires_at(&d.expiry, now),
            },
            None => StepFacts {
                name: &c.name,
                environment: &c.environment,
                owner: &c.owner,
                scopes: Vec::new(),
                expires: None,
            },
        }
    }
}

/// The numbered lines of step `kind` for one key.
pub fn render(p: &Preset, cfg: &ConsoleStoreConfig, kind: StepKind, f: &StepFacts) -> Vec<String> {
    let env_label = p
        .environments
        .get(f.environment)
        .cloned()
        .unwrap_or_else(|| f.environment.to_string());
    let expires = f
        .expires
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "no expiry".into());
    let odata = if f.scopes.iter().any(|s| s.starts_with("odata:")) {
        "enabled"
    } else {
        "disabled"
    };
    let fill = |t: &str| {
        t.replace("{console}", &p.console)
            .replace("{name}", f.name)
            .replace("{environment_label}", &env_label)
            .replace("{scopes_console}", &scopes_console(p, &f.scopes))
            .replace("{expires}", &expires)
            .replace("{owner}", f.owner)
            .replace("{odata}", odata)
    };
    let mut out = Vec::new();
    if let Some(url) = &cfg.console_url {
        out.push(format!("Open {url}"));
    }
    out.extend(p.steps(kind).iter().map(|t| fill(t)));
    if kind == StepKind::Update && !p.is_editable("scopes") {
        out.push(format!(
            "Note: {} edits no key in place ({}); if it cannot, answer `skip` and rotate the key instead.",
            p.title, p.editable_source
        ));
    }
    out
}

/// Give each due key of a console store the steps an admin does there to renew it (a
/// rotation, as the checklist will show it): `keyward expiring` and the reminders show them.
pub fn add_renewal(
    spec: &crate::spec::Spec,
    items: &mut [crate::lifecycle::DueItem],
    now: DateTime<Utc>,
) {
    for i in items.iter_mut() {
        let Some(crate::spec::StoreKind::Console(c)) = spec.stores.get(&i.store).map(|s| &s.kind)
        else {
            continue;
        };
        let Some(d) = spec.key(&i.store, &i.name).filter(|_| i.managed) else {
            continue;
        };
        let p = super::preset::preset(
            super::preset::Vendor::parse(&c.vendor).unwrap_or(super::preset::Vendor::Generic),
        );
        let facts = StepFacts {
            name: &d.name,
            environment: &d.environment,
            owner: &d.owner,
            scopes: crate::diff::scope_strings(&d.scopes),
            expires: crate::diff::expires_at(&d.expiry, now),
        };
        i.console_steps = render(p, c, StepKind::Rotate, &facts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::preset::{Vendor, preset};

    fn cfg() -> ConsoleStoreConfig {
        ConsoleStoreConfig {
            vendor: "alma".into(),
            ledger: "/r/ledger/a.yaml".into(),
            ledger_rel: "ledger/a.yaml".into(),
            console_url: Some("https://developers.exlibrisgroup.com".into()),
            secret_pattern: None,
            max_keys_per_owner: None,
            max_lifetime: None,
        }
    }

    #[test]
    fn an_alma_create_names_the_page_the_areas_and_levels() {
        let f = StepFacts {
            name: "illiad-barcode-lookup",
            environment: "sandbox",
            owner: "jdoe",
            scopes: vec!["bibs:read".into(), "users:write".into()],
            expires: None,
        };
        let lines = render(preset(Vendor::Alma), &cfg(), StepKind::Create, &f);
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("Open https://developers.exlibrisgroup.com"),
            "{text}"
        );
        assert!(
            text.contains("named `illiad-barcode-lookup` for Alma premium sandbox"),
            "{text}"
        );
        assert!(
            text.contains("Bibliographic Records and Inventory (bibs, holdings, items): Read-only; Users and Fulfillment: Read-write"),
            "{text}"
        );
        assert!(!text.contains('{'), "every placeholder is filled: {text}");
    }

    #[test]
    fn every_vendor_fills_every_placeholder_of_every_step() {
        let f = StepFacts {
            name: "k",
            environment: "production",
            owner: "jdoe",
            scopes: vec!["odata:read".into()],
            expires: Some("2027-01-31T00:00:00Z".parse().expect("time")),
        };
        for v in Vendor::ALL {
            for k in [
                StepKind::Create,
                StepKind::Update,
                StepKind::Rotate,
                StepKind::Disable,
                StepKind::Revoke,
                StepKind::Delete,
            ] {
                let text = render(preset(v), &cfg(), k, &f).join("\n");
                assert!(
                    !text.contains('{') && !text.contains('}'),
                    "{v} {}: {text}",
                    k.as_str()
                );
            }
        }
        let alm = render(preset(Vendor::Alm), &cfg(), StepKind::Create, &f).join("\n");
        assert!(
            alm.contains("Expiration Time: 2027-01-31. Scope: OData enabled."),
            "{alm}"
        );
        let oa = scopes_console(preset(Vendor::OpenAthens), &["reports-api:read".into()]);
        assert_eq!(
            oa,
            "Reports API (only shown if enabled for your organisation)"
        );
    }
}
