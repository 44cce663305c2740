//! JSON Schemas of the files a user edits (keyward.yaml, people.yaml, keys/*.yaml) and of
//! the JSON plan, generated from the Rust types (`spec::raw`, `plan::Plan`) for
//! `keyward schema` and the checked-in `schemas/`. Must not validate anything itself: the
//! schemas are for editors (yaml-language-server) and bots; keyward's own checks live in
//! `spec` and `policy`.

use std::path::{Path, PathBuf};

/// Where the published schemas live; each schema's `$id` is this plus its file name.
pub const BASE_ID: &str = "https://keyward.dev/schemas/";

/// The schemas keyward generates: (short name, file name).
pub const NAMES: &[(&str, &str)] = &[
    ("keyward", "keyward.schema.json"),
    ("people", "people.schema.json"),
    ("keys", "keys.schema.json"),
    ("plan", "plan.schema.json"),
    ("ledger", "ledger.schema.json"),
];

/// An unknown schema name.
#[derive(Debug, thiserror::Error)]
#[error("unknown schema `{0}` (known: keyward, people, keys, plan, ledger)")]
pub struct UnknownSchema(pub String);

/// Writing the schema files failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn with_id<T: schemars::JsonSchema>(file: &str, title: &str) -> serde_json::Value {
    let mut v = schemars::schema_for!(T).to_value();
    if let Some(o) = v.as_object_mut() {
        o.insert("$id".into(), format!("{BASE_ID}{file}").into());
        o.insert("title".into(), title.into());
    }
    v
}

/// The schema called `name` (`keyward`, `people`, `keys`, `plan`, or a file name such as
/// `keys.schema.json`).
pub fn get(name: &str) -> Result<serde_json::Value, UnknownSchema> {
    use crate::spec::raw;
    let short = NAMES
        .iter()
        .find(|(s, f)| *s == name || *f == name)
        .map(|(s, _)| *s)
        .ok_or_else(|| UnknownSchema(name.to_string()))?;
    Ok(match short {
        "keyward" => with_id::<raw::ConfigFile>("keyward.schema.json", "keyward.yaml"),
        "people" => with_id::<raw::PeopleFile>("people.schema.json", "people.yaml"),
        "keys" => with_id::<raw::KeyFile>("keys.schema.json", "keyward key file (keys/*.yaml)"),
        "ledger" => with_id::<crate::console::LedgerFile>(
            "ledger.schema.json",
            "keyward console ledger (ledger/<store>.yaml)",
        ),
        _ => crate::plan::json_schema(),
    })
}

/// A schema as the text of its file: pretty JSON and a final newline.
pub fn text(schema: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

/// Every schema: (file name, file text).
pub fn all() -> Vec<(&'static str, String)> {
    NAMES
        .iter()
        .filter_map(|(short, file)| get(short).ok().map(|v| (*file, text(&v))))
        .collect()
}

/// Write every schema into `dir` (created if missing). Returns the files whose content
/// changed (files already current are left untouched).
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|e| WriteError {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut changed = Vec::new();
    for (file, text) in all() {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            continue;
        }
        std::fs::write(&path, text).map_err(|e| WriteError {
            path: path.clone(),
            source: e,
        })?;
        changed.push(path);
    }
    Ok(changed)
}

/// The `# yaml-language-server: $schema=...` line for a spec file at `rel` (relative to the
/// repository root), pointing at `schemas/<file>` in the same repository.
pub fn modeline(rel: &Path, schema_file: &str) -> String {
    let depth = rel.components().count().saturating_sub(1);
    format!(
        "# yaml-language-server: $schema={}schemas/{schema_file}",
        "../".repeat(depth)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modeline_depth() {
        assert_eq!(
            modeline(Path::new("keyward.yaml"), "keyward.schema.json"),
            "# yaml-language-server: $schema=schemas/keyward.schema.json"
        );
        assert_eq!(
            modeline(Path::new("keys/team/a.yaml"), "keys.schema.json"),
            "# yaml-language-server: $schema=../../schemas/keys.schema.json"
        );
    }

    #[test]
    fn every_name_resolves_and_unknown_is_refused() {
        for (short, file) in NAMES {
            assert!(get(short).is_ok());
            assert_eq!(get(file).ok(), get(short).ok());
        }
        assert!(get("nope").is_err());
    }
}
