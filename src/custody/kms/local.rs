//! The `local` backend: an embedded keyring, so the broker runs its main job
//! with no AWS account.
//!
//! A 256-bit master key lives in a file created with mode 0600 on first start.
//! Each KMS key id names a key-encryption key derived from it with HKDF-SHA256
//! (info: the key's ARN), and data keys are wrapped with AES-256-GCM under a
//! fresh 96-bit nonce, the encryption context bound as associated data.
//!
//! Ciphertext layout, version 1 (all integers big-endian):
//!
//! ```text
//! "KBL" | 0x01 | arn_len: u16 | arn | nonce: 12 bytes | AES-256-GCM(data key) || tag: 16 bytes
//! ```
//!
//! The associated data is everything before the nonce followed by the
//! context's entries, sorted, each as `len(k) k len(v) v` with u16 lengths.
//! Elastic Transcoder cannot decrypt keys wrapped here: use it for development,
//! tests and offline use, never for jobs that real ET must read.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::backend::{Described, Kms, KmsError, KmsErrorKind, Rewrapped, Unwrapped, Wrapped};
use super::key::KmsKeyId;
use crate::custody::keys::{DataKey, ServiceContext, WrappedKey};

const MAGIC: &[u8; 3] = b"KBL";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HKDF_SALT: &[u8] = b"keybroker-local-keyring-v1";
/// The region and account local ARNs carry.
pub const LOCAL_ARN_PREFIX: &str = "arn:aws:kms:local:000000000000:";

/// Errors opening the keyring's master key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be created, read or checked.
    #[error("local keyring {path}: {source}")]
    Io {
        /// The master key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a 32-byte key, or others may read it.
    #[error("local keyring {path}: {problem}")]
    Unfit {
        /// The master key file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The embedded keyring.
pub struct LocalKeyring {
    master: Zeroizing<[u8; 32]>,
    /// Key-encryption keys already derived, by ARN (their key schedules are
    /// zeroized on drop). Bounded: past this many ARNs, keys are derived per
    /// call and not kept.
    keks: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<Aes256Gcm>>>,
}

/// Most derived key-encryption keys kept.
const MAX_CACHED_KEKS: usize = 1024;

impl LocalKeyring {
    /// Opens the master key at `path`, creating it (mode 0600, parent
    /// directories 0700) with 32 bytes from the OS CSPRNG if it is missing.
    ///
    /// # Errors
    /// [`KeyringError`] when the file cannot be made or read, is not exactly
    /// 32 bytes, or is readable by group or others.
    pub fn open_or_create(path: &Path) -> Result<Self, KeyringError> {
        let io = |source| KeyringError::Io { path: path.to_owned(), source };
        let unfit = |problem: String| KeyringError::Unfit { path: path.to_owned(), problem };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(mut file) => {
                let mut master = Zeroizing::new([0u8; 32]);
                getrandom::fill(master.as_mut())
                    .map_err(|e| unfit(format!("the OS random number generator failed: {e}")))?;
                file.write_all(master.as_ref()).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "created a new local keyring master key");
                return Ok(LocalKeyring { master, keks: Default::default() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(unfit(format!(
                "mode {:o} lets group or others read the master key; run chmod 600 on it",
                mode & 0o777
            )));
        }
        let mut master = Zeroizing::new([0u8; 32]);
        let mut extra = [0u8; 1];
        file.read_exact(master.as_mut()).map_err(|_| unfit("must hold exactly 32 bytes".to_owned()))?;
        if file.read(&mut extra).map_err(io)? != 0 {
            return Err(unfit("must hold exactly 32 bytes".to_owned()));
        }
        Ok(LocalKeyring { master, keks: Default::default() })
    }

    /// The ARN a key id names in this keyring: ARNs stand as given, alias
    /// names and bare ids get the local region and account.
    pub fn resolve(key_id: &KmsKeyId) -> String {
        let id = key_id.as_str();
        if id.starts_with("arn:") {
            id.to_owned()
        } else if id.starts_with("alias/") {
            format!("{LOCAL_ARN_PREFIX}{id}")
        } else {
            format!("{LOCAL_ARN_PREFIX}key/{id}")
        }
    }

    fn cipher_for(&self, arn: &str) -> Result<std::sync::Arc<Aes256Gcm>, KmsError> {
        if let Some(cipher) = self.keks.read().ok().and_then(|keks| keks.get(arn).cloned()) {
            return Ok(cipher);
        }
        let cipher = std::sync::Arc::new(self.derive(arn)?);
        if let Ok(mut keks) = self.keks.write()
            && keks.len() < MAX_CACHED_KEKS
        {
            keks.insert(arn.to_owned(), cipher.clone());
        }
        Ok(cipher)
    }

    fn derive(&self, arn: &str) -> Result<Aes256Gcm, KmsError> {
        let mut kek = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(HKDF_SALT), self.master.as_ref())
            .expand(arn.as_bytes(), kek.as_mut())
            .map_err(|_| KmsError::new("DeriveKey", KmsErrorKind::Internal, "HKDF output length"))?;
        Aes256Gcm::new_from_slice(kek.as_ref())
            .map_err(|_| KmsError::new("DeriveKey", KmsErrorKind::Internal, "key length"))
    }
}

fn header(arn: &str) -> Result<Vec<u8>, KmsError> {
    let len = u16::try_from(arn.len())
        .map_err(|_| KmsError::new("Encrypt", KmsErrorKind::KeyUnusable, "key ARN longer than 65535 bytes"))?;
    let mut out = Vec::with_capacity(6 + arn.len() + NONCE_LEN + 32 + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(arn.as_bytes());
    Ok(out)
}

fn associated_data(header: &[u8], context: ServiceContext) -> Vec<u8> {
    let mut entries: Vec<_> = context.encryption_context().into_iter().collect();
    entries.sort();
    let mut aad = header.to_vec();
    for (k, v) in entries {
        for part in [k, v] {
            aad.extend_from_slice(&(part.len() as u16).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
    }
    aad
}

fn invalid(message: &str) -> KmsError {
    KmsError::new("Decrypt", KmsErrorKind::InvalidCiphertext, message)
}

#[async_trait]
impl Kms for LocalKeyring {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn describe(&self, key_id: &KmsKeyId) -> Result<Described, KmsError> {
        // A name and the ARN it resolves to are one key of this keyring.
        Ok(Described { arn: Self::resolve(key_id), names: vec![key_id.as_str().to_owned()] })
    }

    async fn wrap(&self, key_id: &KmsKeyId, plaintext: &DataKey, context: ServiceContext) -> Result<Wrapped, KmsError> {
        let arn = Self::resolve(key_id);
        let mut blob = header(&arn)?;
        let aad = associated_data(&blob, context);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|_| KmsError::new("Encrypt", KmsErrorKind::Internal, "the OS random number generator failed"))?;
        let sealed = self
            .cipher_for(&arn)?
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.expose_secret(), aad: &aad })
            .map_err(|_| KmsError::new("Encrypt", KmsErrorKind::Internal, "AES-GCM sealing failed"))?;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(Wrapped { key: WrappedKey::new(blob), key_arn: arn })
    }

    async fn unwrap(
        &self,
        key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        context: ServiceContext,
    ) -> Result<Unwrapped, KmsError> {
        let blob = wrapped.as_bytes();
        if blob.len() < 6 || &blob[..3] != MAGIC {
            return Err(invalid("not a local keyring ciphertext"));
        }
        if blob[3] != VERSION {
            return Err(invalid("unknown local keyring ciphertext version"));
        }
        let arn_len = u16::from_be_bytes([blob[4], blob[5]]) as usize;
        let body_at = 6 + arn_len;
        if blob.len() < body_at + NONCE_LEN + TAG_LEN + 16 {
            return Err(invalid("ciphertext too short"));
        }
        let arn = std::str::from_utf8(&blob[6..body_at]).map_err(|_| invalid("key ARN is not UTF-8"))?;
        if let Some(expected) = key_id
            && Self::resolve(expected) != arn
        {
            return Err(KmsError::new(
                "Decrypt",
                KmsErrorKind::KeyUnusable,
                format!("IncorrectKeyException: the ciphertext was wrapped by {arn}, not {expected}"),
            ));
        }
        let aad = associated_data(&blob[..body_at], context);
        let nonce = <[u8; NONCE_LEN]>::try_from(&blob[body_at..body_at + NONCE_LEN])
            .map_err(|_| invalid("ciphertext too short"))?;
        let plaintext = self
            .cipher_for(arn)?
            .decrypt(&Nonce::from(nonce), Payload { msg: &blob[body_at + NONCE_LEN..], aad: &aad })
            .map_err(|_| invalid("InvalidCiphertextException: authentication failed (wrong context, key or bytes)"))?;
        let key = DataKey::from_vec(plaintext, "encryption.key").map_err(|_| invalid("not an AES key"))?;
        Ok(Unwrapped { key, key_arn: arn.to_owned() })
    }

    /// KMS `ReEncrypt` for the keyring: the key is opened and sealed again
    /// inside the keyring, in zeroizing memory dropped before this returns.
    async fn rewrap(
        &self,
        source_key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        source: ServiceContext,
        destination_key_id: &KmsKeyId,
        destination: ServiceContext,
    ) -> Result<Rewrapped, KmsError> {
        let rename = |e: KmsError| KmsError { operation: "ReEncrypt", ..e };
        let opened = self.unwrap(source_key_id, wrapped, source).await.map_err(rename)?;
        let sealed = self.wrap(destination_key_id, &opened.key, destination).await.map_err(rename)?;
        Ok(Rewrapped { key: sealed.key, source_key_arn: opened.key_arn, key_arn: sealed.key_arn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::keys::KeyBits;

    fn keyring() -> (tempfile::TempDir, LocalKeyring) {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open_or_create(&dir.path().join("sub/master.key")).unwrap();
        (dir, ring)
    }

    #[test]
    fn master_key_file_is_private_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/master.key");
        LocalKeyring::open_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        LocalKeyring::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyring::open_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[tokio::test]
    async fn wraps_round_trip_only_under_the_same_context_and_key() {
        let (_dir, ring) = keyring();
        let id = KmsKeyId::parse("alias/media", "kms_key_id").unwrap();
        let key = DataKey::generate(KeyBits::Aes192).unwrap();
        let wrapped = ring.wrap(&id, &key, ServiceContext::ElasticTranscoder).await.unwrap();
        assert_eq!(wrapped.key_arn, "arn:aws:kms:local:000000000000:alias/media");
        let back = ring.unwrap(Some(&id), &wrapped.key, ServiceContext::ElasticTranscoder).await.unwrap();
        assert_eq!(back.key.expose_secret(), key.expose_secret());

        let wrong_context = ring.unwrap(None, &wrapped.key, ServiceContext::MediaConvert).await;
        assert_eq!(wrong_context.unwrap_err().kind, KmsErrorKind::InvalidCiphertext);
        let other = KmsKeyId::parse("alias/other", "kms_key_id").unwrap();
        let wrong_key = ring.unwrap(Some(&other), &wrapped.key, ServiceContext::ElasticTranscoder).await;
        assert_eq!(wrong_key.unwrap_err().kind, KmsErrorKind::KeyUnusable);

        let mut tampered = wrapped.key.as_bytes().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let bad = ring.unwrap(None, &WrappedKey::new(tampered), ServiceContext::ElasticTranscoder).await;
        assert_eq!(bad.unwrap_err().kind, KmsErrorKind::InvalidCiphertext);
    }

    #[tokio::test]
    async fn a_rewrapped_key_opens_only_under_its_new_key_and_context() {
        let (_dir, ring) = keyring();
        let (from, to) =
            (KmsKeyId::parse("alias/et", "k").unwrap(), KmsKeyId::parse("alias/mediaconvert", "k").unwrap());
        let key = DataKey::generate(KeyBits::Aes256).unwrap();
        let wrapped = ring.wrap(&from, &key, ServiceContext::ElasticTranscoder).await.unwrap();
        let moved = ring
            .rewrap(Some(&from), &wrapped.key, ServiceContext::ElasticTranscoder, &to, ServiceContext::MediaConvert)
            .await
            .unwrap();
        assert_eq!(moved.source_key_arn, wrapped.key_arn);
        assert_eq!(moved.key_arn, "arn:aws:kms:local:000000000000:alias/mediaconvert");
        let back = ring.unwrap(Some(&to), &moved.key, ServiceContext::MediaConvert).await.unwrap();
        assert_eq!(back.key.expose_secret(), key.expose_secret());
        let old_context = ring.unwrap(None, &moved.key, ServiceContext::ElasticTranscoder).await.unwrap_err();
        assert_eq!(old_context.kind, KmsErrorKind::InvalidCiphertext);

        let wrong_source = ring
            .rewrap(None, &wrapped.key, ServiceContext::MediaConvert, &to, ServiceContext::MediaConvert)
            .await
            .unwrap_err();
        assert_eq!((wrong_source.operation, wrong_source.kind), ("ReEncrypt", KmsErrorKind::InvalidCiphertext));
    }
}
