//! The `keybroker` command line: `serve`, and client subcommands that talk
//! to a running broker and print ET's own JSON.
//!
//! Owns the command tree and its dispatch, and `serve`'s start-up. Each
//! subcommand's work lives in its own file; this one must never grow any.
//! Client subcommands print wrapped keys only; key material a user passes in
//! is read from a file or stdin, never from the command line (where `ps`
//! would show it).
//!
//! - [`args`]: the flags; [`connect`]: the channel to the broker.
//! - [`keys`]: `issue-key`, `wrap-key`, `unwrap-key`; [`export`]: where a
//!   plaintext key may be written; [`job`]: `submit-job`.
//! - [`files`]: `encrypt`, `decrypt`; [`health`]: `health`.
//! - [`audit`]: `audit verify`, `audit export-key`; [`loadgen`]: `bench`.
//! - [`records`]: `keys lookup`, `keys rewrap` (the key ledger).
//! - [`pipeline`]: `pipeline check`, `pipeline connect`.
//! - [`mediaconvert`]: `mediaconvert submit`, `migrate et-input`.
//! - [`role`]: `mediaconvert check-role`, `mediaconvert connect-role`.
//! - [`docs`]: `completions`, `man`; [`error`]: how a command fails.

pub mod args;
pub mod audit;
pub mod connect;
pub mod docs;
pub mod error;
pub mod export;
pub mod files;
pub mod health;
pub mod job;
pub mod keys;
pub mod loadgen;
pub mod mediaconvert;
pub mod pipeline;
pub mod records;
pub mod role;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::app::config::Config;
use crate::client::args::{
    AuditCommand, DecryptArgs, EncryptArgs, HealthArgs, IssueKeyArgs, PipelineCommand, ServeArgs, SubmitJobArgs,
    UnwrapKeyArgs, WrapKeyArgs,
};
use crate::client::error::CliError;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "keybroker", version, about = "Key-custody broker for encrypted Elastic Transcoder jobs")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Ask a running broker for a fresh wrapped data key; prints ET's
    /// `Encryption` JSON.
    IssueKey(IssueKeyArgs),
    /// Have a running broker wrap key material you must use; prints ET's
    /// `Encryption` JSON.
    WrapKey(WrapKeyArgs),
    /// Have a running broker unwrap ET's `Encryption` JSON and write the
    /// plaintext key (hex by default) to a new 0600 file or a pipe, never to
    /// a terminal unless asked. The broker must allow plaintext export.
    UnwrapKey(UnwrapKeyArgs),
    /// Have a running broker key, validate and submit an Elastic Transcoder
    /// job written as ET's CreateJob JSON.
    SubmitJob(SubmitJobArgs),
    /// Encrypt a file (or an S3 object) under a fresh key that never leaves
    /// the broker; prints ET's `Encryption` JSON.
    Encrypt(EncryptArgs),
    /// Decrypt a file (or an S3 object) given its ET `Encryption` JSON; the
    /// output appears only once the broker read the whole file and ended the
    /// stream OK (for aes-gcm, once its tag verified; aes-cbc-pkcs7 and
    /// aes-ctr carry no authentication: tampering goes unnoticed beyond bad
    /// CBC padding).
    Decrypt(DecryptArgs),
    /// Check a broker's health (grpc.health.v1); exit 0 when SERVING.
    Health(HealthArgs),
    /// The key ledger: look recorded keys up, or move them to another KMS
    /// key or service context.
    #[command(subcommand)]
    Keys(records::KeysCommand),
    /// AWS Elemental MediaConvert jobs, and the job role's KMS set-up.
    #[command(subcommand)]
    Mediaconvert(mediaconvert::MediaConvertCommand),
    /// Move Elastic Transcoder keys to MediaConvert.
    #[command(subcommand)]
    Migrate(mediaconvert::MigrateCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check a pipeline's KMS set-up, or connect a KMS key to it.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Load a running broker, like redis-benchmark: requests per second,
    /// latency percentiles and errors, beside a bare gRPC baseline.
    Bench(loadgen::BenchArgs),
    /// Print a shell completion script on stdout
    /// (bash: `keybroker completions bash > /etc/bash_completion.d/keybroker`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (`keybroker man | man -l -`), or
    /// write one page per subcommand into a directory.
    Man {
        /// Write keybroker.1, keybroker-serve.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// Runs the parsed command.
///
/// # Errors
/// [`CliError`] with a message for the user.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        // Ctrl-C drops the call, and with it a key file not yet written.
        Command::IssueKey(args) => interruptible(keys::issue_key(args)).await,
        Command::WrapKey(args) => keys::wrap_key(args).await,
        Command::UnwrapKey(args) => interruptible(keys::unwrap_key(args)).await,
        Command::SubmitJob(args) => job::submit_job(args).await,
        Command::Encrypt(args) => interruptible(files::encrypt_file(args)).await,
        Command::Decrypt(args) => interruptible(files::decrypt_file(args)).await,
        Command::Health(args) => health::health(args).await,
        Command::Keys(command) => records::keys_command(command).await,
        Command::Mediaconvert(command) => mediaconvert::mediaconvert_command(command).await,
        Command::Migrate(command) => mediaconvert::migrate_command(command).await,
        Command::Audit(AuditCommand::Verify { files, after, checkpoint, allow_legacy, key }) => {
            audit::audit_verify(&files, after.as_deref(), checkpoint.as_deref(), allow_legacy, &key).await
        }
        Command::Audit(AuditCommand::ExportKey { out, kms }) => audit::export_key(&out, &kms).await,
        Command::Pipeline(command) => pipeline::pipeline_command(command).await,
        Command::Bench(args) => loadgen::bench_command(args).await,
        Command::Completions { shell } => docs::completions(shell, Cli::command()),
        Command::Man { out_dir } => docs::man(Cli::command(), out_dir.as_deref()),
    }
}

/// The configuration `serve` would run with: defaults, the file, the
/// environment, then the flags, in one figment chain.
///
/// # Errors
/// [`CliError::Config`].
pub fn serve_config(args: &ServeArgs) -> Result<Config, CliError> {
    Ok(Config::load_with(args.config.as_deref(), args.overrides())?)
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let config = serve_config(&args)?;
    crate::app::telemetry::init(config.log.format, &config.log.filter);
    crate::app::hygiene::harden(config.memory.lock_keys);
    // Metrics record from before the broker is built (its key pools start
    // filling there); their listener answers only once the configuration
    // has passed its checks.
    let exporter = config
        .metrics_listen
        .map(|addr| crate::app::metrics::install(addr).map_err(|message| CliError::Metrics { addr, message }))
        .transpose()?;
    // Checks the configuration (once) before the broker listens.
    let app = crate::app::server::Application::build(config, Default::default()).await?;
    let config = app.config();
    if let Some(exporter) = exporter {
        exporter.serve();
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CliError::Listen { addr: config.listen, source })?;
    app.run(listener, crate::app::signals::shutdown_signal()).await?;
    Ok(())
}

/// Runs a long client command until done or Ctrl-C; dropping it on Ctrl-C
/// cancels the call and removes its temporary output.
async fn interruptible(work: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
    }
}
