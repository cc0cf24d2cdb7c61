//! `EncryptObject`: a file or S3 object encrypted in ET's formats under a
//! fresh key that never leaves the broker; the last message carries the
//! wrapped key, sent only once the call's record is durable.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::bounds;
use super::object_stream::{Inbound, Incoming, Wire, empty_message, first_start, parse_transfer, run_session};
use super::{encryption_to_proto, origin, parse_context, parse_optional_key_id};
use crate::custody::keys::{EncryptionMode, KeyBits};
use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::edge::gate::{Gate, Notes, Outbound, ResponseStream};
use crate::edge::pb;
use crate::edge::status::{Direction, object_status, status_of};
use crate::ledger::{S3Object, Usage};
use crate::objects::{EncryptParams, Objects, S3Transfer};

fn encrypt_incoming(message: pb::EncryptObjectRequest) -> Result<Incoming<pb::EncryptObjectStart>, Status> {
    use pb::encrypt_object_request::Message;
    match message.message {
        Some(Message::Start(start)) => Ok(Incoming::Start(start)),
        Some(Message::Chunk(chunk)) => Ok(Incoming::Chunk(chunk)),
        None => Err(empty_message()),
    }
}

fn encrypt_chunk(bytes: Vec<u8>) -> pb::EncryptObjectResponse {
    pb::EncryptObjectResponse { message: Some(pb::encrypt_object_response::Message::Chunk(bytes)) }
}

fn parse_encrypt_start(start: &pb::EncryptObjectStart) -> Result<(EncryptParams, Option<S3Transfer>), Status> {
    let params = EncryptParams {
        mode: EncryptionMode::parse_aes(&start.mode, "start.mode").map_err(|e| status_of(&e.into()))?,
        bits: KeyBits::parse(start.key_bits, "start.key_bits").map_err(|e| status_of(&e.into()))?,
        key_id: parse_optional_key_id(&start.kms_key_id, "start.kms_key_id").map_err(|e| status_of(&e))?,
        context: parse_context(start.context, "start.context").map_err(|e| status_of(&e.into()))?,
    };
    Ok((params, parse_transfer(start.source.as_ref(), start.destination.as_ref())?))
}

/// `EncryptObject`'s messages.
const WIRE: Wire<pb::EncryptObjectRequest, pb::EncryptObjectStart, pb::EncryptObjectResponse> =
    Wire { split: encrypt_incoming, wrap: encrypt_chunk, direction: Direction::Encrypt };

/// Answers one `EncryptObject` call.
///
/// # Errors
/// The refusal's status when the caller is not admitted; every later
/// failure ends the response stream instead.
pub async fn handle(
    gate: &Arc<Gate>,
    objects: &Arc<Objects>,
    request: Request<Streaming<pb::EncryptObjectRequest>>,
) -> Result<Response<ResponseStream<pb::EncryptObjectResponse>>, Status> {
    let (objects, limits) = (objects.clone(), gate.clone());
    gate.stream(Rpc::EncryptObject, request, |inbound, grant, notes, tx| async move {
        let done = encrypt(&objects, &grant, Inbound::new(inbound, &limits), &tx, &notes).await?;
        Ok(pb::EncryptObjectResponse { message: Some(pb::encrypt_object_response::Message::Result(done)) })
    })
    .await
}

async fn encrypt(
    objects: &Objects,
    grant: &Grant,
    mut inbound: Inbound<pb::EncryptObjectRequest>,
    tx: &Outbound<pb::EncryptObjectResponse>,
    notes: &Notes,
) -> Result<pb::EncryptObjectResult, Status> {
    let inbound = &mut inbound;
    let mut start = first_start(inbound, &WIRE).await?;
    bounds::check(&mut start, "start")?;
    let (params, transfer) = parse_encrypt_start(&start)?;
    let session = objects.begin_encryption(params, grant).await.map_err(|e| object_status(&e, WIRE.direction))?;
    notes.kms_key_arn(session.key_arn());
    notes.key(session.fingerprint());
    // Recorded before any byte is written: an S3 object appears only after
    // its key is durable.
    let usage = transfer.as_ref().map_or(Usage::Unattached, |t| {
        Usage::Object(S3Object {
            bucket: t.destination.bucket().to_owned(),
            key: t.destination.key().to_owned(),
            ..S3Object::default()
        })
    });
    objects.ledger().record(&origin(Rpc::EncryptObject, grant, notes), vec![session.ledger_row(usage)]).await?;
    let done = run_session(objects, session, transfer, inbound, tx, &WIRE).await?;
    Ok(pb::EncryptObjectResult {
        encryption: Some(encryption_to_proto(&done.block)),
        kms_key_arn: done.key_arn,
        plaintext_bytes: done.plaintext_bytes,
        ciphertext_bytes: done.ciphertext_bytes,
        key_fingerprint: done.fingerprint,
    })
}
