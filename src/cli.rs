//! The command line: argument parsing (clap), wiring the data flow for each command, and
//! turning outcomes into output and exit codes. Secrets reach stdout only through
//! `decrypt`/`secret` with `--reveal` or a pipe; nothing else here ever handles one.

use crate::clock::{Clock, SystemClock};
use crate::deliver::{self, IdentitySources, Outbox, OutputFormat};
use crate::diag;
use crate::flow::{ApplyRunOptions, Colors, PlanFormat as FlowFormat, PlanOptions, load_or_report};
use crate::observe;
use crate::spec::{self, Loaded};
use crate::store::{KeyStatus, ListFilter, LiveKey, list_all};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Exit codes (Terraform-like): `Outcome::code()`.
pub mod exit {
    use crate::outcome::Outcome;
    pub const OK: i32 = Outcome::Ok.code();
    pub const ERROR: i32 = Outcome::Error.code();
    pub const CHANGES: i32 = Outcome::Changes.code();
    pub const REFUSED: i32 = Outcome::Refused.code();
}

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
    #[command(
        after_help = "Example:\n  keyward init my-keys && cd my-keys && keyward keygen -o me.txt"
    )]
    Init {
        /// Directory to create (default: the -C directory).
        dir: Option<PathBuf>,
    },
    /// Check the spec and print every problem at once (exit 1 when there are errors).
    #[command(
        after_help = "Example:\n  keyward -C examples/library validate\n  keyward validate --format json"
    )]
    Validate {
        #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
        format: DiagFormat,
    },
    /// Show what apply would change in the live stores.
    #[command(
        after_help = "Examples:\n  keyward plan\n  keyward plan --detailed-exitcode   # 0 none, 2 changes, 1 error, 3 refused\n  keyward plan --format json > plan.json\n  keyward plan --base origin/main --format markdown   # a pull request's comment\n  keyward plan --rev v1.2 --out plan.json            # save it; then: keyward apply plan.json"
    )]
    Plan(PlanArgs),
    /// Plan, confirm, then create/update/rotate/revoke keys and deliver new secrets.
    #[command(
        after_help = "Examples:\n  keyward apply                 # asks for confirmation on a terminal\n  keyward apply --auto-approve --commit-deliveries   # CI, then: git push\n  keyward apply plan.json       # exactly a saved plan; exit 3 if it is stale"
    )]
    Apply(ApplyArgs),
    /// List the keys the stores hold (no secrets, no hashes).
    #[command(
        after_help = "Examples:\n  keyward keys --store alma-production --status active\n  keyward keys --unmanaged --format json"
    )]
    Keys(KeysArgs),
    /// Ask a store whether it accepts a secret (read from stdin when not given).
    #[command(
        after_help = "Example:\n  keyward secret ill-lookup --store alma-sandbox | keyward verify --store alma-sandbox"
    )]
    Verify {
        /// The key; omit it to read from stdin (keeps it out of shell history).
        key: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Create a new age identity (mode 0600) and print its public recipient.
    #[command(after_help = "Example:\n  keyward keygen -o ~/.config/keyward/identities.txt")]
    Keygen {
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Decrypt one delivered envelope.
    #[command(
        after_help = "Example:\n  keyward decrypt deliveries/alma-production/ill/g1/jdoe.age -i me.txt --format env"
    )]
    Decrypt {
        file: PathBuf,
        #[command(flatten)]
        out: SecretOut,
    },
    /// Decrypt the newest delivery of a key by name.
    #[command(
        after_help = "Example:\n  keyward secret illiad-barcode-lookup --store alma-production -i me.txt --reveal"
    )]
    Secret {
        name: String,
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        out: SecretOut,
    },
    /// Release an apply lock left behind by an apply that died on another machine.
    #[command(
        after_help = "Example:\n  keyward force-unlock --store alma-production 2d4b004f82b5a9f8"
    )]
    ForceUnlock {
        /// The lease id from the `locked by` message.
        lease_id: String,
        #[arg(long)]
        store: String,
    },
    /// Keys that expire or are due for rotation soon, by owner, with what to do
    /// (exit 2 when something is due).
    #[command(
        after_help = "Examples:\n  keyward expiring                       # within the policy's reminder window (30d)\n  keyward expiring --within 7d --format markdown\n  keyward expiring --notify               # the nightly job: mail/webhook reminders"
    )]
    Expiring {
        /// Window to look ahead, e.g. `30d` (default: the policy's longest reminder offset).
        #[arg(long, value_name = "SPAN")]
        within: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::cli_lifecycle::ReportFormat::Text)]
        format: crate::cli_lifecycle::ReportFormat,
        /// Also send the expiry reminders owed now (keyward.yaml `notify:`; each once per
        /// key and offset) and retry notices earlier runs could not send. Exit 1 when a
        /// message could not be sent.
        #[arg(long)]
        notify: bool,
    },
    /// Run the key store as an HTTP service (the /v1 store protocol).
    #[command(
        after_help = "Examples:\n  keyward token create ci-apply --role write\n  keyward serve --listen 127.0.0.1:7450 --database sqlite:.keyward/serve.db"
    )]
    Serve(crate::server::ServeArgs),
    /// Manage the bearer tokens `keyward serve` accepts.
    #[command(subcommand)]
    Token(crate::server::TokenCommand),
    /// Print a JSON Schema (keyward, people, keys, plan), or write them all with --write.
    #[command(
        after_help = "Examples:\n  keyward schema keys > keys.schema.json\n  keyward schema --write            # into ./schemas\n  keyward schema --write docs/schemas"
    )]
    Schema {
        /// keyward, people, keys or plan.
        #[arg(required_unless_present = "write")]
        name: Option<String>,
        /// Write every schema into DIR (default `schemas`, relative to -C).
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "schemas")]
        write: Option<PathBuf>,
    },
    /// Adopt keys made in a console: write YAML for the store's unmanaged keys, then mark
    /// them managed, so the next plan is empty. Secrets are never touched.
    #[command(
        after_help = "Examples:\n  keyward import --store alma-production\n  keyward import --store alma-sandbox --owner jdoe --output keys/jdoe-sandbox.yaml"
    )]
    Import {
        #[arg(long)]
        store: String,
        /// Only keys owned by this person.
        #[arg(long)]
        owner: Option<String>,
        /// Key file to write (must not exist yet).
        #[arg(
            long,
            short = 'o',
            default_value = "keys/imported.yaml",
            value_name = "FILE"
        )]
        output: PathBuf,
    },
    /// Ask for a new API key: write a checked key file under keys/ for a pull request, and
    /// print its description (interactive on a terminal, or all by flags).
    #[command(after_help = crate::cli_request::AFTER_HELP)]
    Request(crate::cli_request::RequestArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiagFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
}

/// How a plan is printed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanOutput {
    /// Terraform-like text (colour on a terminal).
    Text,
    /// The JSON plan (`format_version`; schemas/plan.schema.json).
    Json,
    /// A pull-request comment (hidden marker, summary table, details folded, < 60,000 chars).
    Markdown,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Exit 2 when there are changes, 0 when none (plan only).
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
    pub format: PlanOutput,
    /// Only act on keys matching PATTERN (`store/name` or `name`, `*` wildcard). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,
    /// Only changes that restore edits made outside keyward (plan: exit 2 when there is drift).
    #[arg(long)]
    pub drift_only: bool,
    /// Read the spec as of git revision REV (a commit, branch or tag) without checking it out.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// A pull request's base (e.g. origin/main): mark the keys the change edits and name
    /// the authors of its commits as the requesters.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Also save the plan (JSON) to FILE, for `keyward apply FILE` (plan only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl PlanArgs {
    /// The flow's options.
    pub fn options(&self) -> PlanOptions {
        PlanOptions {
            detailed_exitcode: self.detailed_exitcode,
            format: match self.format {
                PlanOutput::Text => FlowFormat::Text,
                PlanOutput::Json => FlowFormat::Json,
                PlanOutput::Markdown => FlowFormat::Markdown,
            },
            only: self.only.clone(),
            drift_only: self.drift_only,
            rev: self.rev.clone(),
            base: self.base.clone(),
            out: self.out.clone(),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// A plan saved by `keyward plan --out FILE`: apply exactly it, after checking that the
    /// spec and the live keys it was computed from are unchanged (exit 3 when stale).
    #[arg(value_name = "FILE")]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Keys applied at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Apply even when the plan crosses a safety threshold (keyward.yaml `guards:`).
    #[arg(long)]
    pub force: bool,
    /// Apply even when spec files or deliveries have uncommitted changes.
    #[arg(long)]
    pub allow_dirty: bool,
    /// After applying, commit the delivery outbox to git (CI then pushes it).
    #[arg(long)]
    pub commit_deliveries: bool,
    /// With --commit-deliveries: commit on BRANCH (made from HEAD if missing) instead of the
    /// checked-out branch, without touching the working tree.
    #[arg(long, value_name = "BRANCH", requires = "commit_deliveries")]
    pub branch: Option<String>,
}

impl ApplyArgs {
    /// The flow's options.
    pub fn options(&self) -> ApplyRunOptions {
        ApplyRunOptions {
            plan_file: self.plan_file.clone(),
            plan: self.plan.options(),
            auto_approve: self.auto_approve,
            concurrency: self.concurrency,
            force: self.force,
            allow_dirty: self.allow_dirty,
            commit_deliveries: self.commit_deliveries,
            branch: self.branch.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// YYYY-MM-DD
    #[arg(long, value_name = "DATE")]
    pub expiring_before: Option<String>,
    #[arg(long)]
    pub never_expires: bool,
    /// Only keys not managed by keyward (made in a console).
    #[arg(long)]
    pub unmanaged: bool,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Active,
    Disabled,
    Revoked,
}

#[derive(Debug, Args)]
pub struct SecretOut {
    /// Identity file (age or SSH). Repeatable. Default search: KEYWARD_AGE_IDENTITY(_FILE),
    /// ~/.config/keyward/identities.txt, the sops age key file, ~/.ssh/id_ed25519, ~/.ssh/id_rsa.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Print the secret even when stdout is a terminal.
    #[arg(long)]
    pub reveal: bool,
    /// Write to FILE (mode 0600) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SecretFormat::Raw)]
    pub format: SecretFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SecretFormat {
    Raw,
    Env,
    Json,
}

/// Where recipients' identities are looked for; on a terminal, passphrase-protected SSH keys
/// are asked for (without echo).
fn identity_sources() -> IdentitySources {
    let sources = IdentitySources::from_process_env();
    if !std::io::stdin().is_terminal() {
        return sources;
    }
    sources.with_passphrase_prompt(std::sync::Arc::new(|what: &str| {
        rpassword::prompt_password(format!("Passphrase for {what}: "))
            .ok()
            .map(secrecy::SecretString::from)
    }))
}

/// Whether to colour: not for NO_COLOR, --no-color, or a non-terminal.
fn use_color(cli_no_color: bool, stream_is_tty: bool) -> bool {
    !cli_no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream_is_tty
}

/// The HEAD commit of the repository holding `root`, if it is one.
pub fn head_commit(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

/// Run the CLI; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(run_async(cli)) {
        Err(e) if e.downcast_ref::<crate::policy::Refused>().is_some() => {
            if let Some(r) = e.downcast_ref::<crate::policy::Refused>() {
                eprint!("{}", r.rendered);
                eprintln!("\n{r}");
            }
            Ok(exit::REFUSED)
        }
        other => other,
    }
}

async fn run_async(cli: Cli) -> Result<i32> {
    let color_err = use_color(cli.no_color, std::io::stderr().is_terminal());
    let color_out = use_color(cli.no_color, std::io::stdout().is_terminal());
    let colors = Colors {
        out: color_out,
        err: color_err,
    };
    match &cli.command {
        Command::Init { dir } => init(dir.as_deref().unwrap_or(&cli.dir)),
        Command::Validate { format } => validate(&cli.dir, *format, color_out),
        Command::Plan(args) => Ok(crate::flow::plan(&cli.dir, &args.options(), colors)
            .await?
            .code()),
        Command::Apply(args) => Ok(crate::flow::apply(&cli.dir, &args.options(), colors)
            .await?
            .code()),
        Command::Keys(args) => keys_cmd(&cli.dir, args, color_out).await,
        Command::Verify { key, store } => verify_cmd(&cli.dir, key.clone(), store.as_deref()).await,
        Command::Keygen { output } => keygen_cmd(output.as_deref()),
        Command::Serve(args) => {
            crate::server::serve(&cli.dir, args).await?;
            Ok(exit::OK)
        }
        Command::Token(cmd) => Ok(crate::server::token_command(&cli.dir, cmd)?),
        Command::Decrypt { file, out } => {
            let ids = deliver::find_identities(&identity_sources(), &out.identity)?;
            // Checks the manifest beside the envelope, when there is one: listed, checksum, payload.
            let (_manifest, opened) = deliver::decrypt_delivery(file, &ids)?;
            emit_secret(&opened, out)
        }
        Command::Secret { name, store, out } => {
            let Some(loaded) = load_or_report(&cli.dir, color_err)? else {
                return Ok(exit::ERROR);
            };
            let store = pick_store(&loaded, name, store.as_deref())?;
            let ids = deliver::find_identities(&identity_sources(), &out.identity)?;
            let outbox = Outbox::new(loaded.spec.delivery.outbox.clone());
            let (_dir, _m, opened) = outbox.open_latest(&store, name, &ids)?;
            emit_secret(&opened, out)
        }
        Command::ForceUnlock { lease_id, store } => {
            let Some(loaded) = load_or_report(&cli.dir, color_err)? else {
                return Ok(exit::ERROR);
            };
            let cfg = loaded
                .spec
                .stores
                .get(store)
                .ok_or_else(|| anyhow!("store `{store}` is not in keyward.yaml"))?;
            observe::open(cfg)?.unlock(lease_id).await?;
            eprintln!("Released lease {lease_id} on {store} (if it was still held).");
            Ok(exit::OK)
        }
        Command::Expiring {
            within,
            format,
            notify,
        } => {
            crate::cli_lifecycle::expiring_cmd(
                &cli.dir,
                within.as_deref(),
                *format,
                *notify,
                color_err,
            )
            .await
        }
        Command::Schema { name, write } => schema_cmd(&cli.dir, name.as_deref(), write.as_deref()),
        Command::Import {
            store,
            owner,
            output,
        } => {
            crate::cli_lifecycle::import_cmd(&cli.dir, store, owner.as_deref(), output, color_err)
                .await
        }
        Command::Request(args) => crate::cli_request::request_cmd(&cli.dir, args, color_err),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
    }
}

fn validate(dir: &Path, format: DiagFormat, color: bool) -> Result<i32> {
    let now = SystemClock.now();
    let (mut all, sources, spec) = match spec::load(dir) {
        Ok(l) => {
            let mut d = l.warnings.clone();
            d.extend(crate::policy::check(&l.spec, now));
            (d, l.sources, Some(l.spec))
        }
        Err(d) => {
            let s = crate::flow::load::read_sources(dir, &d);
            (d, s, None)
        }
    };
    all.sort();
    match format {
        DiagFormat::Json => {
            let mut v: serde_json::Value = serde_json::from_str(&diag::to_json(&all))?;
            if let (Some(o), Some(spec)) = (v.as_object_mut(), &spec) {
                o.insert(
                    "report".into(),
                    serde_json::to_value(crate::policy::report(spec))?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DiagFormat::Text => {
            print!("{}", diag::render(&all, &sources, color));
            match &spec {
                Some(s) if !all.has_errors() => {
                    println!(
                        "The spec is valid: {} key(s) in {} store(s), {} principal(s).",
                        s.keys.len(),
                        s.stores.len(),
                        s.principals.len()
                    );
                }
                _ => println!("{} error(s) found.", all.error_count()),
            }
            if let Some(s) = &spec {
                print!(
                    "{}",
                    crate::policy::render_report(&crate::policy::report(s))
                );
            }
        }
    }
    Ok(if all.has_errors() {
        exit::ERROR
    } else {
        exit::OK
    })
}

fn schema_cmd(dir: &Path, name: Option<&str>, write: Option<&Path>) -> Result<i32> {
    if let Some(out) = write {
        let out = dir.join(out);
        let changed = crate::schema::write_all(&out)?;
        if changed.is_empty() {
            eprintln!("The schemas in {} are current.", out.display());
        }
        for p in changed {
            eprintln!("wrote {}", p.display());
        }
        if name.is_none() {
            return Ok(exit::OK);
        }
    }
    if let Some(n) = name {
        print!("{}", crate::schema::text(&crate::schema::get(n)?));
    }
    Ok(exit::OK)
}

fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow!("`{s}` is not a date (YYYY-MM-DD)"))?;
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| anyhow!("bad date {s}"))
}

async fn keys_cmd(dir: &Path, args: &KeysArgs, color: bool) -> Result<i32> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(exit::ERROR);
    };
    if let Some(s) = &args.store
        && !loaded.spec.stores.contains_key(s)
    {
        bail!(
            "store `{s}` is not in keyward.yaml (stores: {})",
            loaded
                .spec
                .stores
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let stores = observe::open_all(&loaded.spec, args.store.as_deref())?;
    let filter = ListFilter {
        owner: args.owner.clone(),
        status: args.status.map(|s| match s {
            StatusArg::Active => KeyStatus::Active,
            StatusArg::Disabled => KeyStatus::Disabled,
            StatusArg::Revoked => KeyStatus::Revoked,
        }),
        managed: args.unmanaged.then_some(false),
        expiring_before: args
            .expiring_before
            .as_deref()
            .map(parse_date)
            .transpose()?,
        never_expires: args.never_expires,
        ..ListFilter::default()
    };
    let mut rows: Vec<(String, LiveKey)> = Vec::new();
    for (name, s) in &stores {
        for k in list_all(s.as_ref(), &filter).await? {
            rows.push((name.clone(), k));
        }
    }
    match args.format {
        PlanFormat::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(s, k)| {
                    let mut j = serde_json::to_value(k).unwrap_or_default();
                    if let Some(o) = j.as_object_mut() {
                        o.insert("store".into(), serde_json::Value::String(s.clone()));
                    }
                    j
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        PlanFormat::Text => {
            println!(
                "{:<18} {:<28} {:<18} {:<10} {:<9} {:<11} {:<4} SCOPES",
                "STORE", "NAME", "ID", "OWNER", "STATUS", "EXPIRES", "GEN"
            );
            for (s, k) in &rows {
                let name = if k.is_managed() {
                    k.name.clone()
                } else {
                    format!("{} (unmanaged)", k.name)
                };
                println!(
                    "{:<18} {:<28} {:<18} {:<10} {:<9} {:<11} {:<4} {}",
                    s,
                    name,
                    k.id,
                    k.owner,
                    k.status.as_str(),
                    k.expires_at
                        .map(|t| t.format("%Y-%m-%d").to_string())
                        .unwrap_or_else(|| "never".into()),
                    k.generation,
                    k.scopes.join(",")
                );
            }
            eprintln!("{} key(s).", rows.len());
        }
    }
    Ok(exit::OK)
}

/// Find the store of key `name` when `--store` is not given (must be unambiguous).
fn pick_store(loaded: &Loaded, name: &str, store: Option<&str>) -> Result<String> {
    if let Some(s) = store {
        if !loaded.spec.stores.contains_key(s) {
            bail!("store `{s}` is not in keyward.yaml");
        }
        return Ok(s.to_string());
    }
    let found: Vec<&str> = loaded
        .spec
        .keys
        .iter()
        .filter(|k| k.name == name)
        .map(|k| k.store.as_str())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("no key named `{name}` in the spec; `keyward keys` lists what the stores hold"),
        many => bail!(
            "`{name}` exists in several stores ({}); pass --store",
            many.join(", ")
        ),
    }
}

async fn verify_cmd(dir: &Path, key: Option<String>, store: Option<&str>) -> Result<i32> {
    let presented = zeroize::Zeroizing::new(match key {
        Some(k) => k,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("Key to verify: ");
                std::io::stderr().flush().ok();
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim().to_string()
        }
    });
    let Some(loaded) = load_or_report(dir, false)? else {
        return Ok(exit::ERROR);
    };
    let store_name = match store {
        Some(s) => s.to_string(),
        None => {
            // The environment tag in the secret narrows it down.
            let tag = crate::secret::parse(&presented).map(|p| p.env_tag);
            let candidates: Vec<&String> = loaded
                .spec
                .stores
                .values()
                .filter(|s| {
                    tag.as_ref()
                        .is_none_or(|t| crate::secret::env_tag(&s.environment) == *t)
                })
                .map(|s| &s.name)
                .collect();
            match candidates.as_slice() {
                [one] => (*one).clone(),
                _ => bail!("several stores could hold this key; pass --store"),
            }
        }
    };
    let cfg = loaded
        .spec
        .stores
        .get(&store_name)
        .ok_or_else(|| anyhow!("store `{store_name}` is not in keyward.yaml"))?;
    let s = observe::open(cfg)?;
    let verdict = s.verify(&presented, SystemClock.now()).await?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    Ok(if verdict.valid { exit::OK } else { exit::ERROR })
}

fn keygen_cmd(output: Option<&Path>) -> Result<i32> {
    let path = match output {
        Some(p) => p.to_path_buf(),
        None => IdentitySources::from_process_env()
            .default_identity_file()
            .ok_or_else(|| anyhow!("no HOME to put the identity in; pass -o FILE"))?,
    };
    let public = deliver::keygen(&path)?;
    eprintln!(
        "Wrote a new age identity to {} (mode 0600). Keep it private.",
        path.display()
    );
    eprintln!("Add this public recipient to your entry in people.yaml:");
    println!("{public}");
    Ok(exit::OK)
}

fn emit_secret(opened: &deliver::Opened, out: &SecretOut) -> Result<i32> {
    let format = match out.format {
        SecretFormat::Raw => OutputFormat::Raw,
        SecretFormat::Env => OutputFormat::Env,
        SecretFormat::Json => OutputFormat::Json,
    };
    let text = deliver::render(opened, format);
    if let Some(path) = &out.output {
        deliver::write_secret_file(path, text.as_bytes())?;
        eprintln!(
            "Wrote the secret of {} (generation {}) to {} (mode 0600).",
            opened.meta.key,
            opened.meta.generation,
            path.display()
        );
        return Ok(exit::OK);
    }
    if std::io::stdout().is_terminal() && !out.reveal {
        eprintln!(
            "Refusing to print the secret of {} to a terminal.\n  hint: pass --reveal, pipe it (| pbcopy), or write it with -o FILE.",
            opened.meta.key
        );
        return Ok(exit::ERROR);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') && std::io::stdout().is_terminal() {
        stdout.write_all(b"\n")?;
    }
    Ok(exit::OK)
}

const INIT_CONFIG: &str = "\
# yaml-language-server: $schema=schemas/keyward.schema.json
version: 1
stores:
  production: { kind: sqlite, path: .keyward/production.db, environment: production }
  sandbox:    { kind: sqlite, path: .keyward/sandbox.db, environment: sandbox }
scopes:
  areas: [acquisitions, analytics, bibs, configuration, courses, electronic, resource-sharing, task-lists, users]
  levels: [read, write]
policy:
  default_lifetime: 365d
  max_lifetime: 730d
  max_keys_per_owner: 10
  min_recipients: 1
  forbid:
    - { scope: configuration:write, reason: \"Read/write access to the Configuration API is not granted.\" }
delivery:
  outbox: deliveries
  retain: 7d
";

const INIT_PEOPLE: &str = "\
# yaml-language-server: $schema=schemas/people.schema.json
# Add yourself: run `keyward keygen -o ~/.config/keyward/identities.txt` and paste the
# printed age1... public recipient below. Never paste the AGE-SECRET-KEY line.
people: {}
teams: {}
services: {}
";

fn init(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir.join("keys"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let files: [(&str, &str); 4] = [
        ("keyward.yaml", INIT_CONFIG),
        ("people.yaml", INIT_PEOPLE),
        (".gitignore", ".keyward/\n"),
        ("keys/.gitkeep", ""),
    ];
    let mut wrote = Vec::new();
    let schemas = crate::schema::all();
    let schema_files = schemas
        .iter()
        .map(|(f, t)| (format!("schemas/{f}"), t.as_str()));
    let files = files
        .iter()
        .map(|(n, c)| (n.to_string(), *c))
        .chain(schema_files);
    std::fs::create_dir_all(dir.join("schemas"))
        .with_context(|| format!("creating {}", dir.join("schemas").display()))?;
    for (name, content) in files {
        let p = dir.join(name);
        if p.exists() {
            eprintln!("kept existing {}", p.display());
            continue;
        }
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        wrote.push(p);
    }
    for p in &wrote {
        eprintln!("created {}", p.display());
    }
    eprintln!(
        "\nNext: `keyward keygen`, add yourself to people.yaml, write a key in keys/, then `keyward -C {} plan`.",
        dir.display()
    );
    Ok(exit::OK)
}
