//! Small helpers more than one command uses: the message for an unknown store, the
//! warnings about store files other users can read, who answers a console's questions.
//! Must not hold command logic.

use keyward::console::input::{InputFile, Operator, Terminal};
use keyward::spec::{Spec, StoreConfig};
use keyward::store::Store;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

/// Who answers a console command (`audit`, `import --store`): the `--console-input` file
/// when given (refused when group or others can read it), else the admin at a terminal;
/// None without either.
pub fn console_operator(input: Option<&Path>) -> anyhow::Result<Option<Box<dyn Operator>>> {
    if let Some(path) = input {
        return Ok(Some(Box::new(InputFile::read(path)?)));
    }
    Ok(std::io::stdin()
        .is_terminal()
        .then(Terminal::open)
        .flatten()
        .map(|t| Box::new(t) as Box<dyn Operator>))
}

/// `store NAME is not in keyward.yaml`, listing the stores that are.
pub fn unknown_store(spec: &Spec, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "store `{name}` is not in keyward.yaml (stores: {})",
        spec.stores.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// The store `name` of keyward.yaml, or the `unknown_store` error.
pub fn store<'a>(spec: &'a Spec, name: &str) -> anyhow::Result<&'a StoreConfig> {
    spec.stores
        .get(name)
        .ok_or_else(|| unknown_store(spec, name))
}

/// `--store NAME` when given must name a store of keyward.yaml.
pub fn known_store(spec: &Spec, name: Option<&str>) -> anyhow::Result<()> {
    name.map_or(Ok(()), |n| store(spec, n).map(|_| ()))
}

/// Open the store `cfg` (warning about its files other users can read).
pub fn open(spec: &Spec, cfg: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    let opened = keyward::observe::open(cfg)?;
    warn_modes(spec, [&cfg.name]);
    Ok(opened)
}

/// Open the store `name` of keyward.yaml (`store`, then `open`).
pub fn open_store<'a>(
    spec: &'a Spec,
    name: &str,
) -> anyhow::Result<(&'a StoreConfig, Arc<dyn Store>)> {
    let cfg = store(spec, name)?;
    Ok((cfg, open(spec, cfg)?))
}

/// Print (stderr) a warning for each file of the opened stores `names` whose mode lets other
/// users read it.
pub fn warn_modes<'a>(spec: &Spec, names: impl IntoIterator<Item = &'a String>) {
    for n in names {
        if let Some(cfg) = spec.stores.get(n) {
            for w in keyward::observe::mode_warnings(cfg) {
                eprintln!("warning: store `{n}`: {w}");
            }
        }
    }
}
