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

fn main() -> std::process::ExitCode {
    let cli = keybroker::client::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("keybroker: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(keybroker::client::run(cli));
    // Everything a command must finish it finished inside `run` (`serve`:
    // the drain and the last audit checkpoint, before it logs "keybroker
    // stopped"). Work left on the blocking pool (a file read, a DNS lookup
    // of an SDK client) is abandoned, not waited for, so that line is the
    // last thing the process does.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keybroker: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
