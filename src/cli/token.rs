//! `keyward token create|list|revoke`: its clap arguments, read into
//! `server::TokenCommand`, and the call into the server's token file. Must not print a
//! token except the one `create` makes (once, on stdout).

use clap::{Subcommand, ValueEnum};
use keyward::outcome::Outcome;
use keyward::server::tokens::Role;
use keyward::server::{self, DEFAULT_TOKENS, TokenCommand};
use std::path::{Path, PathBuf};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// list, get, events (what `keyward plan` needs).
    Read,
    /// everything `read` may, plus every change and the apply lock (what `apply` needs).
    Write,
    /// only `POST /v1/verify` (what applications need).
    Verify,
}

/// `keyward token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenArgs {
    /// Make a token; prints it once on stdout (everything else goes to stderr).
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, env = "KEYWARD_TOKENS_FILE", default_value = DEFAULT_TOKENS, value_name = "FILE")]
        tokens: PathBuf,
    },
    /// List token names and roles (never the tokens).
    List {
        #[arg(long, env = "KEYWARD_TOKENS_FILE", default_value = DEFAULT_TOKENS, value_name = "FILE")]
        tokens: PathBuf,
    },
    /// Remove a token; a running server stops accepting it within seconds.
    Revoke {
        name: String,
        #[arg(long, env = "KEYWARD_TOKENS_FILE", default_value = DEFAULT_TOKENS, value_name = "FILE")]
        tokens: PathBuf,
    },
}

impl TokenArgs {
    fn command(&self) -> TokenCommand {
        match self.clone() {
            TokenArgs::Create { name, role, tokens } => TokenCommand::Create {
                name,
                role: match role {
                    RoleArg::Read => Role::Read,
                    RoleArg::Write => Role::Write,
                    RoleArg::Verify => Role::Verify,
                },
                tokens,
            },
            TokenArgs::List { tokens } => TokenCommand::List { tokens },
            TokenArgs::Revoke { name, tokens } => TokenCommand::Revoke { name, tokens },
        }
    }
}

/// Run a `keyward token` command.
pub fn run(dir: &Path, args: &TokenArgs) -> anyhow::Result<Outcome> {
    server::token_command(dir, &args.command())?;
    Ok(Outcome::Ok)
}
