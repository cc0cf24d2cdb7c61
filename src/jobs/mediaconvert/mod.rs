//! AWS Elemental MediaConvert jobs: the caller's CreateJob document (in
//! MediaConvert's own JSON, as `aws mediaconvert create-job
//! --cli-input-json` takes it) keyed, validated and submitted.
//!
//! Owns the job flow: check every shape the broker writes or checks
//! against the MediaConvert model (no KMS call before it passes), fill the
//! inputs' `DecryptionSettings` ([`inputs`]), the output groups' SSE-KMS
//! and static keys ([`outputs`]), check the filled document again, record
//! every key in the ledger before the job leaves, and submit it through
//! aws-sdk-mediaconvert (`submit`) under the ledger's request-token
//! write-ahead. Must never put a static key's hex anywhere but the body
//! sent to MediaConvert (and a `validate_only` answer to a caller allowed
//! plaintext export): answers, stored answers and logs get the redacted
//! document.

pub mod error;
pub mod inputs;
pub mod names;
pub mod outputs;
pub mod request;
mod resume;
pub mod role;
mod submit;
pub mod validate;

use std::time::Duration;

use serde_json::Value;

pub use self::error::{McError, ServiceFailure};
pub use self::outputs::{CONTEXT_CALLER, CONTEXT_TOKEN};
use self::outputs::{OutputPlan, OutputRequests};
pub use self::request::{JobKey, McAnswer, McJobRequest};
use crate::custody::broker::Broker;
use crate::custody::field::FieldError;
use crate::custody::kms::KmsKeyId;
use crate::custody::policy::{Denial, Grant};
use crate::jobs::ticket::{self, Hold, Start, Ticket};
use crate::ledger::{KeyRow, METADATA_KEY, Origin, Usage};

/// How MediaConvert jobs are keyed and submitted.
#[derive(Debug, Clone, Default)]
pub struct MediaConvertSettings {
    /// The KMS key output groups are encrypted under (SSE-KMS), an ARN.
    pub output_kms_key: Option<KmsKeyId>,
    /// The `Url` of a static key when the request gives none; `{token}` and
    /// `{group}` are replaced.
    pub key_url_template: Option<String>,
    /// Refuse jobs with an output group that is not SSE-KMS encrypted.
    pub require_encrypted_outputs: bool,
    /// Bind every SSE-KMS context to the job, whatever the request says.
    pub always_bind_job_context: bool,
    /// How long a call owns a request token it claimed.
    pub token_lease: Duration,
}

/// The MediaConvert side of the broker.
pub struct MediaConvert {
    broker: std::sync::Arc<Broker>,
    client: Option<aws_sdk_mediaconvert::Client>,
    settings: MediaConvertSettings,
}

impl MediaConvert {
    /// Jobs keyed by `broker`, submitted through `client` (none: only
    /// `validate_only`).
    pub fn new(
        broker: std::sync::Arc<Broker>,
        client: Option<aws_sdk_mediaconvert::Client>,
        settings: MediaConvertSettings,
    ) -> Self {
        MediaConvert { broker, client, settings }
    }

    /// Keys, checks and (unless `validate_only`) submits one job.
    ///
    /// # Errors
    /// [`McError`]; on any error before the POST, no job was submitted and no
    /// key left unrecorded.
    pub async fn submit(&self, request: McJobRequest, grant: &Grant, origin: &Origin) -> Result<McAnswer, McError> {
        validate::check_job(&request.job)?;
        self.check_request(&request)?;
        let ticket = match (&request.request_token, request.validate_only) {
            (Some(_), true) => {
                return Err(FieldError::new("request_token", "not with validate_only, which submits nothing").into());
            }
            (Some(token), false) => Some(submit::new_ticket(&origin.identity, token.clone(), &request)?),
            (None, _) => None,
        };
        let Some(ticket) = ticket else {
            return self.run(&request, grant, origin, None, None).await;
        };
        let ledger = self.broker.ledger();
        let lease = self.settings.token_lease;
        let planned_jobs = resume::PlannedJobs::new(&self.broker, self.client.as_ref(), &ticket);
        // A lease and a moment more: a claim seen before it lapsed is still
        // looked at once after it did.
        let wait = lease + Duration::from_secs(1);
        let (outcome, claimed_until_ms) = match ticket::claim(ledger, &ticket, lease, wait, &planned_jobs).await? {
            Start::Answer(answer) => return Ok(answer),
            Start::Fresh { claimed_until_ms } => {
                let hold = Hold::new(ledger, &ticket, claimed_until_ms);
                let outcome = self.run(&request, grant, origin, Some(&ticket), Some(&hold)).await;
                hold.disarm();
                (outcome, claimed_until_ms)
            }
            Start::Resubmit { planned, entry, claimed_until_ms } => {
                (self.resubmit(&ticket, planned, &entry, grant).await, claimed_until_ms)
            }
        };
        if let Err(e) = &outcome
            && e.nothing_submitted()
        {
            // Nothing reached MediaConvert, or it refused the job: the
            // token is free for a retry at once rather than at the lease's end.
            if let Err(release) = ledger.release_token(ticket.key(), claimed_until_ms).await {
                tracing::warn!(error = %release, "a failed call's request token not released; it frees when its lease ends");
            }
        }
        outcome
    }

    /// Keys, checks and (unless `validate_only`) submits one job; with a
    /// ticket, under its write-ahead.
    async fn run(
        &self,
        request: &McJobRequest,
        grant: &Grant,
        origin: &Origin,
        ticket: Option<&Ticket>,
        hold: Option<&Hold>,
    ) -> Result<McAnswer, McError> {
        let (job, rows, keys) = self.assemble(request, grant, origin).await?;
        let entry = self.broker.ledger().record(origin, rows).await?;
        let redacted = outputs::redact_static_keys(&job);
        let export = grant.plaintext_export;
        if request.validate_only {
            let shown = if export { &job } else { &redacted };
            return Ok(McAnswer {
                job_id: None,
                create_job_json: serde_json::to_string_pretty(shown)?,
                job_json: None,
                keys,
                static_keys_redacted: !export && shown != &job,
            });
        }
        let mut answer = McAnswer {
            job_id: None,
            create_job_json: serde_json::to_string_pretty(&redacted)?,
            job_json: None,
            keys,
            static_keys_redacted: redacted != job,
        };
        let client = self.client.as_ref().ok_or_else(resume::not_configured)?;
        let queue = resume::queue_of(&job).map(str::to_owned);
        let wire = names::to_wire(&job);
        drop(job);
        if let Some(ticket) = ticket {
            if let Some(hold) = hold {
                hold.disarm();
            }
            submit::mark_planned(self.broker.ledger(), ticket, &answer, &entry).await?;
        }
        let created = post(client, wire, ticket, queue.as_deref()).await?;
        resume::complete(&mut answer, &created);
        submit::mark_submitted(self.broker.ledger(), ticket, &answer, &created.id, &entry).await;
        Ok(answer)
    }

    /// POSTs a planned job again (same keys, same `ClientRequestToken`)
    /// after taking over its token, and records it. The outputs rule as it
    /// stands now (server or policy) still governs the planned document.
    async fn resubmit(
        &self,
        ticket: &Ticket,
        mut planned: McAnswer,
        entry: &str,
        grant: &Grant,
    ) -> Result<McAnswer, McError> {
        let client = self.client.as_ref().ok_or_else(resume::not_configured)?;
        let planned_document: Value = serde_json::from_str(&planned.create_job_json)?;
        self.check_outputs_encrypted(&planned_document, grant)?;
        drop(planned_document);
        let document = resume::rebuild(&self.broker, &planned, entry).await?;
        let queue = resume::queue_of(&document).map(str::to_owned);
        tracing::info!("MediaConvert has no job for a PENDING request token; submitting its planned job again");
        let created = post(client, names::to_wire(&document), Some(ticket), queue.as_deref()).await?;
        drop(document);
        resume::complete(&mut planned, &created);
        submit::mark_submitted(self.broker.ledger(), Some(ticket), &planned, &created.id, entry).await;
        Ok(planned)
    }

    /// Request-level rules the model does not hold.
    fn check_request(&self, request: &McJobRequest) -> Result<(), FieldError> {
        let inputs = request.job.pointer("/Settings/Inputs").and_then(Value::as_array).map_or(0, Vec::len);
        if let Some((index, _)) = request.inputs.fingerprints.range(inputs..).next() {
            return Err(FieldError::new(
                format!("input_key_fingerprints[{index}]"),
                format!("the job has {inputs} inputs"),
            ));
        }
        if let Some(metadata) = request.job.get("UserMetadata").and_then(Value::as_object)
            && metadata.contains_key(METADATA_KEY)
        {
            return Err(FieldError::new(
                format!("UserMetadata.{METADATA_KEY}"),
                "is the broker's key for request_token",
            ));
        }
        if request.request_token.is_some() && request.job.get("ClientRequestToken").is_some() {
            return Err(FieldError::new(
                "ClientRequestToken",
                "leave it out: the broker derives it from request_token",
            ));
        }
        Ok(())
    }

    /// Fills every key the broker owns; answers the filled document, the
    /// rows to record and the keys to name.
    async fn assemble(
        &self,
        request: &McJobRequest,
        grant: &Grant,
        origin: &Origin,
    ) -> Result<(Value, Vec<KeyRow>, Vec<JobKey>), McError> {
        let mut job = request.job.clone();
        let token = request.request_token.as_ref().map(|t| t.as_str().to_owned()).unwrap_or_default();
        let mut wanted = Vec::new();
        let url_template = self.settings.key_url_template.as_deref();
        if let Some(groups) = job.pointer("/Settings/OutputGroups").and_then(Value::as_array) {
            wanted = outputs::plan_static_keys(groups, url_template)?;
        }
        let sse_key = request.kms_key_id.as_ref().or(self.settings.output_kms_key.as_ref());
        if let Some(key) = sse_key {
            grant.check_kms_key(key.as_str())?;
        }
        let wrap_key = sse_key.or(self.broker.settings().default_key.as_ref());
        if wrap_key.is_none() && !wanted.is_empty() {
            return Err(FieldError::new("kms_key_id", "required for static keys: no KMS key is configured").into());
        }
        let outputs_requested = OutputRequests {
            bind_job_context: request.outputs.bind_job_context || self.settings.always_bind_job_context,
            ..request.outputs.clone()
        };
        let plan = OutputPlan {
            sse_key,
            wrap_key,
            url_template,
            context: vec![(CONTEXT_TOKEN.to_owned(), token), (CONTEXT_CALLER.to_owned(), origin.identity.clone())],
        };
        if let Some(groups) = job.pointer_mut("/Settings/OutputGroups").and_then(Value::as_array_mut) {
            outputs::fill_sse(groups, &outputs_requested, &plan)?;
        }
        self.check_outputs_encrypted(&job, grant)?;
        let mut input_keys = Vec::new();
        if let Some(inputs) = job.pointer_mut("/Settings/Inputs").and_then(Value::as_array_mut) {
            input_keys = inputs::resolve(&self.broker, inputs, &request.inputs, grant, origin).await?;
        }
        let mut static_keys = Vec::new();
        if let Some(groups) = job.pointer_mut("/Settings/OutputGroups").and_then(Value::as_array_mut) {
            static_keys = outputs::fill_static_keys(&self.broker, groups, &wanted, &outputs_requested, &plan).await?;
        }
        validate::check_job(&job)?;
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for key in input_keys {
            let mut row = key.row;
            row.usage = Usage::Job { job_id: None, place: key.place.clone() };
            keys.push(JobKey {
                place: key.place,
                fingerprint: row.fingerprint.clone(),
                kms_key_arn: row.kms_key_arn.clone(),
                rewrapped_from: key.rewrapped_from,
            });
            rows.push(row);
        }
        for key in static_keys {
            keys.push(JobKey {
                place: key.place,
                fingerprint: key.row.fingerprint.clone(),
                kms_key_arn: key.row.kms_key_arn.clone(),
                rewrapped_from: None,
            });
            rows.push(key.row);
        }
        Ok((job, rows, keys))
    }

    /// With `require_encrypted_outputs` (the server's, or the caller's
    /// policy rule's), every output group must be SSE-KMS. Checked before
    /// any key is made.
    fn check_outputs_encrypted(&self, job: &Value, grant: &Grant) -> Result<(), McError> {
        if !(self.settings.require_encrypted_outputs || grant.require_encrypted_outputs) {
            return Ok(());
        }
        let groups = job.pointer("/Settings/OutputGroups").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for (index, group) in groups.iter().enumerate() {
            let settings = group.get("OutputGroupSettings").and_then(Value::as_object);
            let encrypted =
                settings.into_iter().flatten().filter(|(k, _)| validate::GROUP_SETTINGS.contains(&k.as_str())).all(
                    |(_, s)| {
                        s.pointer("/DestinationSettings/S3Settings/Encryption/EncryptionType").and_then(Value::as_str)
                            == Some("SERVER_SIDE_ENCRYPTION_KMS")
                    },
                );
            if encrypted {
                continue;
            }
            let at = format!("Settings.OutputGroups[{index}]: writes unencrypted outputs");
            if self.settings.require_encrypted_outputs {
                return Err(McError::Precondition(format!(
                    "{at}, which this server refuses (mediaconvert.require_encrypted_outputs); set encrypt_outputs"
                )));
            }
            let rule = grant.rule.map_or_else(String::new, |n| format!(" {n}"));
            return Err(McError::Denied(Denial::Forbidden(format!(
                "{at}, which policy rule{rule} refuses for {} (require_encrypted_outputs); set encrypt_outputs",
                grant.identity
            ))));
        }
        Ok(())
    }
}

/// POSTs `wire`; when MediaConvert stays unreachable and a ticket names the
/// job, looks it up by its marker before answering the failure, so an
/// answer lost on every attempt is still the job it made.
async fn post(
    client: &aws_sdk_mediaconvert::Client,
    wire: Value,
    ticket: Option<&Ticket>,
    queue: Option<&str>,
) -> Result<submit::Created, McError> {
    let failure = match submit::create_job(client, wire, ticket).await {
        Ok(created) => return Ok(created),
        Err(failure) => failure,
    };
    let (McError::Service { kind: ServiceFailure::Unavailable, .. }, Some(ticket)) = (&failure, ticket) else {
        return Err(failure);
    };
    match resume::find_job(client, queue, ticket.marker()).await {
        Ok(Some(found)) => {
            tracing::info!(job_id = %found.id, "CreateJob answer lost; found the job by its request token");
            Ok(found)
        }
        Ok(None) | Err(_) => Err(failure),
    }
}
