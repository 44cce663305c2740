//! keyward: API keys the GitOps way. Data flows one way:
//! spec -> policy -> observe (store) -> diff -> plan -> apply -> deliver.

pub mod diag;
pub mod recipient;
pub mod secret;
pub mod spec;
pub mod store;
