//! `DecryptObject`: a file or S3 object decrypted, for callers granted
//! plaintext export (the gate checks it before anything is read).
//! Plaintext chunks are provisional until the final `result`; a failed tag,
//! padding or truncation ends the stream with `DATA_LOSS` and no `result`.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::bounds;
use super::object_stream::{
    Inbound, Incoming, Wire, empty_message, first_start, in_start, parse_transfer, run_session,
};
use crate::custody::broker::UnwrapRequest;
use crate::custody::keys::{EncryptionMode, Iv16, decode_base64};
use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::edge::gate::{Gate, Notes, Outbound, ResponseStream};
use crate::edge::pb;
use crate::edge::status::{Direction, object_status};
use crate::objects::{DecryptParams, Objects, S3Transfer};

fn decrypt_incoming(message: pb::DecryptObjectRequest) -> Result<Incoming<pb::DecryptObjectStart>, Status> {
    use pb::decrypt_object_request::Message;
    match message.message {
        Some(Message::Start(start)) => Ok(Incoming::Start(start)),
        Some(Message::Chunk(chunk)) => Ok(Incoming::Chunk(chunk)),
        None => Err(empty_message()),
    }
}

fn decrypt_chunk(bytes: Vec<u8>) -> pb::DecryptObjectResponse {
    pb::DecryptObjectResponse { message: Some(pb::decrypt_object_response::Message::Chunk(bytes)) }
}

fn parse_decrypt_start(start: &pb::DecryptObjectStart) -> Result<(DecryptParams, Option<S3Transfer>), Status> {
    let block = start.encryption.as_ref().ok_or_else(|| Status::invalid_argument("start.encryption: required"))?;
    let parsed = super::parse_unwrap(block, start.context, "").map_err(in_start)?;
    let mode = EncryptionMode::parse_aes(&block.mode, "encryption.mode").map_err(|e| in_start(e.into()))?;
    let iv_bytes = decode_base64(&block.initialization_vector, "encryption.initialization_vector")
        .map_err(|e| in_start(e.into()))?;
    let iv = Iv16::from_slice(&iv_bytes, "encryption.initialization_vector").map_err(|e| in_start(e.into()))?;
    let key = UnwrapRequest { key_id: None, wrapped: parsed.wrapped, key_md5: parsed.key_md5, context: parsed.context };
    Ok((DecryptParams { key, mode, iv }, parse_transfer(start.source.as_ref(), start.destination.as_ref())?))
}

/// `DecryptObject`'s messages.
const WIRE: Wire<pb::DecryptObjectRequest, pb::DecryptObjectStart, pb::DecryptObjectResponse> =
    Wire { split: decrypt_incoming, wrap: decrypt_chunk, direction: Direction::Decrypt };

/// Answers one `DecryptObject` call.
///
/// # Errors
/// The refusal's status (`PERMISSION_DENIED` without plaintext export)
/// when the caller is not admitted; every later failure ends the response
/// stream instead.
pub async fn handle(
    gate: &Arc<Gate>,
    objects: &Arc<Objects>,
    request: Request<Streaming<pb::DecryptObjectRequest>>,
) -> Result<Response<ResponseStream<pb::DecryptObjectResponse>>, Status> {
    let (objects, limits) = (objects.clone(), gate.clone());
    gate.stream(Rpc::DecryptObject, request, |inbound, grant, notes, tx| async move {
        let done = decrypt(&objects, &grant, Inbound::new(inbound, &limits), &tx, &notes).await?;
        Ok(pb::DecryptObjectResponse { message: Some(pb::decrypt_object_response::Message::Result(done)) })
    })
    .await
}

async fn decrypt(
    objects: &Objects,
    grant: &Grant,
    mut inbound: Inbound<pb::DecryptObjectRequest>,
    tx: &Outbound<pb::DecryptObjectResponse>,
    notes: &Notes,
) -> Result<pb::DecryptObjectResult, Status> {
    let inbound = &mut inbound;
    let mut start = first_start(inbound, &WIRE).await?;
    bounds::check(&mut start, "start")?;
    let (params, transfer) = parse_decrypt_start(&start)?;
    notes.key(&objects.fingerprint(&params.key.wrapped));
    let session = objects.begin_decryption(params, grant).await.map_err(|e| object_status(&e, WIRE.direction))?;
    notes.kms_key_arn(session.key_arn());
    let (done, _) = run_session(objects, session, transfer, inbound, tx, &WIRE).await?;
    Ok(pb::DecryptObjectResult { plaintext_bytes: done.plaintext_bytes })
}
