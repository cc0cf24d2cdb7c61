//! The `keybroker` binary: parses the command line and hands over to the
//! library, where everything else lives.

#![forbid(unsafe_code)]

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = keybroker::cli::Cli::parse();
    match keybroker::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keybroker: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
