//! Small helpers more than one command uses: the message for an unknown store, the
//! warnings about store files other users can read. Must not hold command logic.

use keyward::spec::Spec;

/// `store NAME is not in keyward.yaml`, listing the stores that are.
pub fn unknown_store(spec: &Spec, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "store `{name}` is not in keyward.yaml (stores: {})",
        spec.stores.keys().cloned().collect::<Vec<_>>().join(", ")
    )
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
