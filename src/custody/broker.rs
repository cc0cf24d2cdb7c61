//! The key-custody domain: issuing, wrapping and unwrapping data keys.
//!
//! Takes parsed domain types (never protobuf) and answers domain results
//! or [`BrokerError`]. Enforces the server-wide plaintext-export switch before
//! any KMS call, so a refused call has no side effect. Keys whose plaintext
//! no one needs again come from the key pool when it holds one
//! ([`Broker::issue_wrapped`]); keys a caller sees in plaintext are always
//! minted on demand. Never logs key bytes.

use std::sync::Arc;
use std::time::Duration;

use crate::custody::fingerprint::Fingerprinter;
use crate::custody::keys::{
    DataKey, EncryptionBlock, EncryptionMode, Iv16, KeyBits, KeyError, KeyMd5Source, ServiceContext, WrappedKey, md5_of,
};
use crate::custody::kms::{Kms, KmsError, KmsKeyId};
use crate::custody::policy::{Denial, Grant};
use crate::custody::pool::{KeyNames, KeyPool, Minter, PoolBatch, PoolKey, PoolSettings, PooledKey};
use crate::custody::rpc::Rpc;
use crate::ledger::Ledger;

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A request field broke a rule.
    #[error(transparent)]
    Invalid(#[from] KeyError),
    /// A malformed key id.
    #[error(transparent)]
    KeyId(#[from] crate::custody::field::FieldError),
    /// The request named no KMS key and the server has no default.
    #[error("kms_key_id: required, because the server has no default KMS key (kms.default_key_id)")]
    NoDefaultKey,
    /// The caller's grant does not cover this (RPC, key, length, export,
    /// rate).
    #[error(transparent)]
    Denied(#[from] Denial),
    /// KMS refused or failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// KMS did not answer within the broker's deadline.
    #[error("KMS {operation} did not answer within {after:?}")]
    KmsDeadline {
        /// The operation.
        operation: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The unwrapped key does not match the block's `KeyMd5`.
    #[error("{field}: does not match the MD5 of the key KMS unwrapped")]
    KeyMd5Mismatch {
        /// The field, e.g. `encryption.key_md5`.
        field: String,
    },
}

/// What the server allows and how it wraps.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The key used when a request names none.
    pub default_key: Option<KmsKeyId>,
    /// What `KeyMd5` digests.
    pub key_md5: KeyMd5Source,
    /// The deadline of one KMS call, however the backend behaves.
    pub kms_deadline: Duration,
}

/// A request for a fresh data key.
#[derive(Debug)]
pub struct IssueRequest {
    /// The KMS key; `None` means the server's default.
    pub key_id: Option<KmsKeyId>,
    /// The key length.
    pub bits: KeyBits,
    /// The AES mode the file will be encrypted in.
    pub mode: EncryptionMode,
    /// Whether to hand back the plaintext too.
    pub return_plaintext: bool,
    /// The context to wrap under.
    pub context: ServiceContext,
}

/// A request to wrap the caller's key material.
#[derive(Debug)]
pub struct WrapRequest {
    /// The KMS key; `None` means the server's default.
    pub key_id: Option<KmsKeyId>,
    /// The caller's key.
    pub key: DataKey,
    /// The AES mode.
    pub mode: EncryptionMode,
    /// The caller's IV, or `None` for a fresh one.
    pub iv: Option<Iv16>,
    /// The context to wrap under.
    pub context: ServiceContext,
}

/// A request to unwrap an `Encryption` block.
#[derive(Debug)]
pub struct UnwrapRequest {
    /// When set, the key that must have wrapped it.
    pub key_id: Option<KmsKeyId>,
    /// The wrapped key.
    pub wrapped: WrappedKey,
    /// The block's `KeyMd5`, checked when present.
    pub key_md5: Option<[u8; 16]>,
    /// The context it was wrapped under.
    pub context: ServiceContext,
}

/// A key the broker wrapped.
#[derive(Debug)]
pub struct IssuedKey {
    /// The ET `Encryption` block.
    pub block: EncryptionBlock,
    /// The ARN of the wrapping key.
    pub key_arn: String,
    /// The plaintext, only when asked and allowed.
    pub plaintext: Option<DataKey>,
    /// The keyed hash of the wrapped key.
    pub fingerprint: String,
}

/// A key KMS wrapped, with its digest and fingerprint.
#[derive(Debug)]
pub struct SealedKey {
    /// The wrapped key.
    pub wrapped: WrappedKey,
    /// The ARN of the wrapping key.
    pub key_arn: String,
    /// The `KeyMd5` digest, per the server's reading.
    pub key_md5: [u8; 16],
    /// The keyed hash of the wrapped key.
    pub fingerprint: String,
}

/// A key the broker unwrapped.
#[derive(Debug)]
pub struct UnwrappedKey {
    /// The plaintext.
    pub key: DataKey,
    /// The ARN of the key that wrapped it.
    pub key_arn: String,
    /// The keyed hash of the wrapped key.
    pub fingerprint: String,
}

/// A key KMS re-encrypted for another KMS key or service context.
#[derive(Debug)]
pub struct RewrappedKey {
    /// The new ciphertext.
    pub wrapped: WrappedKey,
    /// The ARN of the key that wraps it now.
    pub key_arn: String,
    /// The ARN of the key that had wrapped it.
    pub source_key_arn: String,
    /// The block's `KeyMd5` for the new ciphertext.
    pub key_md5: [u8; 16],
    /// The keyed hash of the new ciphertext.
    pub fingerprint: String,
}

/// The custody domain over one KMS backend.
pub struct Broker {
    kms: Arc<dyn Kms>,
    settings: BrokerSettings,
    fingerprints: Arc<Fingerprinter>,
    ledger: Ledger,
    pool: Option<KeyPool>,
}

impl Broker {
    /// A broker over `kms`.
    pub fn new(kms: Arc<dyn Kms>, settings: BrokerSettings, fingerprints: Fingerprinter) -> Self {
        Broker { kms, settings, fingerprints: Arc::new(fingerprints), ledger: Ledger::disabled(), pool: None }
    }

    /// The same broker, keeping pools of wrapped keys for `keys` (and for
    /// no other key) filled ahead of demand. Must be called inside a Tokio
    /// runtime: the pools fill from background tasks.
    #[must_use]
    pub fn with_pool(self, settings: PoolSettings, keys: Vec<PoolKey>) -> Self {
        self.with_named_pool(settings, keys, &[])
    }

    /// [`Broker::with_pool`], with what KMS reported for the configured
    /// keys ([`crate::custody::pool::resolve_names`]): a pool answers to
    /// every name of its KMS key, and keys configured by two names of one
    /// KMS key share one pool.
    #[must_use]
    pub fn with_named_pool(self, settings: PoolSettings, keys: Vec<PoolKey>, names: &[KeyNames]) -> Self {
        let minter = Minter {
            kms: self.kms.clone(),
            fingerprints: self.fingerprints.clone(),
            key_md5: self.settings.key_md5,
            kms_deadline: self.settings.kms_deadline,
        };
        Broker { pool: Some(KeyPool::start(minter, settings, keys, names)), ..self }
    }

    /// The key pools, when the broker keeps any.
    pub fn pool(&self) -> Option<&KeyPool> {
        self.pool.as_ref()
    }

    /// The same broker, recording the keys it hands out in `ledger`.
    #[must_use]
    pub fn with_ledger(self, ledger: Ledger) -> Self {
        Broker { ledger, ..self }
    }

    /// The ledger every key this broker hands out is recorded in before it
    /// leaves.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The KMS backend's name (`aws`, `local`): only keys of `aws` can be
    /// decrypted by a transcoder.
    pub fn kms_backend(&self) -> &'static str {
        self.kms.backend()
    }

    /// The server's settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// The keyed fingerprint of a wrapped key, as the audit log records it.
    pub fn fingerprint(&self, wrapped: &WrappedKey) -> String {
        self.fingerprints.of(wrapped)
    }

    /// The key a request names, or the server's default, if the caller's
    /// grant covers it.
    fn granted_key(&self, key_id: Option<KmsKeyId>, grant: &Grant) -> Result<KmsKeyId, BrokerError> {
        let key = key_id.or_else(|| self.settings.default_key.clone()).ok_or(BrokerError::NoDefaultKey)?;
        grant.check_kms_key(key.as_str())?;
        Ok(key)
    }

    /// Draws a fresh key and IV and has KMS wrap the key.
    ///
    /// # Errors
    /// [`BrokerError`]: plaintext export refused, no key, KMS failure.
    pub async fn issue_data_key(&self, request: IssueRequest, grant: &Grant) -> Result<IssuedKey, BrokerError> {
        if request.return_plaintext {
            grant.check_plaintext_export("return_plaintext")?;
        }
        grant.check_key_bits(request.bits)?;
        let key_id = self.granted_key(request.key_id, grant)?;
        if !request.return_plaintext {
            return self.issue_wrapped(&key_id, request.bits, request.mode, request.context).await;
        }
        let key = DataKey::generate(request.bits)?;
        let iv = Iv16::generate()?;
        let mut issued = self.seal(&key_id, &key, request.mode, iv, request.context).await?;
        issued.plaintext = Some(key);
        Ok(issued)
    }

    /// A fresh key and IV, wrapped under `context`, for a use that never
    /// needs its plaintext again: taken from the key pool when it holds one
    /// for (`key_id`, `context`, `bits`), else minted now. Either way the
    /// key is handed out once, and recorded and audited by the caller.
    ///
    /// # Errors
    /// [`BrokerError`]: the pool is empty and KMS fails.
    pub async fn issue_wrapped(
        &self,
        key_id: &KmsKeyId,
        bits: KeyBits,
        mode: EncryptionMode,
        context: ServiceContext,
    ) -> Result<IssuedKey, BrokerError> {
        if let Some(pooled) = self.pool.as_ref().and_then(|pool| pool.take(key_id, context, bits)) {
            return Ok(issued_from_pool(pooled, mode));
        }
        self.mint_wrapped(key_id, bits, mode, context).await
    }

    /// `count` pooled keys for (`key_id`, `context`, `bits`), all at once,
    /// or `None` (no pool for them, or it holds fewer): then every one of
    /// the `count` keys is minted on demand ([`Broker::mint_wrapped`]).
    /// Keys of a batch dropped before it is marked delivered are discarded.
    pub fn take_pooled(
        &self,
        key_id: &KmsKeyId,
        context: ServiceContext,
        bits: KeyBits,
        count: usize,
    ) -> Option<PoolBatch> {
        self.pool.as_ref().and_then(|pool| pool.take_many(key_id, context, bits, count))
    }

    /// A fresh key and IV wrapped now, never from the pool.
    ///
    /// # Errors
    /// [`BrokerError`]: KMS fails.
    pub async fn mint_wrapped(
        &self,
        key_id: &KmsKeyId,
        bits: KeyBits,
        mode: EncryptionMode,
        context: ServiceContext,
    ) -> Result<IssuedKey, BrokerError> {
        let key = DataKey::generate(bits)?;
        let iv = Iv16::generate()?;
        self.seal(key_id, &key, mode, iv, context).await
    }

    /// Wraps the caller's key material.
    ///
    /// # Errors
    /// [`BrokerError`]: no key, KMS failure.
    pub async fn wrap_key(&self, request: WrapRequest, grant: &Grant) -> Result<IssuedKey, BrokerError> {
        grant.check_key_bits(request.key.bits())?;
        let key_id = self.granted_key(request.key_id, grant)?;
        let iv = match request.iv {
            Some(iv) => iv,
            None => Iv16::generate()?,
        };
        self.seal(&key_id, &request.key, request.mode, iv, request.context).await
    }

    /// Has KMS wrap `key` and assembles its `Encryption` block. The one path
    /// by which every key the broker hands out is wrapped.
    ///
    /// # Errors
    /// [`BrokerError::Kms`] or [`BrokerError::KmsDeadline`].
    pub async fn seal(
        &self,
        key_id: &KmsKeyId,
        key: &DataKey,
        mode: EncryptionMode,
        iv: Iv16,
        context: ServiceContext,
    ) -> Result<IssuedKey, BrokerError> {
        let sealed = self.wrap_raw(key_id, key, context).await?;
        Ok(IssuedKey {
            block: EncryptionBlock { mode, wrapped: sealed.wrapped, key_md5: sealed.key_md5, iv },
            key_arn: sealed.key_arn,
            plaintext: None,
            fingerprint: sealed.fingerprint,
        })
    }

    /// Has KMS wrap `key` and computes its `KeyMd5` and fingerprint, for
    /// blocks that are not ET `Encryption` elements (PlayReady).
    ///
    /// # Errors
    /// [`BrokerError::Kms`] or [`BrokerError::KmsDeadline`].
    pub async fn wrap_raw(
        &self,
        key_id: &KmsKeyId,
        key: &DataKey,
        context: ServiceContext,
    ) -> Result<SealedKey, BrokerError> {
        let wrapped = self.with_deadline("Encrypt", self.kms.wrap(key_id, key, context)).await?;
        Ok(SealedKey {
            key_md5: self.settings.key_md5.digest(key, &wrapped.key),
            fingerprint: self.fingerprints.of(&wrapped.key),
            wrapped: wrapped.key,
            key_arn: wrapped.key_arn,
        })
    }

    /// Has KMS unwrap a key without the plaintext-export check: for uses
    /// that keep the key inside the broker (verifying a caller's block,
    /// decrypting for an allowed caller).
    ///
    /// # Errors
    /// [`BrokerError`]: KMS failure, KeyMd5 mismatch.
    pub async fn open(&self, request: UnwrapRequest, md5_field: &str) -> Result<UnwrappedKey, BrokerError> {
        let unwrapped = self
            .with_deadline("Decrypt", self.kms.unwrap(request.key_id.as_ref(), &request.wrapped, request.context))
            .await?;
        if let Some(expected) = request.key_md5 {
            let actual = match self.settings.key_md5 {
                KeyMd5Source::Plaintext => unwrapped.key.md5(),
                KeyMd5Source::Ciphertext => md5_of(request.wrapped.as_bytes()),
            };
            if actual != expected {
                return Err(BrokerError::KeyMd5Mismatch { field: md5_field.to_owned() });
            }
        }
        Ok(UnwrappedKey {
            fingerprint: self.fingerprints.of(&request.wrapped),
            key: unwrapped.key,
            key_arn: unwrapped.key_arn,
        })
    }

    /// Unwraps a key for export to the caller.
    ///
    /// # Errors
    /// [`BrokerError`]: plaintext export refused, KMS failure, KeyMd5 mismatch.
    pub async fn unwrap_key(&self, request: UnwrapRequest, grant: &Grant) -> Result<UnwrappedKey, BrokerError> {
        grant.check_plaintext_export(Rpc::UnwrapKey.name())?;
        if let Some(key_id) = &request.key_id {
            grant.check_kms_key(key_id.as_str())?;
        }
        let unwrapped = self.open(request, "encryption.key_md5").await?;
        // The key that wrapped it must be one the caller may use.
        grant.check_kms_key(&unwrapped.key_arn)?;
        Ok(unwrapped)
    }

    /// Has KMS re-encrypt `wrapped` from `source` (and, with `source_key`,
    /// only if that key wrapped it) to `destination_key` under
    /// `destination`: the plaintext never enters the broker. `key_md5` is
    /// the block's: the same key has the same digest when `KeyMd5` digests
    /// the plaintext; a ciphertext digest is made anew.
    ///
    /// # Errors
    /// [`BrokerError::Kms`] or [`BrokerError::KmsDeadline`].
    pub async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        (source_key, source): (Option<&KmsKeyId>, ServiceContext),
        (destination_key, destination): (&KmsKeyId, ServiceContext),
        key_md5: [u8; 16],
    ) -> Result<RewrappedKey, BrokerError> {
        let moved = self
            .with_deadline("ReEncrypt", self.kms.rewrap(source_key, wrapped, source, destination_key, destination))
            .await?;
        let key_md5 = match self.settings.key_md5 {
            KeyMd5Source::Plaintext => key_md5,
            KeyMd5Source::Ciphertext => md5_of(moved.key.as_bytes()),
        };
        Ok(RewrappedKey {
            fingerprint: self.fingerprints.of(&moved.key),
            wrapped: moved.key,
            key_arn: moved.key_arn,
            source_key_arn: moved.source_key_arn,
            key_md5,
        })
    }

    async fn with_deadline<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, KmsError>>,
    ) -> Result<T, BrokerError> {
        let after = self.settings.kms_deadline;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(after, call).await {
            Ok(result) => result.map_err(BrokerError::from),
            Err(_) => Err(BrokerError::KmsDeadline { operation, after }),
        };
        crate::app::metrics::record_kms(operation, result.is_ok(), started.elapsed());
        result
    }
}

/// A pooled key as the `Encryption` block of `mode`: the key, IV, KeyMd5
/// and fingerprint made when it was minted.
pub fn issued_from_pool(pooled: PooledKey, mode: EncryptionMode) -> IssuedKey {
    IssuedKey {
        block: EncryptionBlock { mode, wrapped: pooled.wrapped, key_md5: pooled.key_md5, iv: pooled.iv },
        key_arn: pooled.key_arn,
        plaintext: None,
        fingerprint: pooled.fingerprint,
    }
}
