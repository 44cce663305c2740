//! Console stores: vendor web consoles with no key API (Alma/Primo in the Ex Libris
//! Developer Network, OpenAthens, OpenText ALM, or a generic one). Their live state is a
//! committed ledger; apply turns changes into guided steps an admin does in the console.
//! Owns presets, the ledger, the ledger-backed store and the console rules; must not parse
//! keyward.yaml (spec does) nor decide changes (the diff does).

pub mod audit;
pub mod checklist;
pub mod import;
pub mod input;
pub mod ledger;
pub mod preset;
pub mod rules;
pub mod shape;
pub mod steps;
pub mod store;

pub use ledger::{LedgerError, LedgerFile, LedgerKey, PendingStep};
pub use preset::{Preset, StepKind, Vendor, preset};
pub use store::ConsoleStore;
