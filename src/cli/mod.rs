//! The command line (part of the binary; the library never sees clap): the clap tree with
//! the global options, and the dispatch of each command to its file in `cli/`, which reads
//! its arguments into plain options and calls the library. Turns outcomes into exit codes.
//! Secrets reach stdout only through `decrypt`/`secret` with `--reveal` or a pipe.

mod apply;
mod audit;
mod common;
mod expiring;
mod import;
mod keys;
mod plan;
mod repo;
mod report;
mod request;
mod secret;
mod serve;
mod store;
mod token;
mod unlock;
mod usage;
mod verify;

use anyhow::{Context as _, Result};
use clap::{CommandFactory, Parser, Subcommand};
use keyward::flow::Colors;
use keyward::outcome::Outcome;
use std::io::IsTerminal;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Exit codes:
  0  success (with --detailed-exitcode: no changes)
  1  error, including an invalid spec, a corrupt plan file or one from another repository
  2  changes present (plan --detailed-exitcode)
  3  refused by a guard: a stale saved plan, a safety threshold (keyward.yaml `guards:`,
     override with --force), the store lock held by another apply, a policy violation,
     uncommitted spec files or deliveries (override with --allow-dirty)

Examples:
  keyward -C examples/library plan
  keyward -C examples/library apply --auto-approve
  keyward secret illiad-barcode-lookup --store alma-production -i ~/.config/keyward/identities.txt --reveal
  keyward keys --store alma-production --expiring-before 2027-01-01
  keyward request                       # ask for a new key (a key file for a pull request)";

#[derive(Debug, Parser)]
#[command(name = "keyward", version, about = "API keys the GitOps way: YAML in git -> plan -> apply -> age-encrypted delivery", after_help = AFTER_HELP)]
pub struct Cli {
    /// Run as if started in DIR (the key repository).
    #[arg(
        short = 'C',
        long = "dir",
        global = true,
        default_value = ".",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
    /// Never colour output (NO_COLOR is honoured too).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a new key repository (keyward.yaml, people.yaml, keys/, schemas/, .gitignore).
    #[command(after_help = repo::INIT_AFTER_HELP)]
    Init(repo::InitArgs),
    /// Check the spec and print every problem at once (exit 1 when there are errors).
    #[command(after_help = repo::VALIDATE_AFTER_HELP)]
    Validate(repo::ValidateArgs),
    /// Show what apply would change in the live stores.
    #[command(after_help = plan::AFTER_HELP)]
    Plan(plan::PlanArgs),
    /// Plan, confirm, then create/update/rotate/revoke keys and deliver new secrets.
    #[command(after_help = apply::AFTER_HELP)]
    Apply(apply::ApplyArgs),
    /// List the keys the stores hold (no secrets, no hashes).
    #[command(after_help = keys::AFTER_HELP)]
    Keys(keys::KeysArgs),
    /// Verify calls per key, owner or store and per day, top users first (what
    /// `keyward serve` counted).
    #[command(after_help = usage::AFTER_HELP)]
    Usage(usage::UsageArgs),
    /// Ask a store whether it accepts a secret (read from stdin when not given).
    #[command(after_help = verify::AFTER_HELP)]
    Verify(verify::VerifyArgs),
    /// Create a new age identity (mode 0600) and print its public recipient.
    #[command(after_help = secret::KEYGEN_AFTER_HELP)]
    Keygen(secret::KeygenArgs),
    /// Decrypt one delivered envelope.
    #[command(after_help = secret::DECRYPT_AFTER_HELP)]
    Decrypt(secret::DecryptArgs),
    /// Decrypt the newest delivery of a key by name.
    #[command(after_help = secret::SECRET_AFTER_HELP)]
    Secret(secret::SecretArgs),
    /// Release an apply lock left behind by an apply that died on another machine.
    #[command(after_help = unlock::AFTER_HELP)]
    ForceUnlock(unlock::ForceUnlockArgs),
    /// Keys that expire, are due for rotation or go unused soon, by owner, with what to do
    /// (exit 2 when something is due).
    #[command(after_help = expiring::AFTER_HELP)]
    Expiring(expiring::ExpiringArgs),
    /// Walk through a console store's ledger keys in the console and record what is there.
    #[command(after_help = audit::AFTER_HELP)]
    Audit(audit::AuditArgs),
    /// Run the key store as an HTTP service (the /v1 store protocol).
    #[command(after_help = serve::AFTER_HELP)]
    Serve(serve::ServeCliArgs),
    /// Manage the bearer tokens `keyward serve` accepts.
    #[command(subcommand)]
    Token(token::TokenArgs),
    /// Work with a store of keyward.yaml (`store check STORE`: the conformance kit).
    #[command(subcommand)]
    Store(store::StoreArgs),
    /// Print a JSON Schema (keyward, people, keys, plan), or write them all with --write.
    #[command(after_help = repo::SCHEMA_AFTER_HELP)]
    Schema(repo::SchemaArgs),
    /// Adopt keys made in a console: write YAML for the store's unmanaged keys, then mark
    /// them managed, so the next plan is empty. Secrets are never touched.
    #[command(after_help = import::AFTER_HELP)]
    Import(import::ImportArgs),
    /// Ask for a new API key: write a checked key file under keys/ for a pull request, and
    /// print its description (interactive on a terminal, or all by flags).
    #[command(after_help = request::AFTER_HELP)]
    Request(request::RequestArgs),
    /// Write the web view as a static site: overview, keys table with filters, a page per
    /// key and per person/team/service, the expiry timeline (no secrets, hashes or keys).
    #[command(after_help = report::AFTER_HELP)]
    Report(report::ReportArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

/// Whether to colour: not for NO_COLOR, --no-color, or a non-terminal.
fn use_color(cli_no_color: bool, stream_is_tty: bool) -> bool {
    !cli_no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream_is_tty
}

/// Run the CLI; returns its outcome (a policy refusal is one: exit 3).
pub fn run(cli: Cli) -> Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(dispatch(cli)) {
        Err(e) if e.downcast_ref::<keyward::policy::Refused>().is_some() => {
            if let Some(r) = e.downcast_ref::<keyward::policy::Refused>() {
                eprint!("{}", r.rendered);
                eprintln!("\n{r}");
            }
            Ok(Outcome::Refused)
        }
        other => other,
    }
}

async fn dispatch(cli: Cli) -> Result<Outcome> {
    let colors = Colors {
        out: use_color(cli.no_color, std::io::stdout().is_terminal()),
        err: use_color(cli.no_color, std::io::stderr().is_terminal()),
    };
    let dir = cli.dir.as_path();
    match &cli.command {
        Command::Init(args) => repo::init(dir, args),
        Command::Validate(args) => repo::validate(dir, args, colors.out),
        Command::Plan(args) => plan::run(dir, args, colors).await,
        Command::Apply(args) => apply::run(dir, args, colors).await,
        Command::Keys(args) => keys::run(dir, args, colors.out).await,
        Command::Usage(args) => usage::run(dir, args, colors.out).await,
        Command::Verify(args) => verify::run(dir, args).await,
        Command::Keygen(args) => secret::keygen(args),
        Command::Serve(args) => serve::run(dir, args).await,
        Command::Token(args) => token::run(dir, args),
        Command::Decrypt(args) => secret::decrypt(args),
        Command::Secret(args) => secret::secret(dir, args, colors.err),
        Command::ForceUnlock(args) => unlock::run(dir, args, colors.err).await,
        Command::Expiring(args) => expiring::run(dir, args, colors.err).await,
        Command::Audit(args) => audit::run(dir, args, colors.err).await,
        Command::Schema(args) => repo::schema(dir, args),
        Command::Import(args) => import::run(dir, args, colors.err).await,
        Command::Store(args) => store::run(dir, args, colors.err).await,
        Command::Request(args) => request::run(dir, args, colors.err),
        Command::Report(args) => report::run(dir, args, colors.err).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            Ok(Outcome::Ok)
        }
    }
}
