//! The keyward binary: parse arguments, run, exit with the documented code. The command
//! line (`cli/`, clap) lives here, outside the library.

mod cli;

use clap::Parser;
use keyward::outcome::Outcome;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KEYWARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = keyward::clock::env_override() {
        eprintln!("error: {}", keyward::leak::redact(&e));
        std::process::exit(Outcome::Error.code());
    }
    let outcome = match cli::run(cli) {
        Ok(outcome) => outcome,
        Err(e) => {
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                // Most errors already say their cause (`listing store x: refused: ...`):
                // a cause already in the message is not printed a second time.
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!("\n  caused by: {cause}"));
                }
            }
            let msg = keyward::leak::redact(&msg);
            eprintln!("{}", keyward::recipient::clean_age_message(&msg));
            Outcome::Error
        }
    };
    std::process::exit(outcome.code());
}
