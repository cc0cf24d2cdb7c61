//! Where the plaintext keys of `unwrap-key` and `issue-key --plaintext-out`
//! go, for tools of the caller's own (`openssl enc`, a packager). Both ask
//! through the server's export gate (`UnwrapKey`, `return_plaintext`); a
//! broker that does not export refuses them.
//!
//! Owns where a plaintext key may go: a new file created with mode 0600
//! before the call (an existing file is never overwritten, and a failed
//! call leaves none), or stdout when it is not a terminal, or a terminal
//! only when `--force-terminal` asks for it. Must never write a key to
//! stderr, a log, an error message or a terminal unasked, nor keep a copy
//! that is not wiped.

use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::client::args::KeyEncoding;
use crate::client::error::CliError;

/// A file made for a plaintext key: created new with mode 0600 before any
/// call, and removed again unless [`KeyFile::write`] fills it.
pub(super) struct KeyFile {
    path: PathBuf,
    file: Option<File>,
}

impl KeyFile {
    /// Creates `path` (`flag` names it in errors): a new file, mode 0600.
    ///
    /// # Errors
    /// [`CliError::Usage`] when it exists; [`CliError::Io`] otherwise.
    pub(super) fn create(path: &Path, flag: &str) -> Result<Self, CliError> {
        let file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
                match source.kind() {
                    std::io::ErrorKind::AlreadyExists => CliError::Usage(format!(
                        "{flag} {}: the file exists; a key is only ever written to a new file",
                        path.display()
                    )),
                    _ => CliError::Io { path: path.to_owned(), source },
                }
            })?;
        Ok(KeyFile { path: path.to_owned(), file: Some(file) })
    }

    /// Writes the encoded key and syncs it; the file is kept.
    ///
    /// # Errors
    /// [`CliError::Io`]; the file is removed.
    pub(super) fn write(mut self, encoded: &[u8]) -> Result<(), CliError> {
        let Some(mut file) = self.file.take() else {
            return Err(CliError::Answer("the key file was already written".to_owned()));
        };
        let written = file.write_all(encoded).and_then(|()| file.sync_all());
        match written {
            Ok(()) => Ok(()),
            Err(source) => {
                drop(file);
                let _ = std::fs::remove_file(&self.path);
                Err(CliError::Io { path: self.path.clone(), source })
            }
        }
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        // Not written: the call failed, so no empty key file is left behind.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The key as `encoding` writes it: hex or base64 and a newline (as
/// `openssl rand -hex 32` writes, and as `wrap-key --key-file` reads), or
/// the bytes themselves.
pub(super) fn encode(key: &[u8], encoding: KeyEncoding) -> Zeroizing<Vec<u8>> {
    let text = match encoding {
        KeyEncoding::Raw => return Zeroizing::new(key.to_vec()),
        KeyEncoding::Hex => Zeroizing::new(hex::encode(key)),
        KeyEncoding::Base64 => Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key)),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() + 1));
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// Refuses a terminal stdout for a key unless `force` says so; checked
/// before anything is unwrapped.
///
/// # Errors
/// [`CliError::Usage`] saying how to send the key elsewhere.
pub(super) fn check_stdout(force: bool) -> Result<(), CliError> {
    if std::io::stdout().is_terminal() && !force {
        return Err(CliError::Usage(
            "stdout is a terminal: a plaintext key would stay on screen and in scrollback; \
             write it to a new file with --out FILE, pipe it, or pass --force-terminal"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Writes the encoded key on stdout (checked by [`check_stdout`]).
///
/// # Errors
/// [`CliError::Io`].
pub(super) fn write_stdout(encoded: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(encoded)
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Io { path: "stdout".into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_new_private_and_gone_unless_written() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.hex");
        let file = KeyFile::create(&path, "--out").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(file);
        assert!(!path.exists(), "an unwritten key file is removed");

        KeyFile::create(&path, "--out").unwrap().write(&encode(&[0xab; 16], KeyEncoding::Hex)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", "ab".repeat(16)));
        let err = KeyFile::create(&path, "--out").err().unwrap().to_string();
        assert!(err.contains("the file exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", "ab".repeat(16)), "left untouched");
    }

    #[test]
    fn encodings_are_what_openssl_and_wrap_key_read() {
        assert_eq!(&encode(&[1, 2], KeyEncoding::Hex)[..], b"0102\n");
        assert_eq!(&encode(&[1, 2], KeyEncoding::Base64)[..], b"AQI=\n");
        assert_eq!(&encode(&[1, 2], KeyEncoding::Raw)[..], [1, 2]);
    }
}
