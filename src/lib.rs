//! keyward: API keys the GitOps way. Data flows one way:
//! spec -> policy -> observe (store) -> diff -> plan -> apply -> deliver.

pub mod apply;
pub mod clock;
pub mod console;
pub mod deliver;
pub mod diag;
pub mod diff;
pub mod expiry_report;
pub mod flow;
pub mod git;
pub mod guard;
pub mod holder;
pub mod import;
pub mod leak;
pub mod lease;
pub mod lifecycle;
pub mod model;
pub mod net;
pub mod notify;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod private;
pub mod recipient;
pub mod report;
pub mod request;
pub mod schema;
pub mod secret;
pub mod server;
pub mod spec;
pub mod store;
pub mod unused;
pub mod usage_report;
