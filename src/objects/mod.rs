//! Whole objects encrypted and decrypted as streams: the sessions behind the
//! `EncryptObject` and `DecryptObject` RPCs, and their S3 mode, in which the
//! broker reads the source object and writes the destination itself.
//!
//! Owns: making and wrapping the fresh key of an encryption (through
//! [`Broker::seal`]), unwrapping the key of a decryption (through
//! [`Broker::open`]), the policy checks of both, and moving an object between
//! S3 locations in constant memory (the source body read a piece at a time,
//! parts of [`ObjectsSettings::part_size`] with at most one upload in flight,
//! a single `PutObject` below one part). The file formats are
//! [`crate::objects::cipher`]'s.
//!
//! Must never log, format, return or persist key bytes: a plaintext key lives
//! only inside a session's cipher state (zeroized on drop) and is dropped as
//! soon as that state exists. Must never make a decryption's output durable
//! before it is authenticated: in S3 mode the destination appears only after
//! the cipher's `finalize` succeeded, and a failed transfer aborts its
//! multipart upload. Knows no protobuf and no `tonic::Status`.

pub mod cipher;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::aws::{SdkFailure, sdk_failure};
use crate::custody::broker::{Broker, BrokerError, UnwrapRequest};
use crate::custody::keys::{
    DataKey, EncryptionBlock, EncryptionMode, Iv16, KeyBits, KeyError, ServiceContext, WrappedKey,
};
use crate::custody::kms::KmsKeyId;
use crate::custody::policy::Grant;
use crate::objects::cipher::{CipherError, Decryptor, Encryptor};

/// The most bytes fed to a cipher at once, and so (plus one block) the
/// largest chunk a stream answers with: small enough for any gRPC client's
/// default 4 MiB message limit, large enough to amortise per-message costs.
pub const PIECE_LEN: usize = 1 << 20;

/// The default S3 part: 8 MiB, well above S3's 5 MiB minimum.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;

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
}

impl Default for ObjectsSettings {
    fn default() -> Self {
        ObjectsSettings {
            force_path_style: false,
            part_size: DEFAULT_PART_SIZE,
            s3_call_timeout: Duration::from_secs(120),
            s3_read_timeout: Duration::from_secs(60),
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

/// An S3 object: a bucket and a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    bucket: String,
    key: String,
}

impl S3Location {
    /// Checks a request's location.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field.bucket` or `field.key`.
    pub fn parse(bucket: &str, key: &str, field: &str) -> Result<Self, KeyError> {
        if bucket.is_empty() || bucket.len() > 255 || bucket.contains('/') {
            return Err(KeyError::invalid(
                format!("{field}.bucket"),
                "must be an S3 bucket name (1 to 255 characters, no '/')",
            ));
        }
        if key.is_empty() || key.len() > 1024 {
            return Err(KeyError::invalid(format!("{field}.key"), "must be an S3 object key of 1 to 1024 bytes"));
        }
        Ok(S3Location { bucket: bucket.to_owned(), key: key.to_owned() })
    }

    /// Reads an `s3://bucket/key` URL; `None` when `text` is no `s3://` URL.
    ///
    /// # Errors
    /// `Some(Err)` when it is one but names no bucket or no key.
    pub fn from_url(text: &str) -> Option<Result<Self, KeyError>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(Self::parse(bucket, key, text))
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// S3 mode: where the broker reads and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Transfer {
    /// The object read.
    pub source: S3Location,
    /// The object written, only once the whole stream succeeded.
    pub destination: S3Location,
}

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

/// Why an object could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A key could not be made, wrapped or unwrapped, or the grant refused.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The cipher refused the bytes: for a decryption, a damaged, truncated
    /// or forged object.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// S3 refused or failed.
    #[error("S3 {operation} {location}: {message}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The object it was about.
        location: S3Location,
        /// What kind of failure.
        kind: S3ErrorKind,
        /// S3's or the transport's words.
        message: String,
    },
    /// The server has no S3 client.
    #[error("S3 mode is not available on this server: {0}")]
    S3Unavailable(&'static str),
    /// The caller went away or broke the stream; the transfer stopped.
    #[error("the transfer was cancelled")]
    Cancelled,
    /// A fault of the broker's.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::custody::policy::Denial> for ObjectError {
    fn from(denial: crate::custody::policy::Denial) -> Self {
        ObjectError::Broker(BrokerError::Denied(denial))
    }
}

impl From<KeyError> for ObjectError {
    fn from(err: KeyError) -> Self {
        ObjectError::Broker(BrokerError::Invalid(err))
    }
}

/// The kinds of S3 failure a caller can act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// No such bucket or object.
    NotFound,
    /// S3 denied the broker access.
    AccessDenied,
    /// Throttling, an outage, a timeout or a broken connection: retry.
    Unavailable,
    /// S3 found the request malformed (a bad bucket name, say).
    Invalid,
    /// Any other refusal.
    Rejected,
}

impl S3ErrorKind {
    fn of(failure: &SdkFailure) -> Self {
        if failure.transport {
            return S3ErrorKind::Unavailable;
        }
        match failure.code.as_deref().unwrap_or("") {
            "NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload" => S3ErrorKind::NotFound,
            "AccessDenied"
            | "AllAccessDisabled"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "AccountProblem"
            | "Forbidden" => S3ErrorKind::AccessDenied,
            "SlowDown"
            | "ServiceUnavailable"
            | "InternalError"
            | "RequestTimeout"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeTooSkewed" => S3ErrorKind::Unavailable,
            "InvalidBucketName" | "KeyTooLongError" | "InvalidArgument" => S3ErrorKind::Invalid,
            _ => S3ErrorKind::Rejected,
        }
    }
}

fn s3_error<E, R>(
    operation: &'static str,
    location: &S3Location,
) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, R>) -> ObjectError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let location = location.clone();
    move |err| {
        let failure = sdk_failure(&err);
        ObjectError::S3 { operation, location, kind: S3ErrorKind::of(&failure), message: failure.message }
    }
}

/// Tells a running S3 transfer to stop, and its multipart upload to be
/// aborted: the caller broke the stream or went away.
#[derive(Debug, Clone)]
pub struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// A token and the switch that fires it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Cancel) {
        let (tx, rx) = watch::channel(false);
        (tx, Cancel(rx))
    }

    /// A token that never fires.
    pub fn never() -> Cancel {
        Cancel(watch::channel(false).1)
    }

    /// Resolves once cancelled; never, if the switch was dropped unfired.
    async fn cancelled(&mut self) {
        if self.0.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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
    /// The ARN of the KMS key that wrapped the session's key.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The keyed fingerprint of the wrapped key, as the audit log names it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
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
        grant.check_key_bits(params.bits)?;
        let key_id =
            params.key_id.or_else(|| self.broker.settings().default_key.clone()).ok_or(BrokerError::NoDefaultKey)?;
        grant.check_kms_key(key_id.as_str())?;
        let key = DataKey::generate(params.bits)?;
        let iv = Iv16::generate()?;
        let cipher = Encryptor::new(params.mode, &key, &iv)?;
        let issued = self.broker.seal(&key_id, &key, params.mode, iv, params.context).await?;
        drop(key);
        Ok(EncryptSession {
            cipher,
            block: issued.block,
            key_arn: issued.key_arn,
            fingerprint: issued.fingerprint,
            plaintext_bytes: 0,
            ciphertext_bytes: 0,
        })
    }

    /// Checks plaintext export, has KMS unwrap the key (its `KeyMd5`
    /// checked) and checks the grant covers the KMS key that wrapped it.
    ///
    /// # Errors
    /// [`ObjectError::Broker`]: export refused (before any KMS call), a KMS
    /// failure, a `KeyMd5` mismatch, a KMS key the caller may not use.
    pub async fn begin_decryption(&self, params: DecryptParams, grant: &Grant) -> Result<DecryptSession, ObjectError> {
        grant.check_plaintext_export("DecryptObject")?;
        if let Some(key_id) = &params.key.key_id {
            grant.check_kms_key(key_id.as_str())?;
        }
        let opened = self.broker.open(params.key, "start.encryption.key_md5").await?;
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

    /// Runs `session` over an S3 object: reads `transfer.source` a piece at a
    /// time and writes `transfer.destination` (one `PutObject` below one
    /// part, a multipart upload otherwise). The destination appears only
    /// after `session` finished without error; on any failure or
    /// cancellation the multipart upload is aborted, so no object appears.
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
    ) -> Result<S::Done, ObjectError> {
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
            Ok((done, last)) => upload.finish(last).await.map(|()| done),
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

/// The part size for a source of `len` bytes: the configured size, grown
/// (in whole MiB) so the object fits in S3's 10,000 parts.
fn part_size_for(configured: usize, len: Option<i64>) -> usize {
    let configured = configured.max(MIN_PART_SIZE);
    let Some(len) = len.and_then(|l| u64::try_from(l).ok()) else {
        return configured;
    };
    // Ciphertext may be one block longer; leave room for it.
    let needed = (len + 32).div_ceil(MAX_PARTS - 1);
    let needed = usize::try_from(needed.div_ceil(1 << 20) << 20).unwrap_or(usize::MAX);
    configured.max(needed)
}

/// A destination being written: nothing until the first full part, then a
/// multipart upload with at most one part in flight.
struct Upload {
    s3: aws_sdk_s3::Client,
    destination: S3Location,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    next_part: i32,
    in_flight: Option<JoinHandle<Result<CompletedPart, ObjectError>>>,
}

impl Upload {
    fn new(s3: aws_sdk_s3::Client, destination: S3Location) -> Self {
        Upload { s3, destination, upload_id: None, parts: Vec::new(), next_part: 1, in_flight: None }
    }

    /// Starts uploading `body` as the next part, once the one before is done.
    async fn send_part(&mut self, body: Vec<u8>) -> Result<(), ObjectError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(self.destination.bucket())
                    .key(self.destination.key())
                    .send()
                    .await
                    .map_err(s3_error("CreateMultipartUpload", &self.destination))?;
                let id = created.upload_id().map(str::to_owned).ok_or_else(|| ObjectError::S3 {
                    operation: "CreateMultipartUpload",
                    location: self.destination.clone(),
                    kind: S3ErrorKind::Rejected,
                    message: "S3 answered no upload id".to_owned(),
                })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        self.wait_in_flight().await?;
        let number = self.next_part;
        self.next_part += 1;
        let request = self
            .s3
            .upload_part()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body));
        let destination = self.destination.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let sent = request.send().await.map_err(s3_error("UploadPart", &destination))?;
            let mut part = CompletedPart::builder().part_number(number);
            if let Some(tag) = sent.e_tag() {
                part = part.e_tag(tag);
            }
            Ok(part.build())
        }));
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), ObjectError> {
        if let Some(handle) = self.in_flight.take() {
            let part = handle.await.map_err(|e| ObjectError::Internal(format!("S3 part upload task: {e}")))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Writes `last` and makes the object appear.
    async fn finish(&mut self, last: Vec<u8>) -> Result<(), ObjectError> {
        let Some(upload_id) = self.upload_id.clone() else {
            self.s3
                .put_object()
                .bucket(self.destination.bucket())
                .key(self.destination.key())
                .body(ByteStream::from(last))
                .send()
                .await
                .map_err(s3_error("PutObject", &self.destination))?;
            return Ok(());
        };
        if !last.is_empty() {
            self.send_part(last).await?;
        }
        self.wait_in_flight().await?;
        let parts = std::mem::take(&mut self.parts);
        self.s3
            .complete_multipart_upload()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(s3_error("CompleteMultipartUpload", &self.destination))?;
        self.upload_id = None;
        Ok(())
    }

    /// Stops the part in flight and aborts the multipart upload, so no
    /// object appears; failures are logged (S3 lifecycle rules reap what
    /// is left).
    async fn abort(&mut self) {
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
            let _ = handle.await;
        }
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let aborted = self
            .s3
            .abort_multipart_upload()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(e) = aborted {
            tracing::error!(
                destination = %self.destination,
                upload_id,
                error = %sdk_failure(&e).message,
                "could not abort the multipart upload; an incomplete upload is left for S3 lifecycle rules"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_bucket_and_key() {
        let location = S3Location::from_url("s3://media/in/clip.mov").unwrap().unwrap();
        assert_eq!((location.bucket(), location.key()), ("media", "in/clip.mov"));
        assert_eq!(location.to_string(), "s3://media/in/clip.mov");
        assert!(S3Location::from_url("/tmp/clip.mov").is_none());
        assert!(S3Location::from_url("s3://media").unwrap().is_err());
        assert!(S3Location::from_url("s3:///key").unwrap().is_err());
    }

    #[test]
    fn part_size_grows_to_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(DEFAULT_PART_SIZE, Some(20 << 20)), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(1, None), MIN_PART_SIZE);
        let huge = 200u64 << 30;
        let size = part_size_for(DEFAULT_PART_SIZE, Some(huge as i64));
        assert!(size > DEFAULT_PART_SIZE && size.is_multiple_of(1 << 20));
        assert!((huge + 16).div_ceil(size as u64) < MAX_PARTS);
    }

    #[test]
    fn s3_codes_map_to_kinds() {
        let failure = |code: &str| SdkFailure { code: Some(code.to_owned()), message: String::new(), transport: false };
        assert_eq!(S3ErrorKind::of(&failure("NoSuchKey")), S3ErrorKind::NotFound);
        assert_eq!(S3ErrorKind::of(&failure("NoSuchBucket")), S3ErrorKind::NotFound);
        assert_eq!(S3ErrorKind::of(&failure("AccessDenied")), S3ErrorKind::AccessDenied);
        assert_eq!(S3ErrorKind::of(&failure("SlowDown")), S3ErrorKind::Unavailable);
        assert_eq!(S3ErrorKind::of(&failure("Whatever")), S3ErrorKind::Rejected);
        let transport = SdkFailure { code: None, message: String::new(), transport: true };
        assert_eq!(S3ErrorKind::of(&transport), S3ErrorKind::Unavailable);
    }
}
