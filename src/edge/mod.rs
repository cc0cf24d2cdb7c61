//! The tonic service: protobuf in, domain out.
//!
//! Parses every request into domain types (each bad field becomes an
//! `INVALID_ARGUMENT` naming it), calls the [`Broker`], and maps results
//! and errors back. The one exhaustive error-to-status mapping lives here.
//! Must never put plaintext key bytes in a status message or a log line.

pub mod conn;
pub mod gate;
pub mod pb;
pub mod rpc;
pub mod shed;
pub mod tls;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::custody::broker::{Broker, BrokerError, IssueRequest, IssuedKey, UnwrapRequest, WrapRequest};
use crate::custody::keys::{
    DataKey, EncryptionMode, Iv16, KeyBits, KeyError, ServiceContext, WrappedKey, decode_base64,
};
use crate::custody::kms::{KmsErrorKind, KmsKeyId};
use crate::jobs::et::error::EtErrorKind;
use crate::jobs::et::{JobError, Transcoder};
use gate::{Facts, Gate, denial_status};
use pb::key_broker_server::KeyBroker;

/// The gRPC face of the broker.
#[derive(Clone)]
pub struct Api {
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    gate: Arc<Gate>,
    objects: Arc<crate::objects::Objects>,
}

impl Api {
    /// Serves `broker` and `transcoder` behind `gate`; object encryption
    /// without S3 mode until [`Api::with_objects`].
    pub fn new(broker: Arc<Broker>, transcoder: Arc<Transcoder>, gate: Arc<Gate>) -> Self {
        let objects = Arc::new(crate::objects::Objects::new(broker.clone(), None, Default::default()));
        Api { broker, transcoder, gate, objects }
    }

    /// Serves `EncryptObject`/`DecryptObject` through `objects` (its S3
    /// client and settings).
    #[must_use]
    pub fn with_objects(mut self, objects: Arc<crate::objects::Objects>) -> Self {
        self.objects = objects;
        self
    }
}

/// A server-streaming response body.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Parses a `ServiceContext` enum value; unknown numbers are refused.
///
/// # Errors
/// [`KeyError::Invalid`] naming `field`.
pub fn parse_context(value: i32, field: &str) -> Result<ServiceContext, KeyError> {
    match pb::ServiceContext::try_from(value) {
        Ok(pb::ServiceContext::Unspecified | pb::ServiceContext::ElasticTranscoder) => {
            Ok(ServiceContext::ElasticTranscoder)
        }
        Ok(pb::ServiceContext::Mediaconvert) => Ok(ServiceContext::MediaConvert),
        Err(_) => Err(KeyError::invalid(
            field,
            format!(
                "unknown service context {value}; use SERVICE_CONTEXT_ELASTIC_TRANSCODER (1) or SERVICE_CONTEXT_MEDIACONVERT (2)"
            ),
        )),
    }
}

/// Parses an optional key id: empty means the server's default.
///
/// # Errors
/// [`BrokerError::KeyId`] naming `field`.
pub fn parse_optional_key_id(text: &str, field: &str) -> Result<Option<KmsKeyId>, BrokerError> {
    if text.is_empty() { Ok(None) } else { Ok(Some(KmsKeyId::parse(text, field)?)) }
}

/// The proto form of a block.
pub fn encryption_to_proto(block: &crate::custody::keys::EncryptionBlock) -> pb::Encryption {
    let text = block.to_text();
    pb::Encryption {
        mode: text.mode,
        key: text.key,
        key_md5: text.key_md5,
        initialization_vector: text.initialization_vector,
    }
}

fn issued_response(issued: IssuedKey) -> pb::IssueDataKeyResponse {
    pb::IssueDataKeyResponse {
        encryption: Some(encryption_to_proto(&issued.block)),
        kms_key_arn: issued.key_arn,
        // Only present when asked and allowed; prost needs an owned copy.
        plaintext_key: issued.plaintext.map(|key| key.expose_secret().to_vec()).unwrap_or_default(),
        key_fingerprint: issued.fingerprint,
    }
}

#[tonic::async_trait]
impl KeyBroker for Api {
    async fn issue_data_key(
        &self,
        request: Request<pb::IssueDataKeyRequest>,
    ) -> Result<Response<pb::IssueDataKeyResponse>, Status> {
        let broker = self.broker.clone();
        self.gate
            .call("IssueDataKey", request, |req, grant| async move {
                let mut facts = Facts::default();
                let result = async {
                    let parsed = IssueRequest {
                        key_id: parse_optional_key_id(&req.kms_key_id, "kms_key_id")?,
                        bits: KeyBits::parse(req.key_bits, "key_bits").map_err(BrokerError::from)?,
                        mode: EncryptionMode::parse_aes(&req.mode, "mode").map_err(BrokerError::from)?,
                        return_plaintext: req.return_plaintext,
                        context: parse_context(req.context, "context").map_err(BrokerError::from)?,
                    };
                    let issued = broker.issue_data_key(parsed, &grant).await?;
                    facts.kms_key_arn.clone_from(&issued.key_arn);
                    facts.key_fingerprints.push(issued.fingerprint.clone());
                    Ok(issued_response(issued))
                }
                .await;
                (result, facts)
            })
            .await
    }

    async fn wrap_key(&self, request: Request<pb::WrapKeyRequest>) -> Result<Response<pb::WrapKeyResponse>, Status> {
        let broker = self.broker.clone();
        self.gate
            .call("WrapKey", request, |req, grant| async move {
                let mut facts = Facts::default();
                let result = async {
                    let iv = if req.initialization_vector.is_empty() {
                        None
                    } else {
                        Some(
                            Iv16::from_slice(&req.initialization_vector, "initialization_vector")
                                .map_err(BrokerError::from)?,
                        )
                    };
                    let parsed = WrapRequest {
                        key_id: parse_optional_key_id(&req.kms_key_id, "kms_key_id")?,
                        mode: EncryptionMode::parse_aes(&req.mode, "mode").map_err(BrokerError::from)?,
                        context: parse_context(req.context, "context").map_err(BrokerError::from)?,
                        iv,
                        key: DataKey::from_vec(req.plaintext_key, "plaintext_key").map_err(BrokerError::from)?,
                    };
                    let issued = broker.wrap_key(parsed, &grant).await?;
                    facts.kms_key_arn.clone_from(&issued.key_arn);
                    facts.key_fingerprints.push(issued.fingerprint.clone());
                    Ok(pb::WrapKeyResponse {
                        encryption: Some(encryption_to_proto(&issued.block)),
                        kms_key_arn: issued.key_arn,
                        key_fingerprint: issued.fingerprint,
                    })
                }
                .await;
                (result, facts)
            })
            .await
    }

    async fn unwrap_key(
        &self,
        request: Request<pb::UnwrapKeyRequest>,
    ) -> Result<Response<pb::UnwrapKeyResponse>, Status> {
        let broker = self.broker.clone();
        self.gate
            .call("UnwrapKey", request, |req, grant| async move {
                let mut facts = Facts::default();
                let result = async {
                    // Refuse before parsing anything else: a denied call learns nothing.
                    grant.check_plaintext_export("UnwrapKey").map_err(BrokerError::from)?;
                    let block = req
                        .encryption
                        .ok_or_else(|| KeyError::invalid("encryption", "required"))
                        .map_err(BrokerError::from)?;
                    let parsed = parse_unwrap(&block, req.context, &req.kms_key_id)?;
                    facts.key_fingerprints.push(broker.fingerprint(&parsed.wrapped));
                    let iv = if block.initialization_vector.is_empty() {
                        Vec::new()
                    } else {
                        decode_base64(&block.initialization_vector, "encryption.initialization_vector")
                            .map_err(BrokerError::from)?
                    };
                    let unwrapped = broker.unwrap_key(parsed, &grant).await?;
                    facts.kms_key_arn.clone_from(&unwrapped.key_arn);
                    Ok(pb::UnwrapKeyResponse {
                        plaintext_key: unwrapped.key.expose_secret().to_vec(),
                        kms_key_arn: unwrapped.key_arn,
                        initialization_vector: iv,
                        key_fingerprint: unwrapped.fingerprint,
                    })
                }
                .await;
                (result, facts)
            })
            .await
    }

    async fn submit_encrypted_job(
        &self,
        request: Request<pb::SubmitEncryptedJobRequest>,
    ) -> Result<Response<pb::SubmitEncryptedJobResponse>, Status> {
        let transcoder = self.transcoder.clone();
        self.gate
            .call("SubmitEncryptedJob", request, |req, grant| async move {
                let mut facts = Facts { pipeline: req.pipeline_id.clone(), ..Facts::default() };
                let result = async {
                    let parsed = rpc::job::job_request_from_proto(req)?;
                    let assembled = transcoder.submit(parsed, &grant).await?;
                    facts.kms_key_arn.clone_from(&assembled.kms_key_arn);
                    facts.job_id = assembled.job_id.clone().unwrap_or_default();
                    facts.key_fingerprints = assembled.protected_files.iter().map(|f| f.fingerprint.clone()).collect();
                    Ok(job_response(assembled))
                }
                .await;
                (result, facts)
            })
            .await
    }

    type EncryptObjectStream = ResponseStream<pb::EncryptObjectResponse>;

    async fn encrypt_object(
        &self,
        request: Request<Streaming<pb::EncryptObjectRequest>>,
    ) -> Result<Response<Self::EncryptObjectStream>, Status> {
        rpc::objects::encrypt_object(self.objects.clone(), self.gate.clone(), request).await
    }

    type DecryptObjectStream = ResponseStream<pb::DecryptObjectResponse>;

    async fn decrypt_object(
        &self,
        request: Request<Streaming<pb::DecryptObjectRequest>>,
    ) -> Result<Response<Self::DecryptObjectStream>, Status> {
        rpc::objects::decrypt_object(self.objects.clone(), self.gate.clone(), request).await
    }
}

fn job_response(assembled: crate::jobs::et::AssembledJob) -> pb::SubmitEncryptedJobResponse {
    pb::SubmitEncryptedJobResponse {
        job_id: assembled.job_id.unwrap_or_default(),
        create_job_request_json: assembled.request_json,
        job_json: assembled.job_json.unwrap_or_default(),
        protected_files: assembled
            .protected_files
            .into_iter()
            .map(|file| pb::ProtectedFile {
                path: file.path,
                object_key: file.object_key,
                encryption: Some(pb::Encryption {
                    mode: file.encryption.mode,
                    key: file.encryption.key,
                    key_md5: file.encryption.key_md5,
                    initialization_vector: file.encryption.initialization_vector,
                }),
                issued_by_broker: file.issued_by_broker,
                key_fingerprint: file.fingerprint,
            })
            .collect(),
        kms_key_arn: assembled.kms_key_arn,
    }
}

/// Parses an `Encryption` block to unwrap.
///
/// # Errors
/// [`BrokerError`] naming the bad field.
pub fn parse_unwrap(block: &pb::Encryption, context: i32, kms_key_id: &str) -> Result<UnwrapRequest, BrokerError> {
    EncryptionMode::parse_aes(&block.mode, "encryption.mode")?;
    if block.key.is_empty() {
        return Err(KeyError::invalid("encryption.key", "required").into());
    }
    let wrapped = WrappedKey::new(decode_base64(&block.key, "encryption.key")?);
    let key_md5 = if block.key_md5.is_empty() {
        None
    } else {
        let digest = decode_base64(&block.key_md5, "encryption.key_md5")?;
        Some(
            <[u8; 16]>::try_from(digest.as_slice())
                .map_err(|_| KeyError::invalid("encryption.key_md5", "must be base64 of a 16-byte MD5 digest"))?,
        )
    };
    Ok(UnwrapRequest {
        key_id: parse_optional_key_id(kms_key_id, "kms_key_id")?,
        wrapped,
        key_md5,
        context: parse_context(context, "context")?,
    })
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        status_of(&err)
    }
}

/// The status of a broker failure: the one exhaustive mapping.
pub fn status_of(err: &BrokerError) -> Status {
    match err {
        BrokerError::Invalid(KeyError::Invalid { .. }) | BrokerError::KeyId(_) | BrokerError::NoDefaultKey => {
            Status::invalid_argument(err.to_string())
        }
        BrokerError::KeyMd5Mismatch { .. } => Status::invalid_argument(err.to_string()),
        BrokerError::Denied(denial) => denial_status(denial),
        BrokerError::KmsDeadline { .. } => Status::unavailable(err.to_string()),
        BrokerError::Kms(kms) => match kms.kind {
            KmsErrorKind::Unavailable => Status::unavailable(err.to_string()),
            KmsErrorKind::KeyUnusable => Status::failed_precondition(err.to_string()),
            KmsErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
            KmsErrorKind::InvalidCiphertext => {
                Status::invalid_argument(format!("encryption.key: KMS could not decrypt it under this context ({err})"))
            }
            KmsErrorKind::Internal => internal(err),
        },
        BrokerError::Invalid(KeyError::Random) => internal(err),
    }
}

impl From<JobError> for Status {
    fn from(err: JobError) -> Self {
        match &err {
            JobError::Invalid(_) => Status::invalid_argument(err.to_string()),
            JobError::Precondition(_) => Status::failed_precondition(err.to_string()),
            JobError::Denied(denial) => denial_status(denial),
            JobError::Key { path, source } => {
                let status = status_of(source);
                Status::new(status.code(), format!("{path}: {}", status.message()))
            }
            JobError::Deadline(_) => Status::deadline_exceeded(err.to_string()),
            JobError::Et(et) => match et.kind {
                EtErrorKind::Unavailable => Status::unavailable(err.to_string()),
                EtErrorKind::NotFound => Status::failed_precondition(err.to_string()),
                EtErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
                EtErrorKind::Rejected => Status::invalid_argument(err.to_string()),
                EtErrorKind::Internal => internal(&err),
            },
            JobError::Serialise(_) => internal(&err),
        }
    }
}

/// An opaque `INTERNAL` for the client, the whole cause in the server log.
pub fn internal(err: &dyn std::error::Error) -> Status {
    let incident = uuid::Uuid::new_v4();
    tracing::error!(%incident, error = %crate::app::aws::error_chain(err), "internal error");
    Status::internal(format!("internal error (incident {incident})"))
}
