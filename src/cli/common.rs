//! Small helpers more than one command uses: the message for an unknown store. Must not
//! hold command logic.

use keyward::spec::Spec;

/// `store NAME is not in keyward.yaml`, listing the stores that are.
pub fn unknown_store(spec: &Spec, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "store `{name}` is not in keyward.yaml (stores: {})",
        spec.stores.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}
