//! The spec: keyward.yaml, people.yaml and keys/**/*.yaml, parsed and validated into
//! `model::Spec`. Owns reading those files; must not talk to stores.

pub mod model;
pub use model::*;
