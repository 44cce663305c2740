//! The ledger: a console store's live state as far as keyward knows it, a committed YAML
//! file (`ledger/<store>.yaml`) holding what admins confirmed, with secret fingerprints and
//! never a secret. Owns its model, reading it with file:line diagnostics, and writing it
//! atomically. Must not talk to anyone (the checklist does) nor decide changes (the diff).

use crate::diag::{self, Diagnostic, Diagnostics, Location, codes};
use crate::spec::pos::YPath;
use crate::spec::yaml;
use crate::store::KeyStatus;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const LEDGER_VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerFile {
    /// Format version (1).
    pub version: u32,
    /// The store in keyward.yaml this ledger belongs to.
    pub store: String,
    /// The console vendor (`alma`, `primo`, `openathens`, `alm`, `generic`).
    pub vendor: String,
    /// The last audit: who walked through the console's keys, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audited: Option<Confirmation>,
    /// The keys the console holds, as admins confirmed them.
    #[serde(default)]
    pub keys: Vec<LedgerKey>,
    /// Steps begun in the console and not finished here (resumed by the next apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingStep>,
}

/// One key in the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerKey {
    /// The key's name in the spec and in the console.
    pub name: String,
    /// keyward's id for the key (stable across rotations).
    pub id: String,
    /// The console's own id for the key, where it shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_id: Option<String>,
    /// The client id that comes with the secret (ALM); not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub environment: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `area:level`, sorted.
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub status: KeyStatus,
    pub created: DateTime<Utc>,
    /// When the current value was made (creation or last regeneration).
    pub issued: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// Delivery generation of the current value (1, then +1 per rotation).
    pub generation: u32,
    /// The spec's `rotation.generation` at the last create or rotation.
    pub spec_generation: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// Who holds the current value: principal id -> fingerprint of their public keys.
    #[serde(default)]
    pub recipients: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// `sha256:` + hex SHA-256 of the current value; absent for a key adopted without its
    /// value (`undelivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Adopted without its value: its recipients get a value at the next rotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undelivered: bool,
    /// The state keyward last left the key in; a different state is drift (an audit found it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_digest: Option<String>,
    /// Bumped on every change (optimistic concurrency, as any store).
    pub version: u64,
    /// Who confirmed each step in the console, and when.
    #[serde(default)]
    pub confirmed: Vec<Confirmation>,
}

/// An admin's confirmation of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// `create`, `update`, `rotate`, `disable`, `enable`, `revoke`, `delete`, `import`, `audit`.
    pub step: String,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A step the admin began in the console and that is not recorded yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingStep {
    pub key: String,
    /// keyward's id of the key the step makes or changes.
    pub id: String,
    /// `create` or `rotate`.
    pub step: String,
    pub generation: u32,
    /// The admin said the key was made (or regenerated) in the console.
    pub made: bool,
    /// The client id the console showed with it (ALM), once typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Reading or writing a ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file has problems; `rendered` shows them with file:line and carets.
    #[error("{count} problem(s) in the ledger {path}:\n{rendered}")]
    Invalid {
        path: PathBuf,
        count: usize,
        rendered: String,
        diagnostics: Diagnostics,
    },
    #[error("{what} the ledger {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the ledger: {0}")]
    Write(String),
}

impl LedgerFile {
    pub fn empty(store: &str, vendor: &str) -> LedgerFile {
        LedgerFile {
            version: LEDGER_VERSION,
            store: store.to_string(),
            vendor: vendor.to_string(),
            audited: None,
            keys: Vec::new(),
            pending: Vec::new(),
        }
    }
    pub fn key(&self, id: &str) -> Option<&LedgerKey> {
        self.keys.iter().find(|k| k.id == id)
    }
    pub fn key_mut(&mut self, id: &str) -> Option<&mut LedgerKey> {
        self.keys.iter_mut().find(|k| k.id == id)
    }
    /// The pending step for key `name`, if any.
    pub fn pending_for(&self, name: &str) -> Option<&PendingStep> {
        self.pending.iter().find(|p| p.key == name)
    }
}

/// Longest ledger accepted (as a spec file).
pub const MAX_LEDGER_BYTES: usize = yaml::MAX_FILE_BYTES;

const HEADER: &str = "# keyward ledger: the keys of a vendor console as admins confirmed them.\n\
# Written by `keyward apply`, `import` and `audit`; reviewed in pull requests. No secrets:\n\
# `fingerprint` is the SHA-256 of a value, never the value.\n";

/// Read the ledger at `path` (`rel` is how diagnostics name it). A missing file is an
/// empty ledger (nothing made in the console yet).
pub fn read(path: &Path, rel: &Path, store: &str, vendor: &str) -> Result<LedgerFile, LedgerError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LedgerFile::empty(store, vendor));
        }
        Err(e) => {
            return Err(LedgerError::Io {
                what: "reading",
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    parse(rel, &bytes, store, vendor)
}

/// Parse ledger text; every problem at once, with its place.
pub fn parse(
    rel: &Path,
    bytes: &[u8],
    store: &str,
    vendor: &str,
) -> Result<LedgerFile, LedgerError> {
    let mut diags = Diagnostics::default();
    let (text, doc) = yaml::parse(rel, bytes, &mut diags);
    let fail = |diags: Diagnostics, text: Option<String>| {
        let sources: diag::Sources = text
            .map(|t| {
                [(rel.to_path_buf(), masked(&t, &diags))]
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        LedgerError::Invalid {
            path: rel.to_path_buf(),
            count: diags.error_count(),
            rendered: diag::render(&diags, &sources, false),
            diagnostics: diags,
        }
    };
    let (Some(text), Some(doc)) = (text, doc) else {
        return Err(fail(diags, None));
    };
    let file: LedgerFile = match serde_yaml::from_value(doc.value.clone()) {
        Ok(f) => f,
        Err(e) => {
            let loc = e
                .location()
                .map(|l| Location::new(rel, l.line(), l.column()))
                .or_else(|| serde_location(&text, rel, &e.to_string()));
            diags.push(
                Diagnostic::error(codes::LEDGER_INVALID, format!("the ledger does not fit its format: {}", unquoted(&e.to_string())))
                    .at_opt(loc)
                    .hint("fix the entry by hand, or restore the ledger from git (`git checkout -- FILE`); schemas/ledger.schema.json describes it"),
            );
            return Err(fail(diags, Some(text)));
        }
    };
    check(&file, &doc, store, vendor, &mut diags);
    if diags.has_errors() {
        return Err(fail(diags, Some(text)));
    }
    Ok(file)
}

/// The text with the value of every line a diagnostic points at replaced: a hand-edited
/// ledger may hold a pasted secret, and rendering must not echo it.
fn masked(text: &str, diags: &Diagnostics) -> String {
    let lines: BTreeSet<usize> = diags
        .iter()
        .filter_map(|d| d.location.as_ref().map(|l| l.line))
        .collect();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if !lines.contains(&(i + 1)) {
                return l.to_string();
            }
            match l.split_once(':') {
                Some((k, v)) if !v.trim().is_empty() => format!("{k}: <value not shown>"),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A serde message without the quoted input it may repeat (`invalid type: string "..."`).
fn unquoted(message: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            inside = !inside;
            if inside {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// serde_yaml's `from_value` errors carry no position; find the field the message names.
fn serde_location(text: &str, rel: &Path, message: &str) -> Option<Location> {
    let field = message.split('`').nth(1)?;
    text.lines().enumerate().find_map(|(i, l)| {
        let t = l.trim_start().trim_start_matches("- ");
        t.starts_with(&format!("{field}:"))
            .then(|| Location::new(rel, i + 1, l.len() - l.trim_start().len() + 1))
    })
}

fn check(f: &LedgerFile, doc: &yaml::Doc, store: &str, vendor: &str, diags: &mut Diagnostics) {
    let at = |p: &YPath| doc.loc(p);
    if f.version != LEDGER_VERSION {
        diags.push(
            Diagnostic::error(
                codes::UNSUPPORTED_VERSION,
                format!("ledger version {} is not supported", f.version),
            )
            .at(at(&YPath::root().key("version")))
            .hint("this keyward writes `version: 1`"),
        );
    }
    for (field, have, want) in [("store", &f.store, store), ("vendor", &f.vendor, vendor)] {
        if have != want {
            diags.push(
                Diagnostic::error(
                    codes::LEDGER_MISMATCH,
                    format!(
                        "the ledger says `{field}: {have}`, but keyward.yaml has `{want}` here"
                    ),
                )
                .at(at(&YPath::root().key(field)))
                .hint("point the store's `ledger:` at its own file; one ledger per console store"),
            );
        }
    }
    // A name is in the console once per generation: while a replace is under way (the new
    // key made, the old one not yet removed) the old entry keeps its generation and the new
    // one has the next.
    let mut names: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for (i, k) in f.keys.iter().enumerate() {
        let p = YPath::root().key("keys").idx(i);
        if k.status != KeyStatus::Revoked
            && let Some(first) = names.insert((k.name.as_str(), k.generation), i)
        {
            diags.push(
                Diagnostic::error(
                    codes::LEDGER_DUPLICATE,
                    format!(
                        "key `{}` is in the ledger twice at generation {}",
                        k.name, k.generation
                    ),
                )
                .at(at(&p.key("name")))
                .related(
                    "first entry",
                    at(&YPath::root().key("keys").idx(first).key("name")),
                )
                .hint("keep one entry per console key"),
            );
        }
        if !ids.insert(k.id.as_str()) {
            diags.push(
                Diagnostic::error(
                    codes::LEDGER_DUPLICATE,
                    format!("id `{}` is in the ledger twice", k.id),
                )
                .at(at(&p.key("id")))
                .hint("every key has its own id"),
            );
        }
        check_key(k, &p, doc, diags);
    }
    for (i, s) in f.pending.iter().enumerate() {
        let p = YPath::root().key("pending").idx(i);
        if !matches!(s.step.as_str(), "create" | "rotate") {
            diags.push(
                Diagnostic::error(
                    codes::LEDGER_INVALID,
                    format!("a pending step is `create` or `rotate`, not `{}`", s.step),
                )
                .at(at(&p.key("step")))
                .hint("remove the entry; the next apply plans the step again"),
            );
        }
    }
}

fn check_key(k: &LedgerKey, p: &YPath, doc: &yaml::Doc, diags: &mut Diagnostics) {
    let at = |p: &YPath| doc.loc(p);
    if let Some(fp) = &k.fingerprint
        && !is_fingerprint(fp)
    {
        let shown = if fp.len() > 80 {
            "a long value"
        } else {
            "this value"
        };
        diags.push(
            Diagnostic::error(codes::LEDGER_INVALID, format!("`fingerprint` of `{}` is not `sha256:` and 64 hex digits ({shown} is not shown)", k.name))
                .at(at(&p.key("fingerprint")))
                .hint("a ledger holds fingerprints, never values; if a value was pasted here, rotate the key in the console and restore the ledger from git"),
        );
    }
    if k.fingerprint.is_none() && !k.undelivered {
        diags.push(
            Diagnostic::error(
                codes::LEDGER_INVALID,
                format!(
                    "`{}` has no `fingerprint` and is not marked `undelivered`",
                    k.name
                ),
            )
            .at(at(&p.key("name")))
            .hint("add `undelivered: true` (its recipients get a value at the next rotation)"),
        );
    }
    if k.generation == 0 {
        diags.push(
            Diagnostic::error(codes::LEDGER_INVALID, "`generation` starts at 1")
                .at(at(&p.key("generation")))
                .hint("write `generation: 1` for a key never rotated"),
        );
    }
    for (j, s) in k.scopes.iter().enumerate() {
        if crate::spec::Scope::parse(s).is_none() {
            diags.push(
                Diagnostic::error(codes::MALFORMED_SCOPE, format!("`{s}` is not a scope"))
                    .at(at(&p.key("scopes").idx(j)))
                    .hint("write scopes as `area:level`, e.g. `bibs:read`"),
            );
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The text keyward writes for `file` (`rel`: its path in the repo, for the schema line).
pub fn render(file: &LedgerFile, rel: &Path) -> Result<String, LedgerError> {
    let mut sorted = file.clone();
    sorted
        .keys
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    sorted.pending.sort_by(|a, b| a.key.cmp(&b.key));
    let body = serde_yaml::to_string(&sorted).map_err(|e| LedgerError::Write(e.to_string()))?;
    Ok(format!(
        "{}\n{HEADER}{body}",
        crate::schema::modeline(rel, "ledger.schema.json")
    ))
}

/// Write `file` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
/// A ledger that would not read back (it breaks a rule of `check`) is refused and the file
/// left as it was: keyward never writes a ledger it cannot read.
pub fn write(path: &Path, rel: &Path, file: &LedgerFile) -> Result<(), LedgerError> {
    let text = render(file, rel)?;
    parse(rel, text.as_bytes(), &file.store, &file.vendor)?;
    crate::deliver::write_committed_file(path, text.as_bytes())
        .map_err(|e| LedgerError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, id: &str) -> LedgerKey {
        let at = "2026-11-01T00:00:00Z".parse().expect("time");
        LedgerKey {
            name: name.into(),
            id: id.into(),
            console_id: None,
            client_id: None,
            environment: "production".into(),
            owner: "jdoe".into(),
            purpose: Some("ILLiad".into()),
            scopes: vec!["bibs:read".into()],
            labels: BTreeMap::new(),
            status: KeyStatus::Active,
            created: at,
            issued: at,
            updated: at,
            expires: None,
            lifetime: None,
            generation: 1,
            spec_generation: 1,
            previous_valid_until: None,
            recipients: BTreeMap::new(),
            protected: false,
            fingerprint: Some(format!("sha256:{}", "ab".repeat(32))),
            undelivered: false,
            applied_digest: None,
            version: 1,
            confirmed: vec![],
        }
    }

    #[test]
    fn a_written_ledger_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("tmp");
        let rel = Path::new("ledger/alma.yaml");
        let path = dir.path().join(rel);
        let mut f = LedgerFile::empty("alma", "alma");
        f.keys.push(key("b", "id2"));
        f.keys.push(key("a", "id1"));
        write(&path, rel, &f).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/ledger.schema.json\n")
        );
        let back = read(&path, rel, "alma", "alma").expect("parse");
        assert_eq!(
            back.keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(back.keys[0], f.keys[1]);
        assert_eq!(
            read(&dir.path().join("none.yaml"), rel, "alma", "alma")
                .expect("empty")
                .keys,
            vec![]
        );
    }

    #[test]
    fn a_hand_edited_ledger_gets_every_problem_with_its_line() {
        let rel = Path::new("ledger/alma.yaml");
        let mut f = LedgerFile::empty("alma", "alma");
        f.keys.push(key("a", "id1"));
        f.keys.push(key("a", "id2"));
        let mut text = render(&f, rel).expect("render");
        text = text.replacen(&format!("sha256:{}", "ab".repeat(32)), "l7xx0123", 1);
        text = text.replace("vendor: alma", "vendor: primo");
        let e = parse(rel, text.as_bytes(), "alma", "alma").expect_err("broken");
        let LedgerError::Invalid {
            diagnostics,
            rendered,
            ..
        } = &e
        else {
            panic!("{e}");
        };
        let codes: Vec<&str> = diagnostics.iter().map(|d| d.code).collect();
        assert!(codes.contains(&codes::LEDGER_MISMATCH), "{rendered}");
        assert!(codes.contains(&codes::LEDGER_DUPLICATE), "{rendered}");
        assert!(codes.contains(&codes::LEDGER_INVALID), "{rendered}");
        let line_of =
            |needle: &str| text.lines().position(|l| l.contains(needle)).expect("line") + 1;
        assert!(
            rendered.contains(&format!("ledger/alma.yaml:{}:", line_of("vendor: primo"))),
            "{rendered}"
        );
        assert!(
            rendered.contains(&format!("ledger/alma.yaml:{}:", line_of("l7xx0123"))),
            "{rendered}"
        );
        assert!(
            !rendered.contains("l7xx0123"),
            "a pasted value is not echoed: {rendered}"
        );
    }

    #[test]
    fn a_replace_under_way_holds_the_name_twice_and_a_broken_ledger_is_never_written() {
        let rel = Path::new("ledger/alma.yaml");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alma.yaml");
        let mut f = LedgerFile::empty("alma", "alma");
        f.keys.push(key("a", "id1"));
        let mut new = key("a", "id2");
        new.generation = 2;
        f.keys.push(new);
        write(&path, rel, &f).expect("the old key and the one replacing it");
        let written = std::fs::read(&path).expect("written");
        assert_eq!(parse(rel, &written, "alma", "alma").expect("reads back"), {
            let mut sorted = f.clone();
            sorted.keys.sort_by(|a, b| a.id.cmp(&b.id));
            sorted
        });
        f.keys.push(key("a", "id3"));
        let e = write(&path, rel, &f).expect_err("twice at generation 1");
        assert!(
            e.to_string()
                .contains("key `a` is in the ledger twice at generation 1"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&path).expect("kept"),
            written,
            "left as it was"
        );
    }

    #[test]
    fn a_wrong_type_points_at_its_line() {
        let rel = Path::new("ledger/alma.yaml");
        let text = "version: 1\nstore: alma\nvendor: alma\nkeys:\n  - name: a\n    id: x\n    generation: many\n";
        let e = parse(rel, text.as_bytes(), "alma", "alma").expect_err("broken");
        assert!(e.to_string().contains("ledger/alma.yaml:"), "{e}");
        let e = parse(rel, b"version: 1\nstore: [\n", "alma", "alma").expect_err("syntax");
        assert!(e.to_string().contains("KW005"), "{e}");
    }
}
