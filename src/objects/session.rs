//! The two directions of an object transfer, fed a piece at a time: an
//! encryption under a fresh key and a decryption under an unwrapped one,
//! behind the [`Session`] trait that the stream and S3 modes both drive.
//!
//! Owns the key of a session from start to drop: checking the grant, making
//! and wrapping the fresh key of an encryption (through [`Broker::seal`]),
//! unwrapping the key of a decryption (through [`Broker::open`]), and
//! dropping the plaintext as soon as the cipher state holds it. Must never
//! log, format, return or persist key bytes: the hand-written `Debug`s show
//! the KMS key and fingerprint only. Knows no S3 and no transport.

use std::fmt;

use crate::custody::broker::{Broker, BrokerError, UnwrapRequest};
use crate::custody::keys::{DataKey, EncryptionBlock, EncryptionMode, Iv16, KeyBits, ServiceContext};
use crate::custody::kms::KmsKeyId;
use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::ledger::{KeyRow, Usage, Wrapping};
use crate::objects::cipher::{Decryptor, Encryptor};
use crate::objects::error::ObjectError;

/// The most bytes fed to a cipher at once, and so (plus one block) the
/// largest chunk a stream answers with: small enough for any gRPC client's
/// default 4 MiB message limit, large enough to amortise per-message costs.
pub const PIECE_LEN: usize = 1 << 20;

/// What an encryption needs: the key to make and how to wrap it.
#[derive(Debug)]
pub struct EncryptParams {
    /// The KMS key; `None` means the server's default.
    pub key_id: Option<KmsKeyId>,
    /// The length of the fresh key.
    pub bits: KeyBits,
    /// The file format.
    pub mode: EncryptionMode,
    /// The context to wrap under.
    pub context: ServiceContext,
}

/// What a decryption needs: the wrapped key, its format and IV.
#[derive(Debug)]
pub struct DecryptParams {
    /// The wrapped key, its `KeyMd5` and context.
    pub key: UnwrapRequest,
    /// The file format.
    pub mode: EncryptionMode,
    /// The IV the file was encrypted with.
    pub iv: Iv16,
}

/// One direction of an object transfer, fed a piece at a time.
pub trait Session: Send + 'static {
    /// What the finished transfer reports.
    type Done: Send;

    /// Transforms `input` and appends what is ready to `out` (at most
    /// `input.len() + 16` bytes).
    ///
    /// # Errors
    /// [`ObjectError::Cipher`] when the cipher refuses the bytes.
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ObjectError>;

    /// Appends the end of the output (at most 16 bytes) and, for a
    /// decryption, authenticates the whole.
    ///
    /// # Errors
    /// [`ObjectError::Cipher`]: truncation, bad padding, a failed tag.
    fn finish(self, out: &mut Vec<u8>) -> Result<Self::Done, ObjectError>;
}

/// An encryption under a fresh key that only its cipher state holds.
pub struct EncryptSession {
    cipher: Encryptor,
    block: EncryptionBlock,
    key_arn: String,
    fingerprint: String,
    context: ServiceContext,
    bits: KeyBits,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
}

impl fmt::Debug for EncryptSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptSession")
            .field("cipher", &self.cipher)
            .field("key_arn", &self.key_arn)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl EncryptSession {
    /// Checks the grant, makes a fresh key and IV and has KMS wrap the key;
    /// the plaintext then lives only in the cipher state.
    ///
    /// # Errors
    /// [`ObjectError::Broker`]: a refusal, no default key, a CSPRNG or KMS
    /// failure.
    pub(super) async fn begin(broker: &Broker, params: EncryptParams, grant: &Grant) -> Result<Self, ObjectError> {
        let key_id = granted_key(broker, &params, grant)?;
        let key = DataKey::generate(params.bits)?;
        let iv = Iv16::generate()?;
        let cipher = Encryptor::new(params.mode, &key, &iv)?;
        let issued = broker.seal(&key_id, &key, params.mode, iv, params.context).await?;
        drop(key);
        Ok(EncryptSession {
            cipher,
            block: issued.block,
            key_arn: issued.key_arn,
            fingerprint: issued.fingerprint,
            context: params.context,
            bits: params.bits,
            plaintext_bytes: 0,
            ciphertext_bytes: 0,
        })
    }

    /// The ARN of the KMS key that wrapped the session's key.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The keyed fingerprint of the wrapped key, as the audit log names it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key ledger's row for the session's key, used as `usage` says.
    pub fn ledger_row(&self, usage: Usage) -> KeyRow {
        let wrapping =
            Wrapping { kms_key_arn: self.key_arn.clone(), context: self.context, key_bits: Some(self.bits.bits()) };
        KeyRow::from_block(self.block.to_text(), wrapping, self.fingerprint.clone(), usage)
    }
}

/// The KMS key an encryption wraps under (the server's default when it
/// names none), once the grant allows it and the key length.
///
/// # Errors
/// [`ObjectError::Broker`]: a refusal, or no key named and no default.
pub(super) fn granted_key(broker: &Broker, params: &EncryptParams, grant: &Grant) -> Result<KmsKeyId, ObjectError> {
    grant.check_key_bits(params.bits)?;
    let key_id =
        params.key_id.clone().or_else(|| broker.settings().default_key.clone()).ok_or(BrokerError::NoDefaultKey)?;
    grant.check_kms_key(key_id.as_str())?;
    Ok(key_id)
}

/// A finished encryption: the ET `Encryption` block and the byte counts.
#[derive(Debug)]
pub struct EncryptedObject {
    /// The ET `Encryption` block (wrapped key, `KeyMd5`, IV, mode).
    pub block: EncryptionBlock,
    /// The ARN of the wrapping KMS key.
    pub key_arn: String,
    /// The keyed fingerprint of the wrapped key.
    pub fingerprint: String,
    /// Plaintext bytes read.
    pub plaintext_bytes: u64,
    /// Ciphertext bytes written.
    pub ciphertext_bytes: u64,
}

impl Session for EncryptSession {
    type Done = EncryptedObject;

    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ObjectError> {
        let before = out.len();
        self.cipher.update(input, out)?;
        self.plaintext_bytes += input.len() as u64;
        self.ciphertext_bytes += (out.len() - before) as u64;
        Ok(())
    }

    fn finish(self, out: &mut Vec<u8>) -> Result<EncryptedObject, ObjectError> {
        let before = out.len();
        self.cipher.finalize(out)?;
        Ok(EncryptedObject {
            block: self.block,
            key_arn: self.key_arn,
            fingerprint: self.fingerprint,
            plaintext_bytes: self.plaintext_bytes,
            ciphertext_bytes: self.ciphertext_bytes + (out.len() - before) as u64,
        })
    }
}

/// A decryption under an unwrapped key that only its cipher state holds.
pub struct DecryptSession {
    cipher: Decryptor,
    key_arn: String,
    fingerprint: String,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
}

impl fmt::Debug for DecryptSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptSession")
            .field("cipher", &self.cipher)
            .field("key_arn", &self.key_arn)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DecryptSession {
    /// Checks the grant, has KMS unwrap the key and keeps it only in the
    /// cipher state.
    ///
    /// # Errors
    /// [`ObjectError::Broker`]: a refusal, a KMS failure, a `KeyMd5`
    /// mismatch.
    pub(super) async fn begin(broker: &Broker, params: DecryptParams, grant: &Grant) -> Result<Self, ObjectError> {
        grant.check_plaintext_export(Rpc::DecryptObject.name())?;
        if let Some(key_id) = &params.key.key_id {
            grant.check_kms_key(key_id.as_str())?;
        }
        let opened = broker.open(params.key, "start.encryption.key_md5").await?;
        grant.check_kms_key(&opened.key_arn)?;
        let cipher = Decryptor::new(params.mode, &opened.key, &params.iv)?;
        Ok(DecryptSession {
            cipher,
            key_arn: opened.key_arn,
            fingerprint: opened.fingerprint,
            plaintext_bytes: 0,
            ciphertext_bytes: 0,
        })
    }

    /// The ARN of the KMS key that had wrapped the session's key.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }
}

/// A finished, authenticated decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptedObject {
    /// Plaintext bytes written.
    pub plaintext_bytes: u64,
    /// Ciphertext bytes read.
    pub ciphertext_bytes: u64,
}

impl Session for DecryptSession {
    type Done = DecryptedObject;

    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ObjectError> {
        let before = out.len();
        self.cipher.update(input, out)?;
        self.ciphertext_bytes += input.len() as u64;
        self.plaintext_bytes += (out.len() - before) as u64;
        Ok(())
    }

    fn finish(self, out: &mut Vec<u8>) -> Result<DecryptedObject, ObjectError> {
        let before = out.len();
        self.cipher.finalize(out)?;
        Ok(DecryptedObject {
            plaintext_bytes: self.plaintext_bytes + (out.len() - before) as u64,
            ciphertext_bytes: self.ciphertext_bytes,
        })
    }
}
