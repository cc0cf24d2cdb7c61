//! The chain key: the 256-bit HMAC-SHA256 key that authenticates every
//! audit record and checkpoint, so that rewriting the log needs the key.
//!
//! The broker holds the key only wrapped by KMS, in a file beside the log
//! (the wrapped key is not secret), under the encryption context
//! `{"purpose":"keybroker-audit-chain"}`; it creates the key on first start
//! and unwraps it at start into zeroizing memory. `keybroker audit` gets it
//! the same way, or from a key file an operator exported for offline review
//! (exactly the 32 key bytes, mode 0600).
//!
//! Owns the key, its files and the MAC. Must never print, log or serialise
//! the key's bytes: `Debug` is redacted and only [`ChainKey::write_file`]
//! lets them out, into a new private file.

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::custody::keys::{DataKey, KeyBits, ServiceContext, WrappedKey};
use crate::custody::kms::{Kms, KmsError, KmsKeyId};

/// The chain key's length in bytes.
pub const CHAIN_KEY_LEN: usize = 32;

/// Why the chain key is not at hand.
#[derive(Debug, thiserror::Error)]
pub enum ChainKeyError {
    /// A key file could not be read or written.
    #[error("audit chain key {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file is unfit: the wrong length, or readable by others.
    #[error("audit chain key {}: {problem}", .path.display())]
    Unfit {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// KMS did not wrap or unwrap the key.
    #[error("audit chain key {}: {source}", .path.display())]
    Kms {
        /// The wrapped key's file.
        path: PathBuf,
        /// The cause.
        source: KmsError,
    },
    /// The OS random number generator failed.
    #[error("audit chain key: the OS random number generator failed")]
    Random,
}

/// The chain key, in zeroizing memory. No `Clone`, no `Display`; `Debug`
/// is redacted.
pub struct ChainKey {
    key: DataKey,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(redacted)")
    }
}

impl ChainKey {
    /// A fresh key from the OS CSPRNG.
    ///
    /// # Errors
    /// [`ChainKeyError::Random`].
    pub fn generate() -> Result<Self, ChainKeyError> {
        let key = DataKey::generate(KeyBits::Aes256).map_err(|_| ChainKeyError::Random)?;
        Ok(ChainKey { key })
    }

    /// Takes 32 key bytes (moved into zeroizing memory).
    fn from_vec(bytes: Vec<u8>, path: &Path) -> Result<Self, ChainKeyError> {
        let unfit = || ChainKeyError::Unfit { path: path.to_owned(), problem: "must hold exactly 32 bytes".to_owned() };
        if bytes.len() != CHAIN_KEY_LEN {
            drop(Zeroizing::new(bytes));
            return Err(unfit());
        }
        let key = DataKey::from_vec(bytes, "audit chain key").map_err(|_| unfit())?;
        Ok(ChainKey { key })
    }

    /// HMAC-SHA256 of `parts`, one after the other, under the key.
    pub(super) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(self.key.expose_secret()) else {
            // HMAC takes a key of any length: this cannot happen.
            return [0; 32];
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Reads a key file an operator exported: exactly 32 bytes, readable
    /// by its owner only.
    ///
    /// # Errors
    /// [`ChainKeyError`] when it cannot be read, is not 32 bytes, or group
    /// or others may read it.
    pub fn read_file(path: &Path) -> Result<Self, ChainKeyError> {
        let io = |source| ChainKeyError::Io { path: path.to_owned(), source };
        let file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ChainKeyError::Unfit {
                path: path.to_owned(),
                problem: format!("mode {:o} lets group or others read the key; run chmod 600 on it", mode & 0o777),
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(CHAIN_KEY_LEN + 1));
        file.take(CHAIN_KEY_LEN as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
        Self::from_vec(std::mem::take(&mut *bytes), path)
    }

    /// Writes the key's bytes to a new file, mode 0600 (an existing file is
    /// never overwritten), for offline review.
    ///
    /// # Errors
    /// [`ChainKeyError::Io`] when the file exists or cannot be written.
    pub fn write_file(&self, path: &Path) -> Result<(), ChainKeyError> {
        write_new(path, self.key.expose_secret())
    }

    /// Unwraps the key KMS wrapped into `wrapped`.
    ///
    /// # Errors
    /// [`ChainKeyError`] when the file cannot be read or KMS refuses.
    pub async fn unwrap_file(kms: &dyn Kms, wrapped: &Path) -> Result<Self, ChainKeyError> {
        let blob = fs::read(wrapped).map_err(|source| ChainKeyError::Io { path: wrapped.to_owned(), source })?;
        let unwrapped = kms
            .unwrap(None, &WrappedKey::new(blob), ServiceContext::AuditChain)
            .await
            .map_err(|source| ChainKeyError::Kms { path: wrapped.to_owned(), source })?;
        if unwrapped.key.bits() != KeyBits::Aes256 {
            return Err(ChainKeyError::Unfit {
                path: wrapped.to_owned(),
                problem: "KMS unwrapped a key that is not 32 bytes".to_owned(),
            });
        }
        Ok(ChainKey { key: unwrapped.key })
    }

    /// The broker's key: unwrapped from `wrapped` when that file exists;
    /// otherwise made fresh, wrapped by KMS under `key_id`, and written
    /// there (mode 0600) before it is used.
    ///
    /// # Errors
    /// [`ChainKeyError`]: the broker must not start without its key.
    pub async fn load_or_create(kms: &dyn Kms, key_id: &KmsKeyId, wrapped: &Path) -> Result<Self, ChainKeyError> {
        if wrapped.exists() {
            let key = Self::unwrap_file(kms, wrapped).await?;
            tracing::info!(path = %wrapped.display(), backend = kms.backend(), "audit chain key unwrapped");
            return Ok(key);
        }
        let key = Self::generate()?;
        let sealed = kms
            .wrap(key_id, &key.key, ServiceContext::AuditChain)
            .await
            .map_err(|source| ChainKeyError::Kms { path: wrapped.to_owned(), source })?;
        write_new(wrapped, sealed.key.as_bytes())?;
        tracing::info!(path = %wrapped.display(), key_arn = %sealed.key_arn, "audit chain key created, wrapped by KMS");
        Ok(key)
    }
}

/// Writes `bytes` to a new file, mode 0600, durable in its directory.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ChainKeyError> {
    let io = |source| ChainKeyError::Io { path: path.to_owned(), source };
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::custody::kms::LocalKeyring;

    /// A fresh key for tests.
    pub(in crate::audit) fn key() -> ChainKey {
        ChainKey::generate().unwrap()
    }

    /// The same key every call, for tests that write with one handle and
    /// verify with another.
    pub(in crate::audit) fn fixed() -> ChainKey {
        ChainKey::from_vec(vec![7; CHAIN_KEY_LEN], Path::new("fixed")).unwrap()
    }

    #[tokio::test]
    async fn the_key_is_created_wrapped_once_and_unwrapped_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open_or_create(&dir.path().join("master.key")).unwrap();
        let id = KmsKeyId::parse("alias/audit", "key").unwrap();
        let wrapped = dir.path().join("audit.chain-key");
        let first = ChainKey::load_or_create(&ring, &id, &wrapped).await.unwrap();
        let blob = fs::read(&wrapped).unwrap();
        assert!(!blob.windows(32).any(|w| w == first.key.expose_secret()), "the key is stored wrapped");
        assert_eq!(fs::metadata(&wrapped).unwrap().permissions().mode() & 0o777, 0o600);
        let again = ChainKey::load_or_create(&ring, &id, &wrapped).await.unwrap();
        assert_eq!(first.mac(&[b"x"]), again.mac(&[b"x"]));
        assert_eq!(fs::read(&wrapped).unwrap(), blob, "an existing key is never replaced");

        // Wrapped under another purpose, the blob does not unwrap as a chain key.
        let data_key = DataKey::generate(KeyBits::Aes256).unwrap();
        let other = ring.wrap(&id, &data_key, ServiceContext::ElasticTranscoder).await.unwrap();
        fs::write(dir.path().join("et.key"), other.key.as_bytes()).unwrap();
        assert!(matches!(
            ChainKey::unwrap_file(&ring, &dir.path().join("et.key")).await,
            Err(ChainKeyError::Kms { .. })
        ));
    }

    #[test]
    fn an_exported_key_file_reads_back_and_must_be_private_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.key");
        let key = key();
        key.write_file(&path).unwrap();
        assert!(key.write_file(&path).is_err(), "an existing file is not overwritten");
        assert_eq!(ChainKey::read_file(&path).unwrap().mac(&[b"y"]), key.mac(&[b"y"]));
        assert_eq!(format!("{key:?}"), "ChainKey(redacted)");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ChainKey::read_file(&path).unwrap_err().to_string().contains("chmod 600"));
        let short = dir.path().join("short.key");
        write_new(&short, &[7; 31]).unwrap();
        assert!(ChainKey::read_file(&short).unwrap_err().to_string().contains("exactly 32 bytes"));
    }
}
