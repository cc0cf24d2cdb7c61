//! Whole objects encrypted and decrypted as streams: the sessions behind the
//! `EncryptObject` and `DecryptObject` RPCs, and their S3 mode, in which the
//! broker reads the source object and writes the destination itself.
//!
//! Owns the public face of the wing: [`Objects`] (which begins sessions and
//! runs S3 transfers), its [`ObjectsSettings`] and S3 client, and the
//! re-exports callers name as `crate::objects::X`. The parts live beside it:
//! [`session`] (the keys and the two directions), [`s3`] (locations,
//! cancellation, failure kinds), `upload` (the multipart upload),
//! [`error`] and [`cipher`] (the file formats). An S3 transfer moves an
//! object in constant memory: the source body read a piece at a time, parts
//! of [`ObjectsSettings::part_size`] with at most one upload in flight, a
//! single `PutObject` below one part.
//!
//! Must never log, format, return or persist key bytes (the sessions hold
//! them only inside their cipher state). Must never make a decryption's
//! output durable before it is authenticated: in S3 mode the destination
//! appears only after the session's `finish` succeeded, and a failed
//! transfer aborts its multipart upload. Knows no protobuf and no
//! `tonic::Status`.

pub mod cipher;
pub mod error;
pub mod idempotent;
pub mod s3;
pub mod session;
mod upload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

pub use self::error::ObjectError;
pub use self::idempotent::{EncryptResult, TokenClaim, TokenStart};
pub use self::s3::{Cancel, S3ErrorKind, S3Location, S3Transfer, StoredObject};
pub use self::session::{
    DecryptParams, DecryptSession, DecryptedObject, EncryptParams, EncryptSession, EncryptedObject, PIECE_LEN, Session,
};
pub use self::upload::{DEFAULT_PART_SIZE, MIN_PART_SIZE};
use self::upload::{Upload, part_size_for, s3_error};
use crate::custody::broker::Broker;
use crate::custody::keys::WrappedKey;
use crate::custody::policy::Grant;
use crate::ledger::RequestToken;

/// How the broker reaches S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectsSettings {
    /// Path-style addressing (`endpoint/bucket/key`), which local S3
    /// implementations such as moto need; AWS wants virtual-hosted style.
    pub force_path_style: bool,
    /// The multipart part size, at least [`MIN_PART_SIZE`]; grown for
    /// sources that would need more than 10,000 parts.
    pub part_size: usize,
    /// The deadline of one S3 request attempt (a part upload included).
    pub s3_call_timeout: Duration,
    /// The longest wait for the next bytes of a source object's body.
    pub s3_read_timeout: Duration,
    /// How long an S3-mode encryption holds its request token before
    /// another call may take it over: longer than any call may run.
    pub token_lease: Duration,
}

impl Default for ObjectsSettings {
    fn default() -> Self {
        ObjectsSettings {
            force_path_style: false,
            part_size: DEFAULT_PART_SIZE,
            s3_call_timeout: Duration::from_secs(120),
            s3_read_timeout: Duration::from_secs(60),
            token_lease: Duration::from_secs(3660),
        }
    }
}

impl ObjectsSettings {
    /// The settings the `[s3]` configuration section names.
    pub fn from_config(s3: &crate::app::config::S3Config) -> Self {
        ObjectsSettings {
            force_path_style: s3.force_path_style,
            part_size: s3.part_size_mib.max(5) * 1024 * 1024,
            s3_call_timeout: Duration::from_millis(s3.call_timeout_ms),
            s3_read_timeout: Duration::from_millis(s3.read_timeout_ms),
            ..ObjectsSettings::default()
        }
    }
}

/// An S3 client from the shared SDK configuration (so `AWS_ENDPOINT_URL_S3`
/// and `AWS_ENDPOINT_URL` are honoured), with path-style addressing as
/// `settings` say and deadlines sized for part uploads rather than KMS calls.
pub fn s3_client(sdk: &aws_config::SdkConfig, settings: &ObjectsSettings) -> aws_sdk_s3::Client {
    let mut timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(settings.s3_call_timeout)
        .operation_timeout(settings.s3_call_timeout.saturating_mul(3));
    if let Some(connect) = sdk.timeout_config().and_then(|t| t.connect_timeout()) {
        timeouts = timeouts.connect_timeout(connect);
    }
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(settings.force_path_style)
        .timeout_config(timeouts.build())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Object encryption and decryption over one broker, and S3 when the server
/// has a client for it.
pub struct Objects {
    broker: Arc<Broker>,
    s3: Option<aws_sdk_s3::Client>,
    settings: ObjectsSettings,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects").field("s3", &self.s3.is_some()).field("settings", &self.settings).finish()
    }
}

impl Objects {
    /// Sessions over `broker`; S3 mode through `s3` (`None`: S3 mode is
    /// refused with a message saying why).
    pub fn new(broker: Arc<Broker>, s3: Option<aws_sdk_s3::Client>, settings: ObjectsSettings) -> Self {
        Objects { broker, s3, settings }
    }

    /// The key ledger sessions record their keys in.
    pub fn ledger(&self) -> &crate::ledger::Ledger {
        self.broker.ledger()
    }

    /// The keyed fingerprint of a wrapped key, for the audit record of a
    /// call that fails before its key is unwrapped.
    pub fn fingerprint(&self, wrapped: &WrappedKey) -> String {
        self.broker.fingerprint(wrapped)
    }

    /// Checks the grant, draws a fresh key and IV, and has KMS wrap the key;
    /// the plaintext key then lives only in the session's cipher state.
    ///
    /// # Errors
    /// [`ObjectError::Broker`]: the grant refuses the key length or KMS key,
    /// no key was named and the server has none, the CSPRNG or KMS failed.
    pub async fn begin_encryption(&self, params: EncryptParams, grant: &Grant) -> Result<EncryptSession, ObjectError> {
        EncryptSession::begin(&self.broker, params, grant).await
    }

    /// Claims the request token of an S3-mode encryption for the caller
    /// `identity`, once the grant allows the key asked for: the call runs
    /// when it now holds the token, and a repeat of a finished call gets
    /// its recorded result.
    ///
    /// # Errors
    /// [`ObjectError::TokenReused`] (the token was used for another
    /// request), [`ObjectError::TokenInFlight`] (the first call is still
    /// running), a refusal of the grant, [`ObjectError::Ledger`].
    pub async fn claim_token(
        &self,
        identity: &str,
        token: RequestToken,
        params: &EncryptParams,
        transfer: &S3Transfer,
        grant: &Grant,
    ) -> Result<TokenStart, ObjectError> {
        session::granted_key(&self.broker, params, grant)?;
        let hash = idempotent::request_hash(params, transfer);
        idempotent::claim(self.ledger(), identity, token, &hash, self.settings.token_lease).await
    }

    /// Records what S3 answered for the object written under the key the
    /// ledger entry `entry_id` recorded, and the result as the answer of
    /// `claim`'s token; a failure is logged (the object and its key row
    /// exist).
    pub async fn record_stored(
        &self,
        entry_id: &str,
        transfer: &S3Transfer,
        result: &EncryptResult,
        claim: Option<TokenClaim>,
    ) {
        idempotent::record_stored(self.ledger(), entry_id, transfer, result, claim).await;
    }

    /// Checks plaintext export, has KMS unwrap the key (its `KeyMd5`
    /// checked) and checks the grant covers the KMS key that wrapped it.
    ///
    /// # Errors
    /// [`ObjectError::Broker`]: export refused (before any KMS call), a KMS
    /// failure, a `KeyMd5` mismatch, a KMS key the caller may not use.
    pub async fn begin_decryption(&self, params: DecryptParams, grant: &Grant) -> Result<DecryptSession, ObjectError> {
        DecryptSession::begin(&self.broker, params, grant).await
    }

    /// Runs `session` over an S3 object: reads `transfer.source` a piece at a
    /// time and writes `transfer.destination` (one `PutObject` below one
    /// part, a multipart upload otherwise). The destination appears only
    /// after `session` finished without error; on any failure or
    /// cancellation the multipart upload is aborted, so no object appears.
    /// Answers the session's report and what S3 answered for the object.
    ///
    /// # Errors
    /// [`ObjectError::S3`] naming the operation and location,
    /// [`ObjectError::Cipher`] for a damaged object,
    /// [`ObjectError::Cancelled`], [`ObjectError::S3Unavailable`].
    pub async fn transfer_s3<S: Session>(
        &self,
        session: S,
        transfer: &S3Transfer,
        mut cancel: Cancel,
    ) -> Result<(S::Done, StoredObject), ObjectError> {
        let s3 = self.s3.as_ref().ok_or(ObjectError::S3Unavailable(
            "the server has no AWS SDK configuration (it loads one when kms.backend = aws or transcoder.submit is on)",
        ))?;
        let source = &transfer.source;
        let object = tokio::select! {
            got = s3.get_object().bucket(source.bucket()).key(source.key()).send() => {
                got.map_err(s3_error("GetObject", source))?
            }
            () = cancel.cancelled() => return Err(ObjectError::Cancelled),
        };
        let part_size = part_size_for(self.settings.part_size, object.content_length);
        let mut upload = Upload::new(s3.clone(), transfer.destination.clone());
        let pumped = self.pump(session, object.body, source, part_size, &mut upload, &mut cancel).await;
        let result = match pumped {
            Ok((done, last)) => upload.finish(last).await.map(|stored| (done, stored)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            upload.abort().await;
        }
        result
    }

    /// Moves the body through `session` into parts; answers the session's
    /// report and the last, partial part (not yet written anywhere).
    async fn pump<S: Session>(
        &self,
        mut session: S,
        mut body: ByteStream,
        source: &S3Location,
        part_size: usize,
        upload: &mut Upload,
        cancel: &mut Cancel,
    ) -> Result<(S::Done, Vec<u8>), ObjectError> {
        let new_part = || Vec::with_capacity(part_size + PIECE_LEN + 2 * crate::objects::cipher::BLOCK_LEN);
        let mut part = new_part();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.settings.s3_read_timeout, body.next()) => next,
                () = cancel.cancelled() => return Err(ObjectError::Cancelled),
            };
            let bytes = match next {
                Err(_) => {
                    return Err(ObjectError::S3 {
                        operation: "GetObject",
                        location: source.clone(),
                        kind: S3ErrorKind::Unavailable,
                        message: format!("no bytes of the body within {:?}", self.settings.s3_read_timeout),
                    });
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ObjectError::S3 {
                        operation: "GetObject",
                        location: source.clone(),
                        kind: S3ErrorKind::Unavailable,
                        message: format!("reading the body: {}", crate::app::aws::error_chain(&e)),
                    });
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            for piece in bytes.chunks(PIECE_LEN) {
                session.update(piece, &mut part)?;
                if part.len() >= part_size {
                    upload.send_part(std::mem::replace(&mut part, new_part())).await?;
                }
            }
        }
        let done = session.finish(&mut part)?;
        Ok((done, part))
    }
}
