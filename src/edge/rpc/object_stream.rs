//! The object streams' protocol, shared by `EncryptObject` and
//! `DecryptObject`: `start` first, then chunks (S3 mode carries no chunks);
//! chunks pass through a [`Session`] as they arrive, and the bounded
//! response channel gives backpressure (a client that stops reading stops
//! the broker reading, so memory stays constant).
//!
//! Must never put key bytes in a message, a status or a log line: the key
//! stays inside the session.

use std::time::Duration;

use tonic::{Status, Streaming};

use crate::custody::broker::BrokerError;
use crate::custody::keys::KeyError;
use crate::edge::gate::Gate;
use crate::edge::gate::Outbound;
use crate::edge::pb;
use crate::edge::status::{Direction, object_status, status_of, unreadable_body};
use crate::objects::cipher::BLOCK_LEN;
use crate::objects::{Cancel, ObjectError, Objects, PIECE_LEN, S3Location, S3Transfer, Session, StoredObject};

/// A request message, whichever RPC it belongs to.
pub(super) enum Incoming<S> {
    /// The first message.
    Start(S),
    /// Bytes.
    Chunk(Vec<u8>),
}

pub(super) fn empty_message() -> Status {
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

/// A call's request messages, each of which must arrive within the read
/// timeout (`limits.read_timeout_ms`), so an idle stream cannot hold its
/// places for the whole stream deadline.
pub(super) struct Inbound<M> {
    messages: Streaming<M>,
    read_timeout: Duration,
    max_message_bytes: usize,
}

impl<M> Inbound<M> {
    /// `messages` under `gate`'s limits.
    pub(super) fn new(messages: Streaming<M>, gate: &Gate) -> Self {
        Inbound { messages, read_timeout: gate.read_timeout, max_message_bytes: gate.max_message_bytes }
    }

    /// The next message, or `None` at the end of the client's stream;
    /// `DEADLINE_EXCEEDED` when it does not arrive within the read timeout
    /// (when `timed`).
    async fn next(&mut self, timed: bool) -> Result<Option<M>, Status> {
        let message = self.messages.message();
        let result = if timed {
            tokio::time::timeout(self.read_timeout, message).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no request message arrived within {} ms (limits.read_timeout_ms)",
                    self.read_timeout.as_millis()
                ))
            })?
        } else {
            message.await
        };
        result.map_err(|status| unreadable_body(&status, self.max_message_bytes))
    }
}

/// The next message, or `None` at the end of the client's stream.
async fn next_incoming<M, S>(
    inbound: &mut Inbound<M>,
    split: fn(M) -> Result<Incoming<S>, Status>,
    timed: bool,
) -> Result<Option<Incoming<S>>, Status> {
    match inbound.next(timed).await? {
        Some(message) => split(message).map(Some),
        None => Ok(None),
    }
}

/// Prefixes the field an error names with `start.`, so a message names the
/// field as the caller wrote it.
pub(super) fn in_start(err: BrokerError) -> Status {
    let err = match err {
        BrokerError::Invalid(KeyError::Invalid(invalid)) => {
            BrokerError::Invalid(KeyError::Invalid(invalid.within("start")))
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
pub(super) fn parse_transfer(
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

async fn send<T>(tx: &Outbound<T>, message: T) -> Result<(), Status> {
    tx.send(Ok(message)).await.map_err(|_| Status::cancelled("the client went away"))
}

/// How one object RPC's messages read and write: `M` requests carrying an
/// `St` start, `R` answers carrying chunks.
pub(super) struct Wire<M, St, R> {
    /// A request as a start or a chunk.
    pub split: fn(M) -> Result<Incoming<St>, Status>,
    /// A chunk of output as an answer.
    pub wrap: fn(Vec<u8>) -> R,
    /// Which RPC, for the status of a failure.
    pub direction: Direction,
}

/// The call's first message, which must be a start.
pub(super) async fn first_start<M, St, R>(inbound: &mut Inbound<M>, wire: &Wire<M, St, R>) -> Result<St, Status> {
    match next_incoming(inbound, wire.split, true).await?.ok_or_else(no_start)? {
        Incoming::Start(start) => Ok(start),
        Incoming::Chunk(_) => Err(chunk_before_start()),
    }
}

/// Runs a begun session to its end: through S3 when the start named a
/// source and a destination (answering what S3 answered for the object
/// written), else over the caller's chunks.
pub(super) async fn run_session<S: Session, M, St, R>(
    objects: &Objects,
    session: S,
    transfer: Option<S3Transfer>,
    inbound: &mut Inbound<M>,
    tx: &Outbound<R>,
    wire: &Wire<M, St, R>,
) -> Result<(S::Done, Option<StoredObject>), Status> {
    match transfer {
        Some(transfer) => run_s3(inbound, wire, |cancel| objects.transfer_s3(session, &transfer, cancel))
            .await
            .map(|(done, stored)| (done, Some(stored))),
        None => Ok((stream_chunks(session, inbound, tx, wire).await?, None)),
    }
}

/// Streams chunks through `session` until the client half-closes, answering
/// each piece as it is ready; then finishes the session.
async fn stream_chunks<S: Session, M, St, R>(
    mut session: S,
    inbound: &mut Inbound<M>,
    tx: &Outbound<R>,
    wire: &Wire<M, St, R>,
) -> Result<S::Done, Status> {
    let (wrap, direction) = (wire.wrap, wire.direction);
    while let Some(incoming) = next_incoming(inbound, wire.split, true).await? {
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
async fn run_s3<M, St, R, T, F>(
    inbound: &mut Inbound<M>,
    wire: &Wire<M, St, R>,
    work: impl FnOnce(Cancel) -> F,
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
            // No read timeout here: the caller waits for the transfer.
            incoming = next_incoming(inbound, wire.split, false), if open && broken.is_none() => {
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
        None => result.map_err(|e| object_status(&e, wire.direction)),
    }
}
