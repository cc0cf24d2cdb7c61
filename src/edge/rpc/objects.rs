//! The `EncryptObject` and `DecryptObject` RPCs: protobuf streams in,
//! [`crate::objects`] sessions out, and back.
//!
//! Owns the stream protocol (`start` first, then chunks; S3 mode carries no
//! chunks), the bounded response channel that gives backpressure (a client
//! that stops reading stops the broker reading, so memory stays constant),
//! the one audit record per call (written before the final `result`, which is
//! withheld with `UNAVAILABLE` when the record cannot be written), and the
//! mapping of [`ObjectError`] to status codes.
//!
//! Must never put key bytes in a message, a status or a log line: the key
//! stays inside the session. Plaintext chunks of a decryption are provisional
//! until the final `result`; a failed tag, padding or truncation ends the
//! stream with `DATA_LOSS` and no `result`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::custody::broker::{BrokerError, UnwrapRequest};
use crate::custody::keys::{EncryptionMode, Iv16, KeyBits, KeyError, decode_base64};
use crate::custody::policy::Grant;
use crate::edge::gate::{Caller, Facts, Gate, deadline_exceeded, deadline_of, denial_status};
use crate::edge::pb;
use crate::edge::{ResponseStream, encryption_to_proto, internal, parse_context, parse_optional_key_id, status_of};
use crate::objects::cipher::{BLOCK_LEN, CipherError};
use crate::objects::{
    Cancel, DecryptParams, EncryptParams, ObjectError, Objects, PIECE_LEN, S3ErrorKind, S3Location, S3Transfer, Session,
};

const ENCRYPT: &str = "EncryptObject";
const DECRYPT: &str = "DecryptObject";

/// Response messages queued before the broker waits for the client: with
/// chunks of at most [`PIECE_LEN`] (+16), a few MiB per call at most.
const RESPONSE_DEPTH: usize = 4;

/// A request message, whichever RPC it belongs to.
enum Incoming<S> {
    Start(S),
    Chunk(Vec<u8>),
}

fn encrypt_incoming(message: pb::EncryptObjectRequest) -> Result<Incoming<pb::EncryptObjectStart>, Status> {
    use pb::encrypt_object_request::Message;
    match message.message {
        Some(Message::Start(start)) => Ok(Incoming::Start(start)),
        Some(Message::Chunk(chunk)) => Ok(Incoming::Chunk(chunk)),
        None => Err(empty_message()),
    }
}

fn decrypt_incoming(message: pb::DecryptObjectRequest) -> Result<Incoming<pb::DecryptObjectStart>, Status> {
    use pb::decrypt_object_request::Message;
    match message.message {
        Some(Message::Start(start)) => Ok(Incoming::Start(start)),
        Some(Message::Chunk(chunk)) => Ok(Incoming::Chunk(chunk)),
        None => Err(empty_message()),
    }
}

fn encrypt_chunk(bytes: Vec<u8>) -> pb::EncryptObjectResponse {
    pb::EncryptObjectResponse { message: Some(pb::encrypt_object_response::Message::Chunk(bytes)) }
}

fn decrypt_chunk(bytes: Vec<u8>) -> pb::DecryptObjectResponse {
    pb::DecryptObjectResponse { message: Some(pb::decrypt_object_response::Message::Chunk(bytes)) }
}

fn empty_message() -> Status {
    Status::invalid_argument("message: empty; each message must be a start or a chunk")
}

fn second_start() -> Status {
    Status::invalid_argument("start: sent twice; only the first message may be a start")
}

fn chunk_before_start() -> Status {
    Status::invalid_argument("chunk: sent before start; the first message must be a start")
}

fn no_start() -> Status {
    Status::invalid_argument("start: required as the first message; the stream ended without one")
}

fn chunk_in_s3_mode() -> Status {
    Status::invalid_argument(
        "chunk: not allowed in S3 mode (start.source and start.destination set): the broker reads the source itself",
    )
}

/// The next message, or `None` at the end of the client's stream.
async fn next_incoming<M, S>(
    inbound: &mut Streaming<M>,
    split: fn(M) -> Result<Incoming<S>, Status>,
) -> Result<Option<Incoming<S>>, Status> {
    match inbound.message().await? {
        Some(message) => split(message).map(Some),
        None => Ok(None),
    }
}

/// Which RPC an error belongs to: the same cipher refusal is a bad request
/// when encrypting and lost data when decrypting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// The status of an object failure: the one exhaustive mapping.
fn object_status(err: &ObjectError, direction: Direction) -> Status {
    match err {
        ObjectError::Broker(broker) => status_of(broker),
        ObjectError::Cipher(cipher) => match cipher {
            CipherError::Truncated { .. } | CipherError::Padding | CipherError::Authentication => {
                Status::data_loss(err.to_string())
            }
            CipherError::TooLong => match direction {
                Direction::Encrypt => Status::invalid_argument(format!("chunk: {err}")),
                Direction::Decrypt => Status::data_loss(err.to_string()),
            },
            CipherError::UnsupportedMode { .. } => Status::invalid_argument(format!("start: {err}")),
            CipherError::KeyLength { .. } | CipherError::Backend(_) => internal(err),
        },
        ObjectError::S3 { kind, .. } => match kind {
            S3ErrorKind::NotFound | S3ErrorKind::Rejected => Status::failed_precondition(err.to_string()),
            S3ErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
            S3ErrorKind::Unavailable => Status::unavailable(err.to_string()),
            S3ErrorKind::Invalid => Status::invalid_argument(err.to_string()),
        },
        ObjectError::S3Unavailable(_) => Status::failed_precondition(err.to_string()),
        ObjectError::Cancelled => Status::cancelled(err.to_string()),
        ObjectError::Internal(_) => internal(err),
    }
}

/// Prefixes the field an error names with `start.`, so a message names the
/// field as the caller wrote it.
fn in_start(err: BrokerError) -> Status {
    let err = match err {
        BrokerError::Invalid(KeyError::Invalid { field, rule }) => {
            BrokerError::Invalid(KeyError::Invalid { field: format!("start.{field}"), rule })
        }
        other => other,
    };
    status_of(&err)
}

fn parse_location(location: Option<&pb::S3Location>, field: &str) -> Result<Option<S3Location>, Status> {
    match location {
        None => Ok(None),
        Some(l) if l.bucket.is_empty() && l.key.is_empty() => Ok(None),
        Some(l) => {
            S3Location::parse(&l.bucket, &l.key, field).map(Some).map_err(|e| Status::invalid_argument(e.to_string()))
        }
    }
}

/// S3 mode when both locations are set; neither means streaming mode.
fn parse_transfer(
    source: Option<&pb::S3Location>,
    destination: Option<&pb::S3Location>,
) -> Result<Option<S3Transfer>, Status> {
    let source = parse_location(source, "start.source")?;
    let destination = parse_location(destination, "start.destination")?;
    match (source, destination) {
        (None, None) => Ok(None),
        (Some(_), None) => {
            Err(Status::invalid_argument("start.destination: required with start.source (S3 mode takes both)"))
        }
        (None, Some(_)) => {
            Err(Status::invalid_argument("start.source: required with start.destination (S3 mode takes both)"))
        }
        (Some(source), Some(destination)) if source == destination => {
            Err(Status::invalid_argument("start.destination: must differ from start.source"))
        }
        (Some(source), Some(destination)) => Ok(Some(S3Transfer { source, destination })),
    }
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

fn parse_decrypt_start(start: &pb::DecryptObjectStart) -> Result<(DecryptParams, Option<S3Transfer>), Status> {
    let block = start.encryption.as_ref().ok_or_else(|| Status::invalid_argument("start.encryption: required"))?;
    let parsed = crate::edge::parse_unwrap(block, start.context, "").map_err(in_start)?;
    let mode = EncryptionMode::parse_aes(&block.mode, "encryption.mode").map_err(|e| in_start(e.into()))?;
    let iv_bytes = decode_base64(&block.initialization_vector, "encryption.initialization_vector")
        .map_err(|e| in_start(e.into()))?;
    let iv = Iv16::from_slice(&iv_bytes, "encryption.initialization_vector").map_err(|e| in_start(e.into()))?;
    let key = UnwrapRequest { key_id: None, wrapped: parsed.wrapped, key_md5: parsed.key_md5, context: parsed.context };
    Ok((DecryptParams { key, mode, iv }, parse_transfer(start.source.as_ref(), start.destination.as_ref())?))
}

/// One streaming call's bookkeeping: metrics, the failure log line and the
/// audit record, as [`Gate::call`] keeps them for unary calls.
struct CallRecord {
    rpc: &'static str,
    gate: Arc<Gate>,
    caller: Caller,
    started: Instant,
}

impl CallRecord {
    fn begin(rpc: &'static str, gate: Arc<Gate>, caller: Caller) -> Self {
        crate::app::metrics::in_flight(1.0);
        CallRecord { rpc, gate, caller, started: Instant::now() }
    }

    /// Audits the call's outcome and answers the stream's last item: the
    /// result, the failure, or `UNAVAILABLE` (and no result) when the
    /// record could not be written.
    async fn finish<T>(self, facts: &Facts, result: Result<T, Status>) -> Result<T, Status> {
        let status = match &result {
            Ok(_) => Status::ok(""),
            Err(status) => {
                tracing::warn!(
                    rpc = self.rpc,
                    identity = %self.caller.identity,
                    request_id = %self.caller.request_id,
                    code = ?status.code(),
                    message = status.message(),
                    "call failed"
                );
                status.clone()
            }
        };
        let answer = match self.gate.record(self.rpc, &self.caller, facts, &status, None).await {
            Ok(()) => result,
            Err(unavailable) => Err(unavailable),
        };
        crate::app::metrics::in_flight(-1.0);
        let code = answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        crate::app::metrics::record_request(self.rpc, code, self.started.elapsed());
        answer
    }
}

fn respond<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>, caller: &Caller) -> Response<ResponseStream<T>> {
    let stream: ResponseStream<T> = Box::pin(ReceiverStream::new(rx));
    let mut response = Response::new(stream);
    if let Ok(value) = MetadataValue::try_from(caller.request_id.as_str()) {
        response.metadata_mut().insert("x-request-id", value);
    }
    response
}

async fn send<T>(tx: &mpsc::Sender<Result<T, Status>>, message: T) -> Result<(), Status> {
    tx.send(Ok(message)).await.map_err(|_| Status::cancelled("the client went away"))
}

/// Streams chunks through `session` until the client half-closes, answering
/// each piece as it is ready; then finishes the session.
async fn stream_chunks<S: Session, M, St, R>(
    mut session: S,
    inbound: &mut Streaming<M>,
    split: fn(M) -> Result<Incoming<St>, Status>,
    tx: &mpsc::Sender<Result<R, Status>>,
    wrap: fn(Vec<u8>) -> R,
    direction: Direction,
) -> Result<S::Done, Status> {
    while let Some(incoming) = next_incoming(inbound, split).await? {
        let chunk = match incoming {
            Incoming::Start(_) => return Err(second_start()),
            Incoming::Chunk(chunk) => chunk,
        };
        for piece in chunk.chunks(PIECE_LEN) {
            let mut out = Vec::with_capacity(piece.len() + BLOCK_LEN);
            session.update(piece, &mut out).map_err(|e| object_status(&e, direction))?;
            if !out.is_empty() {
                send(tx, wrap(out)).await?;
            }
        }
    }
    let mut tail = Vec::with_capacity(2 * BLOCK_LEN);
    let done = session.finish(&mut tail).map_err(|e| object_status(&e, direction))?;
    if !tail.is_empty() {
        send(tx, wrap(tail)).await?;
    }
    Ok(done)
}

/// Runs an S3 transfer while watching the client's stream: a chunk, a
/// second start or a broken stream cancels the transfer (which aborts its
/// upload) and becomes the call's status. The transfer is never dropped
/// half-way, so its clean-up always runs.
async fn run_s3<M, St, T, F>(
    inbound: &mut Streaming<M>,
    split: fn(M) -> Result<Incoming<St>, Status>,
    work: impl FnOnce(Cancel) -> F,
    direction: Direction,
) -> Result<T, Status>
where
    F: Future<Output = Result<T, ObjectError>>,
{
    let (cancel_tx, cancel) = Cancel::new();
    let work = work(cancel);
    tokio::pin!(work);
    let mut broken: Option<Status> = None;
    let mut open = true;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            incoming = next_incoming(inbound, split), if open && broken.is_none() => {
                let why = match incoming {
                    Ok(None) => {
                        open = false;
                        continue;
                    }
                    Ok(Some(Incoming::Chunk(_))) => chunk_in_s3_mode(),
                    Ok(Some(Incoming::Start(_))) => second_start(),
                    Err(status) => status,
                };
                broken = Some(why);
                let _ = cancel_tx.send(true);
            }
        }
    };
    match broken {
        Some(status) => Err(status),
        None => result.map_err(|e| object_status(&e, direction)),
    }
}

/// `EncryptObject`: admits the caller, then answers a stream fed by a task
/// that runs the whole call.
///
/// # Errors
/// The denial's status when the caller is not admitted; every later failure
/// ends the response stream instead.
pub async fn encrypt_object(
    objects: Arc<Objects>,
    gate: Arc<Gate>,
    request: Request<Streaming<pb::EncryptObjectRequest>>,
) -> Result<Response<ResponseStream<pb::EncryptObjectResponse>>, Status> {
    let caller = Caller::of(&request);
    let limit = deadline_of(&request, gate.stream_timeout);
    let grant = gate.admit(ENCRYPT, &caller, &mut None).await?;
    let mut inbound = request.into_inner();
    let (tx, rx) = mpsc::channel(RESPONSE_DEPTH);
    let record = CallRecord::begin(ENCRYPT, gate, caller.clone());
    tokio::spawn(async move {
        let mut facts = Facts::default();
        let call = encrypt_call(&objects, &grant, &mut inbound, &tx, &mut facts);
        let result = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| Err(deadline_exceeded(limit)));
        let result = result.map(|done| pb::EncryptObjectResponse {
            message: Some(pb::encrypt_object_response::Message::Result(done)),
        });
        let last = record.finish(&facts, result).await;
        let _ = tx.send(last).await;
    });
    Ok(respond(rx, &caller))
}

async fn encrypt_call(
    objects: &Objects,
    grant: &Grant,
    inbound: &mut Streaming<pb::EncryptObjectRequest>,
    tx: &mpsc::Sender<Result<pb::EncryptObjectResponse, Status>>,
    facts: &mut Facts,
) -> Result<pb::EncryptObjectResult, Status> {
    let start = match next_incoming(inbound, encrypt_incoming).await?.ok_or_else(no_start)? {
        Incoming::Start(start) => start,
        Incoming::Chunk(_) => return Err(chunk_before_start()),
    };
    let (params, transfer) = parse_encrypt_start(&start)?;
    let direction = Direction::Encrypt;
    let session = objects.begin_encryption(params, grant).await.map_err(|e| object_status(&e, direction))?;
    facts.kms_key_arn = session.key_arn().to_owned();
    facts.key_fingerprints.push(session.fingerprint().to_owned());
    let done = match transfer {
        Some(transfer) => {
            run_s3(inbound, encrypt_incoming, |cancel| objects.transfer_s3(session, &transfer, cancel), direction)
                .await?
        }
        None => stream_chunks(session, inbound, encrypt_incoming, tx, encrypt_chunk, direction).await?,
    };
    Ok(pb::EncryptObjectResult {
        encryption: Some(encryption_to_proto(&done.block)),
        kms_key_arn: done.key_arn,
        plaintext_bytes: done.plaintext_bytes,
        ciphertext_bytes: done.ciphertext_bytes,
        key_fingerprint: done.fingerprint,
    })
}

/// `DecryptObject`: admits the caller and checks plaintext export before
/// reading anything, then answers a stream fed by a task that runs the
/// whole call.
///
/// # Errors
/// `PERMISSION_DENIED` (audited) when plaintext export is off, or the
/// admission's status; every later failure ends the response stream instead.
pub async fn decrypt_object(
    objects: Arc<Objects>,
    gate: Arc<Gate>,
    request: Request<Streaming<pb::DecryptObjectRequest>>,
) -> Result<Response<ResponseStream<pb::DecryptObjectResponse>>, Status> {
    let caller = Caller::of(&request);
    let limit = deadline_of(&request, gate.stream_timeout);
    let grant = gate.admit(DECRYPT, &caller, &mut None).await?;
    if let Err(denial) = grant.check_plaintext_export(DECRYPT) {
        let record = CallRecord::begin(DECRYPT, gate, caller);
        return record.finish(&Facts::default(), Err(denial_status(&denial))).await;
    }
    let mut inbound = request.into_inner();
    let (tx, rx) = mpsc::channel(RESPONSE_DEPTH);
    let record = CallRecord::begin(DECRYPT, gate, caller.clone());
    tokio::spawn(async move {
        let mut facts = Facts::default();
        let call = decrypt_call(&objects, &grant, &mut inbound, &tx, &mut facts);
        let result = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| Err(deadline_exceeded(limit)));
        let result = result.map(|done| pb::DecryptObjectResponse {
            message: Some(pb::decrypt_object_response::Message::Result(done)),
        });
        let last = record.finish(&facts, result).await;
        let _ = tx.send(last).await;
    });
    Ok(respond(rx, &caller))
}

async fn decrypt_call(
    objects: &Objects,
    grant: &Grant,
    inbound: &mut Streaming<pb::DecryptObjectRequest>,
    tx: &mpsc::Sender<Result<pb::DecryptObjectResponse, Status>>,
    facts: &mut Facts,
) -> Result<pb::DecryptObjectResult, Status> {
    let start = match next_incoming(inbound, decrypt_incoming).await?.ok_or_else(no_start)? {
        Incoming::Start(start) => start,
        Incoming::Chunk(_) => return Err(chunk_before_start()),
    };
    let (params, transfer) = parse_decrypt_start(&start)?;
    facts.key_fingerprints.push(objects.fingerprint(&params.key.wrapped));
    let direction = Direction::Decrypt;
    let session = objects.begin_decryption(params, grant).await.map_err(|e| object_status(&e, direction))?;
    facts.kms_key_arn = session.key_arn().to_owned();
    let done = match transfer {
        Some(transfer) => {
            run_s3(inbound, decrypt_incoming, |cancel| objects.transfer_s3(session, &transfer, cancel), direction)
                .await?
        }
        None => stream_chunks(session, inbound, decrypt_incoming, tx, decrypt_chunk, direction).await?,
    };
    Ok(pb::DecryptObjectResult { plaintext_bytes: done.plaintext_bytes })
}
