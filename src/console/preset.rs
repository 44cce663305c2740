//! Vendor presets: what each key console offers (scopes, editable fields, lifetime and
//! per-owner limits, the shape of a secret, client ids, the wording of each step), kept as
//! data in `presets/*.yaml` and parsed into typed values here.
//! Must not do I/O beyond the embedded files, nor know about ledgers or apply.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A console vendor (`vendor:` of a `kind: console` store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Vendor {
    Alma,
    Primo,
    OpenAthens,
    Alm,
    Generic,
}

impl Vendor {
    pub const ALL: [Vendor; 5] = [
        Vendor::Alma,
        Vendor::Primo,
        Vendor::OpenAthens,
        Vendor::Alm,
        Vendor::Generic,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Alma => "alma",
            Vendor::Primo => "primo",
            Vendor::OpenAthens => "openathens",
            Vendor::Alm => "alm",
            Vendor::Generic => "generic",
        }
    }
    pub fn parse(s: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.as_str() == s)
    }
    fn source(self) -> &'static str {
        match self {
            Vendor::Alma => include_str!("presets/alma.yaml"),
            Vendor::Primo => include_str!("presets/primo.yaml"),
            Vendor::OpenAthens => include_str!("presets/openathens.yaml"),
            Vendor::Alm => include_str!("presets/alm.yaml"),
            Vendor::Generic => include_str!("presets/generic.yaml"),
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many scopes a key takes in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// Exactly one (radio buttons: OpenAthens' permission level).
    One,
    /// Any set of areas, each at one level.
    Any,
}

/// Who sets a key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryRule {
    /// The console knows no expiry.
    None,
    /// The console always sets one itself (a key must not be `never`).
    SetByConsole,
    /// The admin types one (or none, where allowed).
    SetByAdmin,
}

/// How a rotation is done in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotateMode {
    /// Make a new key, paste it, remove the old one.
    ReplaceInConsole,
    /// Revoke, then regenerate (a new secret, the same client id); the old value stops at once.
    RevokeThenRegenerate,
}

/// The step kinds of a checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    Create,
    Update,
    Rotate,
    Disable,
    Revoke,
    Delete,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Create => "create",
            StepKind::Update => "update",
            StepKind::Rotate => "rotate",
            StepKind::Disable => "disable",
            StepKind::Revoke => "revoke",
            StepKind::Delete => "delete",
        }
    }
    /// Whether the step ends with a value pasted from the console (else a confirmation).
    pub fn takes_secret(self) -> bool {
        matches!(self, StepKind::Create | StepKind::Rotate)
    }
}

/// The shape a pasted secret must have.
#[derive(Debug, Clone)]
pub enum SecretRule {
    /// A whole-value regular expression from the preset.
    Pattern(regex::Regex),
    /// The store's `secret_pattern` (vendor `generic`).
    FromStore,
    /// The documents give no shape: one line of visible characters.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerOwner {
    /// The console's setting that bounds it (ALM: APIKEY_MAX_NUM_PER_USER).
    pub param: String,
    pub default: usize,
}

/// One vendor's preset, validated.
#[derive(Debug, Clone)]
pub struct Preset {
    pub vendor: Vendor,
    pub title: String,
    /// How steps name the console ("the Ex Libris Developer Network").
    pub console: String,
    pub sources: Vec<String>,
    /// Environment -> how the console calls it; empty: any environment.
    pub environments: BTreeMap<String, String>,
    pub pick: Pick,
    /// Area id -> console label, in console order; empty: any area of the catalogue.
    pub areas: Vec<(String, String)>,
    /// Level id -> console label, lowest first.
    pub levels: Vec<(String, String)>,
    /// The exact `area:level` choices, where not every area takes every level.
    pub offered: Option<Vec<String>>,
    /// Console-side fields changeable in place (`scopes`); keyward-only metadata (purpose,
    /// labels, recipients, protection) never needs a console step.
    pub editable: Vec<String>,
    pub editable_source: String,
    pub expiry: ExpiryRule,
    /// The console setting bounding the lifetime (ALM: APIKEY_EXPIRE_DAYS), if any.
    pub max_lifetime_param: Option<String>,
    /// The console mails its own reminders from this long before expiry (OpenAthens: 30d).
    pub console_reminders_from: Option<crate::spec::Span>,
    pub per_owner: Option<PerOwner>,
    pub secret: SecretRule,
    pub secret_example: String,
    pub client_id: bool,
    pub rotate: RotateMode,
    /// Why the old value stops working at once when the key is rotated or replaced (the
    /// checklist removes it in the console right after the new value is delivered), in
    /// words the plan shows after "the old value stops working at once: ".
    pub old_value: String,
    steps: BTreeMap<StepKind, Vec<String>>,
}

impl Preset {
    /// The step templates of `kind` (placeholders in braces, see `steps.rs`).
    pub fn steps(&self, kind: StepKind) -> &[String] {
        self.steps.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn area_label(&self, area: &str) -> Option<&str> {
        self.areas
            .iter()
            .find(|(a, _)| a == area)
            .map(|(_, l)| l.as_str())
    }
    pub fn level_label(&self, level: &str) -> Option<&str> {
        self.levels
            .iter()
            .find(|(a, _)| a == level)
            .map(|(_, l)| l.as_str())
    }
    /// Why enabling a disabled key makes a new secret in this console (ALM: a disable is
    /// Revoke Key, and only Regenerate Key makes a revoked key work again), so the plan
    /// rotates it; None where a key is enabled as it was.
    pub fn enable_regenerates(&self) -> Option<String> {
        (self.rotate == RotateMode::RevokeThenRegenerate).then(|| {
            format!(
                "{} enables a revoked key only by regenerating it: a new secret",
                self.title
            )
        })
    }
    pub fn is_editable(&self, field: &str) -> bool {
        self.editable.iter().any(|f| f == field)
    }
    /// Why a change of key field `field` (one of [`CONSOLE_FIELDS`]) cannot be made in
    /// place in this console, so the plan replaces the key instead: None when the preset
    /// lists it `editable:`, or when the field is keyward's own (purpose, labels, ...).
    pub fn replaces_for(&self, field: &str) -> Option<String> {
        let (_, what) = CONSOLE_FIELDS.iter().find(|(f, _)| *f == field)?;
        if self.is_editable(field) {
            return None;
        }
        Some(format!(
            "{} cannot change the {what} of a key in place: replace ({})",
            self.title, self.editable_source
        ))
    }
}

/// The key fields keyward compares that the console holds, with how a step names them; a
/// preset's `editable:` lists those its console changes in place. A change of any other
/// one forces a replace.
pub const CONSOLE_FIELDS: [(&str, &str); 2] = [("scopes", "scopes"), ("expires", "expiry")];

#[derive(Debug, thiserror::Error)]
#[error("the {vendor} preset (src/console/presets/{vendor}.yaml) is broken: {message}")]
pub struct PresetError {
    pub vendor: &'static str,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    vendor: String,
    title: String,
    console: String,
    sources: Vec<String>,
    environments: serde_yaml::Mapping,
    scopes: RawScopes,
    editable: Vec<String>,
    editable_source: String,
    lifetime: RawLifetime,
    per_owner: Option<RawPerOwner>,
    secret: RawSecret,
    client_id: bool,
    rotate: RotateMode,
    old_value: String,
    steps: RawSteps,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopes {
    pick: Pick,
    areas: serde_yaml::Mapping,
    levels: serde_yaml::Mapping,
    #[serde(default)]
    offered: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifetime {
    expiry: ExpiryRule,
    max_param: Option<String>,
    reminders_from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerOwner {
    param: String,
    default: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    pattern: Option<String>,
    example: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteps {
    create: Vec<String>,
    update: Vec<String>,
    rotate: Vec<String>,
    disable: Vec<String>,
    revoke: Vec<String>,
    delete: Vec<String>,
}

fn pairs(m: &serde_yaml::Mapping, what: &str) -> Result<Vec<(String, String)>, String> {
    m.iter()
        .map(|(k, v)| match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{what}: every entry is `id: label`")),
        })
        .collect()
}

/// Parse one preset's YAML text.
pub fn parse(vendor: Vendor, text: &str) -> Result<Preset, PresetError> {
    let err = |message: String| PresetError {
        vendor: vendor.as_str(),
        message,
    };
    let raw: RawPreset = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
    if raw.vendor != vendor.as_str() {
        return Err(err(format!("it says `vendor: {}`", raw.vendor)));
    }
    let secret = match raw.secret.pattern.as_deref() {
        None => SecretRule::Any,
        Some("from-store") => SecretRule::FromStore,
        Some(p) => SecretRule::Pattern(
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| err(e.to_string()))?,
        ),
    };
    let console_reminders_from = match &raw.lifetime.reminders_from {
        None => None,
        Some(r) => Some(
            crate::spec::Span::parse(r)
                .ok_or_else(|| err(format!("lifetime.reminders_from `{r}` is not a duration")))?,
        ),
    };
    let RawSteps {
        create,
        update,
        rotate,
        disable,
        revoke,
        delete,
    } = raw.steps;
    let steps: BTreeMap<StepKind, Vec<String>> = [
        (StepKind::Create, create),
        (StepKind::Update, update),
        (StepKind::Rotate, rotate),
        (StepKind::Disable, disable),
        (StepKind::Revoke, revoke),
        (StepKind::Delete, delete),
    ]
    .into_iter()
    .collect();
    if let Some((k, _)) = steps.iter().find(|(_, v)| v.is_empty()) {
        return Err(err(format!("steps.{} is empty", k.as_str())));
    }
    if let Some(f) = raw
        .editable
        .iter()
        .find(|f| !CONSOLE_FIELDS.iter().any(|(c, _)| c == f))
    {
        let known: Vec<&str> = CONSOLE_FIELDS.iter().map(|(c, _)| *c).collect();
        return Err(err(format!(
            "editable: `{f}` is not a console field (one of: {})",
            known.join(", ")
        )));
    }
    let environments = pairs(&raw.environments, "environments")
        .map_err(err)?
        .into_iter()
        .collect();
    Ok(Preset {
        vendor,
        title: raw.title,
        console: raw.console,
        sources: raw.sources,
        environments,
        pick: raw.scopes.pick,
        areas: pairs(&raw.scopes.areas, "scopes.areas").map_err(err)?,
        levels: pairs(&raw.scopes.levels, "scopes.levels").map_err(err)?,
        offered: raw.scopes.offered,
        editable: raw.editable,
        editable_source: raw.editable_source,
        expiry: raw.lifetime.expiry,
        max_lifetime_param: raw.lifetime.max_param,
        console_reminders_from,
        per_owner: raw.per_owner.map(|p| PerOwner {
            param: p.param,
            default: p.default,
        }),
        secret,
        secret_example: raw.secret.example,
        client_id: raw.client_id,
        rotate: raw.rotate,
        old_value: raw.old_value,
        steps,
    })
}

/// The preset of `vendor` (the embedded data, parsed once; a unit test proves each parses).
pub fn preset(vendor: Vendor) -> &'static Preset {
    static ALL: OnceLock<BTreeMap<Vendor, Preset>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        Vendor::ALL
            .into_iter()
            .map(|v| match parse(v, v.source()) {
                Ok(p) => (v, p),
                Err(e) => panic!("{e}"),
            })
            .collect()
    });
    &all[&vendor]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_names_its_vendor() {
        for v in Vendor::ALL {
            let p = parse(v, v.source()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.vendor, v);
            assert!(!p.sources.is_empty(), "{v}: facts name their source");
            for k in [
                StepKind::Create,
                StepKind::Update,
                StepKind::Rotate,
                StepKind::Disable,
                StepKind::Revoke,
                StepKind::Delete,
            ] {
                assert!(!p.steps(k).is_empty(), "{v}: {} has steps", k.as_str());
            }
        }
        assert_eq!(
            Vendor::ALL.map(Vendor::as_str),
            crate::spec::CONSOLE_VENDORS,
            "the spec knows every vendor with a preset"
        );
    }

    #[test]
    fn vendor_facts_from_the_documents() {
        let alma = preset(Vendor::Alma);
        assert_eq!(alma.areas.len(), 9);
        assert_eq!(alma.level_label("write"), Some("Read-write"));
        let SecretRule::Pattern(re) = &alma.secret else {
            panic!("alma has a secret pattern");
        };
        assert!(re.is_match(&format!("l7xx{}", "0123456789abcdef".repeat(2))));
        assert!(!re.is_match(&format!("l7xx{}", "0123456789ABCDEF".repeat(2))));
        assert!(!re.is_match(&format!("l7xx{}0", "0123456789abcdef".repeat(2))));
        let oa = preset(Vendor::OpenAthens);
        assert_eq!(oa.pick, Pick::One);
        assert_eq!(oa.expiry, ExpiryRule::SetByConsole);
        assert_eq!(oa.areas.len(), 3);
        let alm = preset(Vendor::Alm);
        assert!(alm.client_id);
        assert_eq!(alm.per_owner.as_ref().map(|p| p.default), Some(10));
        assert_eq!(alm.rotate, RotateMode::RevokeThenRegenerate);
        let without: Vec<&str> = Vendor::ALL
            .into_iter()
            .filter(|v| preset(*v).expiry == ExpiryRule::None)
            .map(Vendor::as_str)
            .collect();
        assert_eq!(without, crate::spec::CONSOLE_VENDORS_WITHOUT_EXPIRY);
        assert!(
            Vendor::ALL.iter().all(|v| !preset(*v).old_value.is_empty()),
            "every preset says why the old value stops at once"
        );
        assert!(matches!(
            preset(Vendor::Generic).secret,
            SecretRule::FromStore
        ));
    }

    #[test]
    fn what_a_console_cannot_change_in_place_forces_a_replace() {
        let oa = preset(Vendor::OpenAthens);
        assert_eq!(
            oa.replaces_for("scopes"),
            None,
            "a permission level is edited"
        );
        let why = oa
            .replaces_for("expires")
            .expect("OpenAthens fixes the expiry");
        assert!(
            why.starts_with(
                "OpenAthens admin console cannot change the expiry of a key in place: replace"
            ),
            "{why}"
        );
        let alm = preset(Vendor::Alm);
        assert!(alm.replaces_for("scopes").is_some() && alm.replaces_for("expires").is_some());
        assert_eq!(alm.replaces_for("purpose"), None, "keyward's own field");
        let text = Vendor::Alma
            .source()
            .replace("editable: [scopes]", "editable: [scopes, name]");
        let e = parse(Vendor::Alma, &text).expect_err("unknown editable field");
        assert!(
            e.to_string().contains("`name` is not a console field"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_preset_is_an_error_naming_the_vendor() {
        let e = parse(Vendor::Alma, "vendor: alma\n").expect_err("incomplete");
        assert!(e.to_string().contains("presets/alma.yaml"), "{e}");
        let text = Vendor::Primo
            .source()
            .replace("vendor: primo", "vendor: alma");
        let e = parse(Vendor::Primo, &text).expect_err("wrong vendor");
        assert!(e.to_string().contains("vendor: alma"), "{e}");
    }
}
