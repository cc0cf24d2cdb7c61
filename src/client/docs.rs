//! `keybroker completions SHELL` and `keybroker man`: shell completion
//! scripts (clap_complete) and roff man pages (clap_mangen), made from the
//! same command tree the binary parses, so they cannot drift from it.
//!
//! Owns writing them to stdout or a directory. Must never talk to a broker
//! or read configuration.

use std::path::Path;

use crate::client::error::CliError;

/// Writes the completion script for `shell` on stdout.
///
/// # Errors
/// [`CliError::Io`] when stdout is closed (a pipe to `head`), never a panic.
pub(super) fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> Result<(), CliError> {
    use clap_complete::Generator as _;
    let name = command.get_name().to_owned();
    command.set_bin_name(name);
    command.build();
    shell
        .try_generate(&command, &mut std::io::stdout().lock())
        .map_err(|source| CliError::Io { path: "stdout".into(), source })
}

/// Writes the man page on stdout, or with `out_dir` one page per
/// subcommand there (`keybroker.1`, `keybroker-serve.1`, ...).
///
/// # Errors
/// [`CliError::Io`] when the page cannot be written.
pub(super) fn man(command: clap::Command, out_dir: Option<&Path>) -> Result<(), CliError> {
    match out_dir {
        Some(dir) => {
            clap_mangen::generate_to(command, dir).map_err(|source| CliError::Io { path: dir.to_owned(), source })
        }
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .map_err(|source| CliError::Io { path: "stdout".into(), source }),
    }
}
