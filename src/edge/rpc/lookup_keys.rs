//! `LookupKeys`: what the key ledger recorded for a job, an S3 object, a
//! key fingerprint or one of the caller's request tokens. Answers wrapped
//! keys only; this file parses the selector and maps records to protobuf.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds::{self, Fields, Limit, Walk};
use crate::custody::broker::Broker;
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::ServiceContext;
use crate::custody::records::{self, Selector};
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::ledger::{KeyRow, Origin, RequestToken, Usage};
use crate::objects::S3Location;

/// The longest job id the selector takes.
const MAX_JOB_ID_CHARS: usize = 64;

impl Fields for pb::LookupKeysRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("job_id", Limit::Word, &mut self.job_id);
        walk.message("object", self.object.as_mut());
        walk.text("key_fingerprint", Limit::Word, &mut self.key_fingerprint);
        walk.text("request_token", Limit::Word, &mut self.request_token);
    }
}

/// `name` under `prefix` (`recorded.job_id`).
fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

/// Parses a lookup's selector (exactly one of its four fields); field
/// names start with `prefix`.
///
/// # Errors
/// [`FieldError`] naming the field and the rule.
pub fn parse_selector(request: &pb::LookupKeysRequest, prefix: &str) -> Result<Selector, FieldError> {
    let set = [
        !request.job_id.is_empty(),
        request.object.is_some(),
        !request.key_fingerprint.is_empty(),
        !request.request_token.is_empty(),
    ];
    if set.iter().filter(|set| **set).count() != 1 {
        return Err(FieldError::new(
            field(prefix, "job_id"),
            "set exactly one of job_id, object, key_fingerprint or request_token",
        ));
    }
    if let Some(object) = &request.object {
        let location = S3Location::parse(&object.bucket, &object.key, &field(prefix, "object"))
            .map_err(|e| FieldError::new(field(prefix, "object"), e.to_string()))?;
        return Ok(Selector::Object { bucket: location.bucket().to_owned(), key: location.key().to_owned() });
    }
    let id = &request.job_id;
    if !id.is_empty() {
        let fine = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if id.len() > MAX_JOB_ID_CHARS || !id.chars().all(fine) {
            return Err(FieldError::new(
                field(prefix, "job_id"),
                format!("{} is not a job id: 1 to {MAX_JOB_ID_CHARS} letters, digits and '-'", echo(id)),
            ));
        }
        return Ok(Selector::JobId(id.clone()));
    }
    let fingerprint = &request.key_fingerprint;
    if !fingerprint.is_empty() {
        let hex = fingerprint.strip_prefix("hmac-sha256:").unwrap_or_default();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return Err(FieldError::new(
                field(prefix, "key_fingerprint"),
                format!("{} is not a key fingerprint: hmac-sha256: and 32 lowercase hex digits", echo(fingerprint)),
            ));
        }
        return Ok(Selector::Fingerprint(fingerprint.clone()));
    }
    let name = field(prefix, "request_token");
    RequestToken::parse_optional(&request.request_token, &name)?
        .map(Selector::Token)
        .ok_or_else(|| FieldError::new(name, "must not be empty"))
}

/// The proto enum of a service context.
fn context_to_proto(context: ServiceContext) -> i32 {
    match context {
        ServiceContext::MediaConvert => pb::ServiceContext::Mediaconvert as i32,
        _ => pb::ServiceContext::ElasticTranscoder as i32,
    }
}

/// A recorded key as the API answers it.
pub fn recorded_to_proto(key: KeyRow, origin: &Origin, recorded_at_ms: i64) -> pb::RecordedKey {
    let (job_id, job_place, object) = match key.usage {
        Usage::Job { job_id, place } => (job_id.unwrap_or_default(), place, None),
        Usage::Object(object) => (String::new(), String::new(), Some(object)),
        Usage::Unattached => (String::new(), String::new(), None),
    };
    let (version_id, etag) = object.as_ref().map(|o| (o.version_id.clone(), o.etag.clone())).unwrap_or_default();
    pb::RecordedKey {
        encryption: Some(pb::Encryption {
            mode: key.mode,
            key: key.wrapped_key,
            key_md5: key.key_md5,
            initialization_vector: key.iv.unwrap_or_default(),
        }),
        kms_key_arn: key.kms_key_arn,
        context: context_to_proto(key.context),
        key_bits: key.key_bits.unwrap_or(0),
        key_fingerprint: key.fingerprint,
        identity: origin.identity.clone(),
        rpc: origin.rpc.name().to_owned(),
        request_id: origin.request_id.clone(),
        recorded_at_ms: u64::try_from(recorded_at_ms).unwrap_or(0),
        job_id,
        job_place,
        object: object.map(|o| pb::S3Location { bucket: o.bucket, key: o.key }),
        object_version_id: version_id.unwrap_or_default(),
        object_etag: etag.unwrap_or_default(),
        rewrapped_from: key.rewrapped_from.unwrap_or_default(),
    }
}

/// Answers one `LookupKeys` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    broker: &Broker,
    request: Request<pb::LookupKeysRequest>,
) -> Result<Response<pb::LookupKeysResponse>, Status> {
    gate.call(Rpc::LookupKeys, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let selector = parse_selector(&req, "").map_err(records::RecordsError::from)?;
        let found = records::lookup(broker.ledger(), &selector, &grant).await?;
        for recorded in &found.keys {
            notes.key(&recorded.key.fingerprint);
        }
        Ok(pb::LookupKeysResponse {
            keys: found
                .keys
                .into_iter()
                .map(|recorded| recorded_to_proto(recorded.key, &recorded.origin, recorded.recorded_at_ms))
                .collect(),
            truncated: found.truncated,
        })
    })
    .await
}
