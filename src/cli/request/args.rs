//! The arguments of `keyward request` (clap) and its help epilogue. Data only.

use clap::Args;
use std::path::PathBuf;

pub const AFTER_HELP: &str = "\
On a terminal, keyward asks for every value not given as a flag (stores, areas and people
are listed; a forbidden scope is refused at once with the policy's reason). Without a
terminal it never asks: a missing value is an error naming its flag.

Before writing, the new file is checked against the keys JSON Schema and, together with
the rest of the repository, by the same checks as `keyward validate` (exit 1 for an
invalid spec, 3 for a policy violation; nothing is written). An existing file or key is
never overwritten. The pull request description is printed on stdout.

Examples:
  keyward request                                   # asks, on a terminal
  keyward request --name illiad-lookup --purpose 'ILLiad barcode lookup' \\
      --env production --env sandbox --owner jdoe --scope bibs:read --scope users:read \\
      --lifetime 180d --recipient team:ill-staff --ticket LSIS-1234
  keyward request --name reports --store alma-sandbox --owner rkumar --scope analytics \\
      --expires 2027-06-30 --output keys/reports/sandbox.yaml > pr.md";

#[derive(Debug, Args, Default, Clone)]
pub struct RequestArgs {
    /// The key's name, usually the application's: lowercase letters, digits and `-`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// What the key is for, for whom (shown to reviewers).
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// A store from keyward.yaml. Repeatable: one key per store.
    #[arg(long = "store", value_name = "STORE")]
    pub stores: Vec<String>,
    /// Every store of an environment (e.g. production, sandbox). Repeatable.
    #[arg(long = "env", value_name = "ENV")]
    pub envs: Vec<String>,
    /// The person in people.yaml who owns the key (their `may_grant` bounds it).
    #[arg(long, value_name = "PERSON")]
    pub owner: Option<String>,
    /// `area:level` (an area alone is read), e.g. `bibs:read`. Repeatable.
    #[arg(long = "scope", value_name = "AREA:LEVEL")]
    pub scopes: Vec<String>,
    /// Expiry date, YYYY-MM-DD (end of that day, UTC), or `never`.
    #[arg(long, value_name = "DATE", conflicts_with = "lifetime")]
    pub expires: Option<String>,
    /// Lifetime from creation and each rotation, e.g. 180d (default: the policy's).
    #[arg(long, value_name = "SPAN")]
    pub lifetime: Option<String>,
    /// Who else receives the secret: a person, a service or `team:NAME`. Repeatable.
    #[arg(long = "recipient", value_name = "ID")]
    pub recipients: Vec<String>,
    /// The ticket that asked for the key (label `ticket`).
    #[arg(long, value_name = "TICKET")]
    pub ticket: Option<String>,
    /// The key file to write, under keys/ (default keys/NAME.yaml; must not exist).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Never ask, even on a terminal: a missing value is an error.
    #[arg(long)]
    pub no_input: bool,
}
