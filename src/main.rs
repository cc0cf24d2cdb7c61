//! The `keybroker` binary: parses the command line and hands over to the
//! library, where everything else lives.

#![forbid(unsafe_code)]

use clap::Parser as _;

/// mimalloc: per-thread heaps, so the many small allocations of each call
/// (HTTP/2 frames, headers, protobuf) do not contend across workers. Key
/// buffers are zeroed by their owners before they are freed, whatever the
/// allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = keybroker::client::Cli::parse();
    match keybroker::client::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keybroker: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
