//! The key ledger as callers see it: recorded keys looked up by job, S3
//! object, fingerprint or request token, and keys moved to another KMS key
//! or service context through KMS `ReEncrypt`.
//!
//! Owns what a caller may see (only keys whose KMS key its grant covers;
//! only its own request tokens) and the all-or-nothing rule of a rewrap:
//! every key is re-encrypted before any new row is written, a key KMS
//! answers from a key the grant does not cover fails the whole call, and
//! nothing is answered before the new rows are durable. Must never unwrap a
//! key: KMS re-encrypts inside itself, and the ledger holds wrapped keys
//! only.

use futures::{StreamExt as _, TryStreamExt as _};

use crate::custody::broker::{Broker, BrokerError};
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::{EncryptionText, ServiceContext, WrappedKey, decode_base64, encode_base64};
use crate::custody::kms::KmsKeyId;
use crate::custody::policy::{Denial, Grant};
use crate::ledger::{
    Filter, KeyRow, Ledger, LedgerError, Origin, RecordedKey, RequestToken, TokenKey, Usage, Wrapping,
};

/// The most keys one lookup answers, and one rewrap moves.
pub const MAX_ANSWERED: usize = 1000;

/// The most blocks a caller may pass to one rewrap.
pub const MAX_GIVEN_BLOCKS: usize = 100;

/// How many `ReEncrypt` calls one rewrap keeps in flight.
const REWRAP_CONCURRENCY: usize = 8;

/// What a lookup selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The keys of an Elastic Transcoder job.
    JobId(String),
    /// The keys of an S3 object the broker wrote.
    Object {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// A key by its fingerprint.
    Fingerprint(String),
    /// The keys the caller's call with this request token recorded.
    Token(RequestToken),
}

impl Selector {
    /// The selector as a message names it, echoing at most a short prefix.
    fn describe(&self) -> String {
        match self {
            Selector::JobId(id) => format!("job {}", echo(id)),
            Selector::Object { bucket, key } => format!("s3://{}/{}", echo(bucket), echo(key)),
            Selector::Fingerprint(fingerprint) => format!("key {}", echo(fingerprint)),
            Selector::Token(token) => format!("request token {}", echo(token.as_str())),
        }
    }
}

/// Why a lookup or rewrap failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// A request field broke a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Nothing the caller may see is recorded.
    #[error("{0}")]
    NotFound(String),
    /// The rewrap cannot be done as asked (nothing left to move).
    #[error("{0}")]
    Precondition(String),
    /// The server keeps no ledger.
    #[error("this server keeps no key ledger (ledger.enabled = false): there are no recorded keys")]
    NoLedger,
    /// The caller's grant does not cover a key.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// KMS failed on one key; nothing was recorded.
    #[error("{place}: {source}")]
    Key {
        /// Which key (`keys[2]`, `blocks[0]`).
        place: String,
        /// Why.
        source: BrokerError,
    },
}

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The keys, oldest first.
    pub keys: Vec<RecordedKey>,
    /// More keys matched than [`MAX_ANSWERED`].
    pub truncated: bool,
}

/// The recorded keys `selector` names that `grant` covers.
///
/// # Errors
/// [`RecordsError::NotFound`] when none is; [`RecordsError::NoLedger`];
/// a ledger failure.
pub async fn lookup(ledger: &Ledger, selector: &Selector, grant: &Grant) -> Result<Found, RecordsError> {
    if !ledger.is_enabled() {
        return Err(RecordsError::NoLedger);
    }
    let not_found = || RecordsError::NotFound(format!("no recorded key for {}", selector.describe()));
    let filter = match selector {
        Selector::JobId(id) => Filter::JobId(id.clone()),
        Selector::Object { bucket, key } => Filter::Object { bucket: bucket.clone(), key: key.clone() },
        Selector::Fingerprint(fingerprint) => Filter::Fingerprint(fingerprint.clone()),
        Selector::Token(token) => {
            let key = TokenKey { identity: &grant.identity, token: token.as_str() };
            let entry = ledger.submission(key).await?.and_then(|s| s.entry_id).ok_or_else(not_found)?;
            Filter::Entry(entry)
        }
    };
    let mut keys = ledger.find_at_most(&filter, MAX_ANSWERED + 1).await?;
    let truncated = keys.len() > MAX_ANSWERED;
    keys.truncate(MAX_ANSWERED);
    keys.retain(|recorded| grant.check_kms_key(&recorded.key.kms_key_arn).is_ok());
    if keys.is_empty() {
        return Err(not_found());
    }
    Ok(Found { keys, truncated })
}

/// A block the caller passes to a rewrap, parsed.
#[derive(Debug, Clone)]
pub struct GivenBlock {
    /// The block as given (the key wrapped, base64).
    pub text: EncryptionText,
    /// The wrapped key, decoded.
    pub wrapped: WrappedKey,
    /// The block's `KeyMd5`, decoded.
    pub key_md5: [u8; 16],
}

/// The keys a rewrap moves.
#[derive(Debug, Clone)]
pub enum Sources {
    /// Recorded keys, as a lookup selects them.
    Recorded(Selector),
    /// Blocks the caller holds, all wrapped under `context` (by `key_id`,
    /// when named).
    Given {
        /// The blocks.
        blocks: Vec<GivenBlock>,
        /// Their service context.
        context: ServiceContext,
        /// The key that must have wrapped them.
        key_id: Option<KmsKeyId>,
    },
}

/// A rewrap, parsed.
#[derive(Debug, Clone)]
pub struct Rewrap {
    /// What to move.
    pub sources: Sources,
    /// The KMS key to wrap under; `None`: each key's own.
    pub destination_key: Option<KmsKeyId>,
    /// The service context to wrap under.
    pub destination_context: ServiceContext,
}

/// One key to move.
struct Source {
    place: String,
    wrapped: WrappedKey,
    key_md5: [u8; 16],
    key_id: Option<KmsKeyId>,
    context: ServiceContext,
    text: EncryptionText,
    key_bits: Option<u32>,
    usage: Usage,
    fingerprint: String,
}

/// The recorded keys `selector` names, as keys to move.
async fn recorded_sources(broker: &Broker, selector: &Selector, grant: &Grant) -> Result<Vec<Source>, RecordsError> {
    let found = lookup(broker.ledger(), selector, grant).await?;
    if found.truncated {
        return Err(FieldError::new(
            "recorded",
            format!("selects more than {MAX_ANSWERED} keys; select fewer (by key_fingerprint) per call"),
        )
        .into());
    }
    let corrupt = |what: &str| LedgerError::Corrupt(format!("a recorded {what} does not parse"));
    let mut sources = Vec::with_capacity(found.keys.len());
    for (index, recorded) in found.keys.into_iter().enumerate() {
        let row = recorded.key;
        let wrapped = WrappedKey::new(decode_base64(&row.wrapped_key, "key").map_err(|_| corrupt("key"))?);
        let digest = decode_base64(&row.key_md5, "key_md5").map_err(|_| corrupt("KeyMd5"))?;
        let key_md5 = <[u8; 16]>::try_from(digest.as_slice()).map_err(|_| corrupt("KeyMd5"))?;
        let key_id = KmsKeyId::parse(&row.kms_key_arn, "kms_key_arn").map_err(|_| corrupt("KMS key ARN"))?;
        let text = EncryptionText {
            mode: row.mode,
            key: row.wrapped_key,
            key_md5: row.key_md5,
            initialization_vector: row.iv.unwrap_or_default(),
        };
        sources.push(Source {
            place: format!("keys[{index}]"),
            wrapped,
            key_md5,
            key_id: Some(key_id),
            context: row.context,
            text,
            key_bits: row.key_bits,
            usage: row.usage,
            fingerprint: row.fingerprint,
        });
    }
    Ok(sources)
}

/// The caller's blocks, as keys to move; a block the ledger knows keeps
/// its recorded use.
async fn given_sources(
    broker: &Broker,
    blocks: Vec<GivenBlock>,
    context: ServiceContext,
    key_id: Option<&KmsKeyId>,
) -> Result<Vec<Source>, RecordsError> {
    let mut sources = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.into_iter().enumerate() {
        let fingerprint = broker.fingerprint(&block.wrapped);
        let known = broker.ledger().find_at_most(&Filter::Fingerprint(fingerprint.clone()), 1).await?;
        let (usage, key_bits) =
            known.into_iter().next().map_or((Usage::Unattached, None), |r| (r.key.usage, r.key.key_bits));
        sources.push(Source {
            place: format!("blocks[{index}]"),
            wrapped: block.wrapped,
            key_md5: block.key_md5,
            key_id: key_id.cloned(),
            context,
            text: block.text,
            key_bits,
            usage,
            fingerprint,
        });
    }
    Ok(sources)
}

/// A key moved by a rewrap: its new row, and who recorded it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The new block's row.
    pub row: KeyRow,
    /// The call that recorded it: this one, or an earlier rewrap to the same
    /// place, which is answered again rather than repeated.
    pub origin: Origin,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
}

/// Moves the keys `request` names to its destination and records the new
/// blocks, each linked to the key it came from; answers them in the order
/// of the source keys. A key already rewrapped to the same KMS key and
/// context answers that earlier rewrap, with no KMS call.
///
/// # Errors
/// [`RecordsError`]; on any error nothing was recorded.
pub async fn rewrap(
    broker: &Broker,
    request: Rewrap,
    grant: &Grant,
    origin: &Origin,
) -> Result<Vec<Moved>, RecordsError> {
    if let Some(key) = &request.destination_key {
        grant.check_kms_key(key.as_str())?;
    }
    let sources = match request.sources {
        Sources::Recorded(selector) => recorded_sources(broker, &selector, grant).await?,
        Sources::Given { blocks, context, key_id } => {
            if let Some(key) = &key_id {
                grant.check_kms_key(key.as_str())?;
            }
            if request.destination_key.is_none() && key_id.is_none() {
                return Err(FieldError::new(
                    "destination_kms_key_id",
                    "required for blocks unless source_kms_key_id names the key that wrapped them",
                )
                .into());
            }
            if request.destination_key.is_none() && context == request.destination_context {
                return Err(FieldError::new(
                    "destination_context",
                    "the rewrap changes neither the KMS key nor the service context",
                )
                .into());
            }
            given_sources(broker, blocks, context, key_id.as_ref()).await?
        }
    };
    let destination = request.destination_context;
    // A recorded key already under the destination context, staying under
    // its own KMS key, has nowhere to move.
    let sources: Vec<Source> = sources
        .into_iter()
        .filter(|source| request.destination_key.is_some() || source.context != destination)
        .collect();
    if sources.is_empty() {
        return Err(RecordsError::Precondition(format!(
            "every selected key is already wrapped under the {} context by its own KMS key; name \
             destination_kms_key_id to move it to another key",
            destination.entry().1
        )));
    }
    let to = Destination { key: request.destination_key.as_ref(), context: destination };
    let mut moved: Vec<Moved> = futures::stream::iter(sources)
        .map(|source| move_one(broker, source, to, grant, origin))
        .buffered(REWRAP_CONCURRENCY)
        .try_collect()
        .await?;
    let fresh: Vec<KeyRow> = moved.iter().filter(|m| m.origin == *origin).map(|m| m.row.clone()).collect();
    // Answered as recorded: with the time of the commit.
    let (_, recorded_at_ms) = broker.ledger().record_at(origin, fresh).await?;
    for key in moved.iter_mut().filter(|m| m.origin == *origin) {
        key.recorded_at_ms = recorded_at_ms;
    }
    Ok(moved)
}

/// Where a rewrap moves keys.
#[derive(Debug, Clone, Copy)]
struct Destination<'a> {
    /// The KMS key; `None`: each key's own.
    key: Option<&'a KmsKeyId>,
    context: ServiceContext,
}

/// An earlier rewrap of `source` to `to`, if the ledger holds one.
async fn earlier_rewrap(broker: &Broker, source: &Source, to: Destination<'_>) -> Result<Option<Moved>, RecordsError> {
    let wanted_arn = to.key.or(source.key_id.as_ref()).map(KmsKeyId::as_str);
    let earlier = broker.ledger().find(&Filter::RewrappedFrom(source.fingerprint.clone())).await?;
    Ok(earlier
        .into_iter()
        .find(|r| r.key.context == to.context && Some(r.key.kms_key_arn.as_str()) == wanted_arn)
        .map(|r| Moved { row: r.key, origin: r.origin, recorded_at_ms: r.recorded_at_ms }))
}

/// Re-encrypts one key and makes its new row, or finds its earlier rewrap.
async fn move_one(
    broker: &Broker,
    source: Source,
    to: Destination<'_>,
    grant: &Grant,
    origin: &Origin,
) -> Result<Moved, RecordsError> {
    if let Some(earlier) = earlier_rewrap(broker, &source, to).await? {
        return Ok(earlier);
    }
    let place = source.place.clone();
    let failed = |source: BrokerError| RecordsError::Key { place: place.clone(), source };
    // With no destination key, the key stays under the key that wrapped it.
    let to_key = to
        .key
        .or(source.key_id.as_ref())
        .ok_or_else(|| FieldError::new("destination_kms_key_id", "required: the source key is not known"))?;
    let moved = broker
        .rewrap(&source.wrapped, (source.key_id.as_ref(), source.context), (to_key, to.context), source.key_md5)
        .await
        .map_err(failed)?;
    grant.check_kms_key(&moved.source_key_arn).map_err(|denial| failed(denial.into()))?;
    grant.check_kms_key(&moved.key_arn).map_err(|denial| failed(denial.into()))?;
    let text = EncryptionText {
        mode: source.text.mode,
        key: moved.wrapped.to_base64(),
        key_md5: encode_base64(&moved.key_md5),
        initialization_vector: source.text.initialization_vector,
    };
    let wrapping = Wrapping { kms_key_arn: moved.key_arn, context: to.context, key_bits: source.key_bits };
    let mut row = KeyRow::from_block(text, wrapping, moved.fingerprint, source.usage);
    row.rewrapped_from = Some(source.fingerprint);
    Ok(Moved { row, origin: origin.clone(), recorded_at_ms: Ledger::now_ms() })
}
