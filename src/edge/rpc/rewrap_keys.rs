//! `RewrapKeys`: recorded keys, or blocks the caller holds, re-encrypted by
//! KMS to another KMS key and/or service context, the new blocks recorded
//! and linked to the old ones. This file parses the request and maps the
//! answer; [`crate::custody::records::rewrap`] does the work.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds::{self, Fields, Limit, Walk};
use super::lookup_keys::{parse_selector, recorded_to_proto};
use super::{origin, parse_context, parse_optional_key_id};
use crate::custody::broker::Broker;
use crate::custody::field::FieldError;
use crate::custody::keys::{EncryptionText, WrappedKey, decode_base64};
use crate::custody::records::{self, GivenBlock, MAX_GIVEN_BLOCKS, Rewrap, Sources};
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;

impl Fields for pb::RewrapKeysRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.message("recorded", self.recorded.as_mut());
        walk.messages("blocks", &mut self.blocks);
        walk.text("source_kms_key_id", Limit::KmsKeyId, &mut self.source_kms_key_id);
        walk.text("destination_kms_key_id", Limit::KmsKeyId, &mut self.destination_kms_key_id);
    }
}

/// Parses one block the caller passes: an AES mode, a wrapped key and its
/// `KeyMd5` are required; the IV is carried as given.
fn parse_block(block: &pb::Encryption, at: &str) -> Result<GivenBlock, FieldError> {
    let invalid = |e: crate::custody::keys::KeyError| FieldError::new(at, e.to_string());
    crate::custody::keys::EncryptionMode::parse_aes(&block.mode, &format!("{at}.mode")).map_err(invalid)?;
    if block.key.is_empty() {
        return Err(FieldError::new(format!("{at}.key"), "required: the wrapped key to move"));
    }
    let wrapped = WrappedKey::new(decode_base64(&block.key, &format!("{at}.key")).map_err(invalid)?);
    let digest = decode_base64(&block.key_md5, &format!("{at}.key_md5")).map_err(invalid)?;
    let key_md5 = <[u8; 16]>::try_from(digest.as_slice())
        .map_err(|_| FieldError::new(format!("{at}.key_md5"), "required: base64 of the key's 16-byte MD5 digest"))?;
    if !block.initialization_vector.is_empty() {
        decode_base64(&block.initialization_vector, &format!("{at}.initialization_vector")).map_err(invalid)?;
    }
    let text = EncryptionText {
        mode: block.mode.clone(),
        key: block.key.clone(),
        key_md5: block.key_md5.clone(),
        initialization_vector: block.initialization_vector.clone(),
    };
    Ok(GivenBlock { text, wrapped, key_md5 })
}

/// A field's refusal.
fn bad(err: impl std::fmt::Display) -> Status {
    Status::invalid_argument(err.to_string())
}

/// Parses the whole request before anything is looked up or re-encrypted.
fn parse(req: &pb::RewrapKeysRequest) -> Result<Rewrap, Status> {
    let destination_key = parse_optional_key_id(&req.destination_kms_key_id, "destination_kms_key_id")?;
    let destination_context = parse_context(req.destination_context, "destination_context").map_err(bad)?;
    let sources = match (&req.recorded, req.blocks.as_slice()) {
        (Some(_), [_, ..]) => return Err(bad(FieldError::new("blocks", "give either recorded or blocks, not both"))),
        (None, []) => return Err(bad(FieldError::new("recorded", "required: the recorded keys to move, or blocks"))),
        (Some(recorded), []) => {
            if !req.source_kms_key_id.is_empty() {
                return Err(bad(FieldError::new(
                    "source_kms_key_id",
                    "only for blocks: recorded keys name the key that wrapped them",
                )));
            }
            Sources::Recorded(parse_selector(recorded, "recorded").map_err(bad)?)
        }
        (None, blocks) => {
            if blocks.len() > MAX_GIVEN_BLOCKS {
                return Err(bad(FieldError::new(
                    "blocks",
                    format!("at most {MAX_GIVEN_BLOCKS} blocks per call, got {}", blocks.len()),
                )));
            }
            let blocks = blocks
                .iter()
                .enumerate()
                .map(|(index, block)| parse_block(block, &format!("blocks[{index}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            Sources::Given {
                blocks,
                context: parse_context(req.source_context, "source_context").map_err(bad)?,
                key_id: parse_optional_key_id(&req.source_kms_key_id, "source_kms_key_id")?,
            }
        }
    };
    Ok(Rewrap { sources, destination_key, destination_context })
}

/// Answers one `RewrapKeys` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    broker: &Broker,
    request: Request<pb::RewrapKeysRequest>,
) -> Result<Response<pb::RewrapKeysResponse>, Status> {
    gate.call(Rpc::RewrapKeys, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let rewrap = parse(&req)?;
        let origin = origin(Rpc::RewrapKeys, &grant, &notes);
        let moved = records::rewrap(broker, rewrap, &grant, &origin).await?;
        for key in &moved {
            if let Some(from) = &key.row.rewrapped_from {
                notes.key(from);
            }
            notes.key(&key.row.fingerprint);
        }
        if let Some(first) = moved.first() {
            notes.kms_key_arn(&first.row.kms_key_arn);
        }
        let keys = moved.into_iter().map(|m| recorded_to_proto(m.row, &m.origin, m.recorded_at_ms)).collect();
        Ok(pb::RewrapKeysResponse { keys })
    })
    .await
}
