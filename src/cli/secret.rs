//! `keyward decrypt`, `keyward secret` and `keyward keygen`: the recipient's side of a
//! delivery. The only commands that put a secret on stdout, and only with `--reveal`, a
//! pipe or `-o FILE` (mode 0600); must not print a secret or private key anywhere else.

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use keyward::deliver::{self, IdentitySources, Outbox, OutputFormat};
use keyward::flow::load_or_report;
use keyward::outcome::Outcome;
use keyward::spec::Loaded;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

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

/// The examples under `keyward decrypt --help`.
pub const DECRYPT_AFTER_HELP: &str = "\
Example:
  keyward decrypt deliveries/alma-production/ill/g1/jdoe.age -i me.txt --format env";

#[derive(Debug, Args)]
pub struct DecryptArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub out: SecretOut,
}

/// The examples under `keyward secret --help`.
pub const SECRET_AFTER_HELP: &str = "\
Example:
  keyward secret illiad-barcode-lookup --store alma-production -i me.txt --reveal";

#[derive(Debug, Args)]
pub struct SecretArgs {
    pub name: String,
    #[arg(long)]
    pub store: Option<String>,
    #[command(flatten)]
    pub out: SecretOut,
}

/// The examples under `keyward keygen --help`.
pub const KEYGEN_AFTER_HELP: &str = "\
Example:
  keyward keygen -o ~/.config/keyward/identities.txt";

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity (default ~/.config/keyward/identities.txt); the same as
    /// `-o FILE`.
    #[arg(value_name = "PATH", conflicts_with = "output")]
    pub path: Option<PathBuf>,
    /// Where to write the identity (the same as the PATH argument).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where recipients' identities are looked for; on a terminal, passphrase-protected SSH keys
/// are asked for (without echo).
fn identity_sources() -> IdentitySources {
    let sources = IdentitySources::from_process_env();
    if !std::io::stdin().is_terminal() {
        return sources;
    }
    // `what` is the whole question ("Passphrase for SSH key ~/.ssh/id_ed25519").
    sources.with_passphrase_prompt(std::sync::Arc::new(|what: &str| {
        rpassword::prompt_password(format!("{what}: "))
            .ok()
            .map(secrecy::SecretString::from)
    }))
}

/// Run `keyward decrypt FILE`.
pub fn decrypt(args: &DecryptArgs) -> Result<Outcome> {
    let ids = deliver::find_identities(&identity_sources(), &args.out.identity)?;
    // Checks the manifest beside the envelope, when there is one: listed, checksum, payload.
    let (manifest, opened) = deliver::decrypt_delivery(&args.file, &ids)?;
    if let Some(m) = &manifest {
        warn_status(m);
    }
    emit_secret(&opened, &args.out)
}

/// Run `keyward secret NAME`.
pub fn secret(dir: &Path, args: &SecretArgs, color_err: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color_err)? else {
        return Ok(Outcome::Error);
    };
    let store = pick_store(&loaded, &args.name, args.store.as_deref())?;
    let ids = deliver::find_identities(&identity_sources(), &args.out.identity)?;
    let outbox = Outbox::new(loaded.spec.delivery.outbox.clone());
    let (_dir, m, opened) = outbox.open_latest(&store, &args.name, &ids)?;
    warn_status(&m);
    emit_secret(&opened, &args.out)
}

/// On stderr: a delivery that is not the key's current secret says so.
fn warn_status(m: &deliver::Manifest) {
    if let Some(w) = m.status.warning() {
        eprintln!(
            "warning: {}/{} generation {}: {w}",
            m.store, m.name, m.generation
        );
    }
}

/// Find the store of key `name` when `--store` is not given (must be unambiguous).
fn pick_store(loaded: &Loaded, name: &str, store: Option<&str>) -> Result<String> {
    if let Some(s) = store {
        super::common::store(&loaded.spec, s)?;
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

/// Run `keyward keygen`.
pub fn keygen(args: &KeygenArgs) -> Result<Outcome> {
    let path = match args.output.as_ref().or(args.path.as_ref()) {
        Some(p) => p.clone(),
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
    Ok(Outcome::Ok)
}

fn emit_secret(opened: &deliver::Opened, out: &SecretOut) -> Result<Outcome> {
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
        return Ok(Outcome::Ok);
    }
    if std::io::stdout().is_terminal() && !out.reveal {
        eprintln!(
            "Refusing to print the secret of {} to a terminal.\n  hint: pass --reveal, pipe it (| pbcopy), or write it with -o FILE.",
            opened.meta.key
        );
        return Ok(Outcome::Error);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') && std::io::stdout().is_terminal() {
        stdout.write_all(b"\n")?;
    }
    Ok(Outcome::Ok)
}
