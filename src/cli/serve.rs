//! `keyward serve`: its clap arguments (with their environment variables), read into
//! `server::ServeArgs`, and the call into the server. Must not serve anything itself.

use clap::Args;
use keyward::outcome::Outcome;
use keyward::server::listen::DEFAULT_MAX_CONNECTIONS;
use keyward::server::{self, DEFAULT_LISTEN, DEFAULT_TOKENS, parse_duration};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The examples under `keyward serve --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward token create ci-apply --role write
  keyward serve --listen 127.0.0.1:7450 --database sqlite:.keyward/serve.db";

#[derive(Debug, Clone, Args)]
pub struct ServeCliArgs {
    /// Address to listen on (use port 0 for any free port; the chosen one is printed).
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,
    /// The database: `sqlite:PATH` (WAL mode) or `postgres://...`.
    #[arg(
        long,
        env = "KEYWARD_DATABASE",
        default_value = "sqlite:.keyward/serve.db",
        value_name = "URL"
    )]
    pub database: String,
    /// Tokens file (hashes only; see `keyward token create`). Entries from the
    /// KEYWARD_SERVE_TOKENS environment variable (`name:role:sha256,...`) are added.
    #[arg(long, env = "KEYWARD_TOKENS_FILE", default_value = DEFAULT_TOKENS, value_name = "FILE")]
    pub tokens: PathBuf,
    /// Close a connection that has not sent a complete request head this long after it
    /// opened or after its previous answer (also the keep-alive idle timeout).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Duration,
    /// Answer 408 to a request (body included) not handled within this time.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// Open connections at once; more wait in the listen queue. Lowered to fit the
    /// open-file limit (whose soft value is raised to the hard one at start).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); SIGHUP reloads both.
    #[arg(
        long,
        env = "KEYWARD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "KEYWARD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Benchmark only: serve a bare handler answering 200 on every path (the machine's ceiling).
    #[arg(long, hide = true)]
    pub bare: bool,
    /// Write the verify calls counted per key (last used, calls per day) to the store this
    /// often, and once more on stop; a process killed outright loses at most this interval.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub usage_flush: Duration,
    /// Do not count verify calls (no last-used times, no usage report; a budget written by
    /// apply is still enforced and alerted).
    #[arg(long)]
    pub no_usage: bool,
}

/// Run `keyward serve` until SIGINT/SIGTERM.
pub async fn run(dir: &Path, args: &ServeCliArgs) -> anyhow::Result<Outcome> {
    let opts = server::ServeArgs {
        listen: args.listen.clone(),
        database: args.database.clone(),
        tokens: args.tokens.clone(),
        header_timeout: args.header_timeout,
        request_timeout: args.request_timeout,
        max_connections: args.max_connections,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        bare: args.bare,
        usage_flush: (!args.no_usage).then_some(args.usage_flush),
    };
    server::serve(dir, &opts).await?;
    Ok(Outcome::Ok)
}
