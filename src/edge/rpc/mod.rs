//! One file per RPC: each parses its protobuf request into domain types
//! (a bad field is `INVALID_ARGUMENT` naming it), calls the domain through
//! the [`gate`](crate::edge::gate), and maps the answer back. Before any
//! parsing, every string and bytes field is held to its length limit
//! ([`bounds`]). This file holds the parsing the RPCs share.

pub mod bounds;
pub mod check_mediaconvert_role;
pub mod check_pipeline;
pub mod connect_mediaconvert_role;
pub mod connect_pipeline;
pub mod decrypt_object;
pub mod encrypt_object;
pub mod issue_data_key;
pub mod job;
pub mod lookup_keys;
pub mod object_stream;
pub mod rewrap_keys;
pub mod submit_encrypted_job;
pub mod submit_mediaconvert_job;
pub mod unwrap_key;
pub mod wrap_key;

use crate::custody::broker::{Broker, BrokerError, IssuedKey, UnwrapRequest};
use crate::custody::keys::{
    EncryptionBlock, EncryptionMode, KeyBits, KeyError, ServiceContext, WrappedKey, decode_base64,
};
use crate::custody::kms::KmsKeyId;
use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Notes;
use crate::edge::pb;
use crate::ledger::{KeyRow, LedgerError, Origin, Usage, Wrapping};

/// Who is making the call, as the key ledger records it.
pub fn origin(rpc: Rpc, grant: &Grant, notes: &Notes) -> Origin {
    Origin { identity: grant.identity.clone(), rpc, request_id: notes.request_id().to_owned() }
}

/// Records a key the call hands its caller alone, durable before the
/// answer leaves.
///
/// # Errors
/// [`LedgerError`]: the call must fail and release nothing.
pub async fn record_issued(
    broker: &Broker,
    origin: &Origin,
    issued: &IssuedKey,
    context: ServiceContext,
    bits: KeyBits,
) -> Result<(), LedgerError> {
    let wrapping = Wrapping { kms_key_arn: issued.key_arn.clone(), context, key_bits: Some(bits.bits()) };
    let row = KeyRow::from_block(issued.block.to_text(), wrapping, issued.fingerprint.clone(), Usage::Unattached);
    broker.ledger().record(origin, vec![row]).await.map(drop)
}

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
pub fn encryption_to_proto(block: &EncryptionBlock) -> pb::Encryption {
    let text = block.to_text();
    pb::Encryption {
        mode: text.mode,
        key: text.key,
        key_md5: text.key_md5,
        initialization_vector: text.initialization_vector,
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
