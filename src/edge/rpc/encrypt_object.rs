//! `EncryptObject`: a file or S3 object encrypted in ET's formats under a
//! fresh key that never leaves the broker; the last message carries the
//! wrapped key, sent only once the call's record is durable. In S3 mode a
//! `request_token` makes a repeat answer the first call's result.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::bounds;
use super::object_stream::{Inbound, Incoming, Wire, empty_message, first_start, parse_transfer, run_session};
use super::{origin, parse_context, parse_optional_key_id};
use crate::custody::keys::{EncryptionMode, KeyBits};
use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::edge::gate::{Gate, Notes, Outbound, ResponseStream};
use crate::edge::pb;
use crate::edge::status::{Direction, object_status, status_of};
use crate::ledger::{RequestToken, S3Object, Usage};
use crate::objects::{EncryptParams, EncryptResult, Objects, S3Transfer, TokenClaim, TokenStart};

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

/// A start's parts: the key to make, S3 mode's objects, the request token.
type ParsedStart = (EncryptParams, Option<S3Transfer>, Option<RequestToken>);

fn parse_encrypt_start(start: &pb::EncryptObjectStart) -> Result<ParsedStart, Status> {
    let params = EncryptParams {
        mode: EncryptionMode::parse_aes(&start.mode, "start.mode").map_err(|e| status_of(&e.into()))?,
        bits: KeyBits::parse(start.key_bits, "start.key_bits").map_err(|e| status_of(&e.into()))?,
        key_id: parse_optional_key_id(&start.kms_key_id, "start.kms_key_id").map_err(|e| status_of(&e))?,
        context: parse_context(start.context, "start.context").map_err(|e| status_of(&e.into()))?,
    };
    let transfer = parse_transfer(start.source.as_ref(), start.destination.as_ref())?;
    let token = RequestToken::parse_optional(&start.request_token, "start.request_token")
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if token.is_some() && transfer.is_none() {
        return Err(Status::invalid_argument(
            "start.request_token: only in S3 mode (with start.source and start.destination); a streamed \
             object cannot be answered again without its bytes",
        ));
    }
    Ok((params, transfer, token))
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
    let (params, transfer, token) = parse_encrypt_start(&start)?;
    let claim = match (token, &transfer) {
        (Some(token), Some(transfer)) => {
            let claimed = objects.claim_token(&grant.identity, token, &params, transfer, grant).await;
            match claimed.map_err(|e| object_status(&e, WIRE.direction))? {
                TokenStart::Run(claim) => Some(claim),
                TokenStart::Replay(recorded) => {
                    notes.kms_key_arn(&recorded.kms_key_arn);
                    notes.key(&recorded.key_fingerprint);
                    return Ok(result_to_proto(*recorded));
                }
            }
        }
        _ => None,
    };
    let session = match objects.begin_encryption(params, grant).await {
        Ok(session) => session,
        Err(e) => return Err(released(claim, object_status(&e, WIRE.direction)).await),
    };
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
    let row = session.ledger_row(usage);
    let entry = match objects.ledger().record(&origin(Rpc::EncryptObject, grant, notes), vec![row]).await {
        Ok(entry) => entry,
        Err(e) => return Err(released(claim, e.into()).await),
    };
    let (done, stored) = match run_session(objects, session, transfer.clone(), inbound, tx, &WIRE).await {
        Ok(done) => done,
        Err(status) => return Err(released(claim, status).await),
    };
    let result = EncryptResult::of(&done, stored);
    if let Some(transfer) = &transfer {
        objects.record_stored(&entry, transfer, &result, claim).await;
    }
    Ok(result_to_proto(result))
}

/// Gives up the call's request token, if it has one, since nothing was
/// written: a retry runs anew with a fresh key. Answers `status`.
async fn released(claim: Option<TokenClaim>, status: Status) -> Status {
    if let Some(claim) = claim {
        claim.release().await;
    }
    status
}

fn result_to_proto(result: EncryptResult) -> pb::EncryptObjectResult {
    let EncryptResult { encryption, kms_key_arn, key_fingerprint, plaintext_bytes, ciphertext_bytes, stored } = result;
    let stored = stored.unwrap_or_default();
    pb::EncryptObjectResult {
        encryption: Some(pb::Encryption {
            mode: encryption.mode,
            key: encryption.key,
            key_md5: encryption.key_md5,
            initialization_vector: encryption.initialization_vector,
        }),
        kms_key_arn,
        plaintext_bytes,
        ciphertext_bytes,
        key_fingerprint,
        version_id: stored.version_id.unwrap_or_default(),
        etag: stored.etag.unwrap_or_default(),
    }
}
