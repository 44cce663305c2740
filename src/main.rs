//! The keyward binary: parse arguments, run, exit with the documented code.

use clap::Parser;

fn main() {
    let cli = keyward::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KEYWARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let code = match keyward::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{}", keyward::recipient::clean_age_message(&msg));
            keyward::cli::exit::ERROR
        }
    };
    std::process::exit(code);
}
