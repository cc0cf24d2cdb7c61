//! Elastic Transcoder `CreateJob` assembly, validation and submission.
//!
//! Owns the job flow: check the whole request against the ET model (no KMS
//! call before it passes), resolve the pipeline and its KMS key, make a
//! fresh key and IV for every file ET writes and verify every key the caller
//! brought (KMS calls concurrent, bounded, under one deadline), fill the
//! blocks in, and submit through aws-sdk-elastictranscoder. A job whose keys
//! could not all be made is never submitted; plaintext keys are dropped
//! (zeroized) as soon as they are wrapped. Never logs key material.

pub mod answer;
mod assembled;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
mod idempotent;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod request;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};

use self::assembled::ledger_rows;
pub use self::assembled::{AssembledJob, ProtectedFile};
pub use self::error::JobError;
use self::error::{EtError, EtErrorKind, map_et_error, no_submission};
use self::idempotent::{Start, Tokens, et_client, new_ticket};
use self::pipeline::Pipelines;
use self::plan::Block;
use self::validate::BlockKind;
use crate::custody::broker::{Broker, BrokerError, UnwrapRequest, issued_from_pool};
use crate::custody::field::FieldError;
use crate::custody::keys::{
    DataKey, EncryptionMode, EncryptionText, KeyBits, ServiceContext, WrappedKey, decode_base64, encode_base64,
};
use crate::custody::kms::{KmsErrorKind, KmsKeyId};
use crate::custody::policy::Grant;
use crate::custody::pool::{PoolBatch, PooledKey};
use crate::jobs::place::Place;
use crate::jobs::ticket::{Hold, Ticket};
use crate::ledger::{Origin, RequestToken};

/// A `SubmitEncryptedJob` request in domain terms.
#[derive(Debug, Default)]
pub struct JobRequest {
    /// The CreateJob body as the caller wrote it: AES protections without a
    /// `Key` are for the broker to fill.
    pub job: model::CreateJob,
    /// PlayReady content keys the caller passed in plaintext, by playlist
    /// index (`Playlists[i]`), for the broker to wrap.
    pub playready_content_keys: BTreeMap<usize, DataKey>,
    /// The KMS key the caller expects, which must be the pipeline's.
    pub kms_key_id: Option<KmsKeyId>,
    /// Assemble and validate only; submit nothing.
    pub validate_only: bool,
    /// The caller's idempotency token.
    pub request_token: Option<RequestToken>,
}

/// How jobs are assembled.
#[derive(Debug, Clone)]
pub struct TranscoderSettings {
    /// KMS calls in flight for one job.
    pub max_concurrent_kms_calls: usize,
    /// The deadline of all of one job's KMS calls.
    pub job_deadline: Duration,
    /// How long a call owns a request token it claimed before another
    /// call may take the submission over: longer than any one submission.
    pub token_lease: Duration,
}

/// What one block needs from KMS.
enum Task {
    /// A fresh key and IV.
    Generate { mode: EncryptionMode, bits: KeyBits },
    /// Wrap the caller's PlayReady content key.
    WrapContentKey(DataKey),
    /// Check the caller's wrapped key decrypts with the pipeline's key and
    /// matches its KeyMd5 (and, for HLS, is 128 bits).
    Verify { wrapped: WrappedKey, key_md5: [u8; 16], need: Option<KeyBits> },
}

/// What KMS answered for one block.
enum Outcome {
    Made { key: String, key_md5: String, iv: Option<String>, fingerprint: String, bits: KeyBits },
    Verified { fingerprint: String, bits: KeyBits },
}

/// A block's place and what the broker does for it (nothing for a
/// server-side mode).
pub(crate) struct Planned {
    place: Place,
    task: Option<Task>,
}

/// Assembles and submits Elastic Transcoder jobs.
pub struct Transcoder {
    broker: Arc<Broker>,
    pipelines: Pipelines,
    et: Option<aws_sdk_elastictranscoder::Client>,
    settings: TranscoderSettings,
}

impl Transcoder {
    /// A transcoder over `broker`; `et` is `None` where no ET endpoint is
    /// configured (`--dev`, offline), so only `validate_only` jobs work.
    pub fn new(
        broker: Arc<Broker>,
        pipelines: Pipelines,
        et: Option<aws_sdk_elastictranscoder::Client>,
        settings: TranscoderSettings,
    ) -> Self {
        Transcoder { broker, pipelines, et, settings }
    }

    /// The pipeline directory jobs resolve pipelines in.
    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// The Elastic Transcoder client, where one is configured.
    pub fn et(&self) -> Option<&aws_sdk_elastictranscoder::Client> {
        self.et.as_ref()
    }

    /// Validates, keys and (unless `validate_only`) submits a job.
    ///
    /// # Errors
    /// [`JobError`]; on any error nothing was submitted, but for an
    /// Elastic Transcoder answer that leaves it unknown (a tokened job is
    /// then resolved by its token on retry).
    pub async fn submit(
        &self,
        mut request: JobRequest,
        grant: &Grant,
        origin: &Origin,
    ) -> Result<AssembledJob, JobError> {
        validate::check_structure(&request.job)?;
        if !request.validate_only && self.et.is_none() {
            // Refused before any key is made or any token claimed.
            return Err(no_submission());
        }
        let Some(token) = request.request_token.take() else {
            return self.key_and_submit(request, grant, origin, None, None).await;
        };
        let named = request.kms_key_id.as_ref().map(KmsKeyId::as_str);
        let content_keys = !request.playready_content_keys.is_empty();
        let ticket = new_ticket(&origin.identity, token, &request.job, named, request.validate_only, content_keys)?;
        grant.check_pipeline(&request.job.pipeline_id)?;
        let (outcome, claimed_until_ms) = match self.tokens().claim(&ticket, &request.job.pipeline_id).await? {
            Start::Answer(answer) => return Ok(answer),
            Start::Resubmit { planned, entry, claimed_until_ms } => {
                (self.tokens().resubmit(&ticket, planned, &entry).await, claimed_until_ms)
            }
            Start::Fresh { claimed_until_ms } => {
                request.job.user_metadata.insert(crate::ledger::METADATA_KEY.to_owned(), ticket.marker().to_owned());
                let hold = Hold::new(self.broker.ledger(), &ticket, claimed_until_ms);
                let outcome = self.key_and_submit(request, grant, origin, Some(&ticket), Some(&hold)).await;
                hold.disarm();
                (outcome, claimed_until_ms)
            }
        };
        if let Err(e) = &outcome
            && e.nothing_submitted()
        {
            // Nothing reached Elastic Transcoder, or it refused the job: the
            // token is free for a retry at once rather than at the lease's end.
            if let Err(release) = self.broker.ledger().release_token(ticket.key(), claimed_until_ms).await {
                tracing::warn!(error = %release, "a failed call's request token not released; it frees when its lease ends");
            }
        }
        outcome
    }

    /// Keys, checks and (unless `validate_only`) submits one job; with a
    /// ticket, under its write-ahead, `hold` disarmed once the job is
    /// about to be planned.
    async fn key_and_submit(
        &self,
        request: JobRequest,
        grant: &Grant,
        origin: &Origin,
        ticket: Option<&Ticket>,
        hold: Option<&Hold>,
    ) -> Result<AssembledJob, JobError> {
        let JobRequest { mut job, mut playready_content_keys, kms_key_id, validate_only, request_token: _ } = request;
        let planned = plan_tasks(&mut job, &mut playready_content_keys)?;
        grant.check_pipeline(&job.pipeline_id)?;
        for task in planned.iter().filter_map(|p| p.task.as_ref()) {
            match task {
                Task::Generate { bits, .. } => grant.check_key_bits(*bits)?,
                Task::WrapContentKey(key) => grant.check_key_bits(key.bits())?,
                Task::Verify { .. } => {}
            }
        }

        let pipeline = self.pipelines.resolve(&job.pipeline_id).await?;
        let needs_kms = planned.iter().any(|p| p.task.is_some());
        let key_arn = if needs_kms || kms_key_id.is_some() {
            let arn = pipeline.key_arn().map_err(JobError::Precondition)?.to_owned();
            if let Some(named) = &kms_key_id {
                check_named_key(named, &arn)?;
            }
            grant.check_kms_key(&arn)?;
            arn
        } else {
            String::new()
        };

        // Pooled keys taken for this job and not yet recorded: dropped on
        // any failure below, they are discarded, never put back.
        let mut batches = Vec::new();
        let outcomes = if needs_kms {
            let key_id = KmsKeyId::parse(&key_arn, "kms_key_arn").map_err(|e| JobError::Precondition(e.to_string()))?;
            let pooled = self.take_pooled(&key_id, &planned, &mut batches);
            self.run_tasks(&key_id, &planned, pooled).await?
        } else {
            Vec::new()
        };
        let protected_files = fill_in(&mut job, outcomes)?;
        let request_json = serde_json::to_string(&job)?;
        let ledger = self.broker.ledger();
        let entry = ledger.record(origin, ledger_rows(&protected_files, &key_arn)).await?;
        batches.into_iter().for_each(PoolBatch::delivered);
        tracing::info!(
            pipeline_id = %job.pipeline_id,
            kms_key_arn = %key_arn,
            protected_files = protected_files.len(),
            fingerprints = ?protected_files.iter().map(|f| f.fingerprint.as_str()).collect::<Vec<_>>(),
            validate_only,
            "assembled an Elastic Transcoder job"
        );
        if validate_only {
            return Ok(AssembledJob {
                job_id: None,
                request_json,
                job_json: None,
                protected_files,
                kms_key_arn: key_arn,
            });
        }

        let mut assembled =
            AssembledJob { job_id: None, request_json, job_json: None, protected_files, kms_key_arn: key_arn };
        if let Some(ticket) = ticket {
            if let Some(hold) = hold {
                hold.disarm();
            }
            let tokens = self.tokens();
            tokens.mark_planned(ticket, &assembled, &entry).await?;
            let created = tokens.create_job_once(&job, ticket.marker()).await?;
            tracing::info!(job_id = ?created.id(), pipeline_id = %job.pipeline_id, "submitted an Elastic Transcoder job");
            tokens.mark_submitted(ticket, &mut assembled, &created, &entry).await;
            return Ok(assembled);
        }
        let client = et_client(self.et.as_ref())?;
        let answer =
            request::create_job_request(client, &job).send().await.map_err(|e| map_et_error("CreateJob", &e))?;
        let submitted =
            answer.job().ok_or_else(|| EtError::new("CreateJob", EtErrorKind::Internal, "no Job in the answer"))?;
        let job_id = submitted.id().unwrap_or_default().to_owned();
        tracing::info!(job_id = %job_id, pipeline_id = %job.pipeline_id, "submitted an Elastic Transcoder job");
        if let Err(e) = ledger.attach_job(&entry, &job_id).await {
            // The keys are recorded; only the job id is missing from their
            // rows. Failing now would have the caller submit a second job.
            tracing::error!(job_id = %job_id, ledger_entry = %entry, error = %e, "key ledger: job id not recorded");
        }
        assembled.job_json = Some(answer::job_to_json(submitted).to_string());
        assembled.job_id = Some(job_id);
        Ok(assembled)
    }

    /// The ledger and ET as tokened submissions use them.
    fn tokens(&self) -> Tokens<'_> {
        Tokens {
            ledger: self.broker.ledger(),
            et: self.et.as_ref(),
            lease: self.settings.token_lease,
            wait: self.settings.job_deadline,
        }
    }

    /// The pooled keys for the job's fresh keys, by task: for each key
    /// length, all the keys the job needs from its pool at once, or none
    /// (then all of that length are minted now), so concurrent jobs never
    /// strand each other with part of what they need. The batches go to
    /// `batches`, to be marked delivered once the keys are recorded.
    fn take_pooled(
        &self,
        key_id: &KmsKeyId,
        planned: &[Planned],
        batches: &mut Vec<PoolBatch>,
    ) -> Vec<Option<PooledKey>> {
        let mut pooled: Vec<Option<PooledKey>> = planned.iter().map(|_| None).collect();
        for bits in [KeyBits::Aes128, KeyBits::Aes192, KeyBits::Aes256] {
            let wanted: Vec<usize> = planned
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.task, Some(Task::Generate { bits: b, .. }) if b == bits))
                .map(|(index, _)| index)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Some(mut batch) =
                self.broker.take_pooled(key_id, ServiceContext::ElasticTranscoder, bits, wanted.len())
            else {
                continue;
            };
            for (index, key) in wanted.into_iter().zip(batch.take_keys()) {
                pooled[index] = Some(key);
            }
            batches.push(batch);
        }
        pooled
    }

    /// Runs every task, at most `max_concurrent_kms_calls` at a time, under
    /// the job deadline; the first failure cancels the rest (their keys are
    /// dropped and zeroized). A fresh key's task uses its pooled key when
    /// `pooled` has one, else mints it now.
    async fn run_tasks(
        &self,
        key_id: &KmsKeyId,
        planned: &[Planned],
        pooled: Vec<Option<PooledKey>>,
    ) -> Result<Vec<Option<Outcome>>, JobError> {
        let limit = self.settings.max_concurrent_kms_calls.max(1);
        let runs = futures::stream::iter(pooled.into_iter().enumerate())
            .map(|(index, pooled)| async move {
                let item = &planned[index];
                match &item.task {
                    None => Ok((index, None)),
                    Some(task) => self
                        .run_task(key_id, task, pooled)
                        .await
                        .map(|outcome| (index, Some(outcome)))
                        .map_err(|source| key_error(&item.place, source)),
                }
            })
            .buffer_unordered(limit)
            .try_collect::<Vec<_>>();
        let mut done = tokio::time::timeout(self.settings.job_deadline, runs)
            .await
            .map_err(|_| JobError::Deadline(self.settings.job_deadline))??;
        done.sort_by_key(|(index, _)| *index);
        Ok(done.into_iter().map(|(_, outcome)| outcome).collect())
    }

    async fn run_task(
        &self,
        key_id: &KmsKeyId,
        task: &Task,
        pooled: Option<PooledKey>,
    ) -> Result<Outcome, BrokerError> {
        let context = ServiceContext::ElasticTranscoder;
        match task {
            Task::Generate { mode, bits } => {
                // No one needs this key's plaintext again: the pooled key
                // taken for it, else one minted now.
                let issued = match pooled {
                    Some(pooled) => issued_from_pool(pooled, *mode),
                    None => self.broker.mint_wrapped(key_id, *bits, *mode, context).await?,
                };
                let text = issued.block.to_text();
                Ok(Outcome::Made {
                    key: text.key,
                    key_md5: text.key_md5,
                    iv: Some(text.initialization_vector),
                    fingerprint: issued.fingerprint,
                    bits: *bits,
                })
            }
            Task::WrapContentKey(content_key) => {
                let sealed = self.broker.wrap_raw(key_id, content_key, context).await?;
                Ok(Outcome::Made {
                    key: sealed.wrapped.to_base64(),
                    key_md5: encode_base64(&sealed.key_md5),
                    iv: None,
                    fingerprint: sealed.fingerprint,
                    bits: content_key.bits(),
                })
            }
            Task::Verify { wrapped, key_md5, need } => {
                let request = UnwrapRequest {
                    key_id: Some(key_id.clone()),
                    wrapped: wrapped.clone(),
                    key_md5: Some(*key_md5),
                    context,
                };
                let opened = self.broker.open(request, "key_md5").await?;
                if let Some(bits) = need
                    && opened.key.bits() != *bits
                {
                    return Err(crate::custody::keys::KeyError::invalid(
                        "key",
                        format!("must be a {}-bit key, got {} bits", bits.bits(), opened.key.bits().bits()),
                    )
                    .into());
                }
                Ok(Outcome::Verified { fingerprint: opened.fingerprint, bits: opened.key.bits() })
            }
        }
    }
}

/// The error for a block's failed KMS task: a ciphertext KMS cannot open
/// with the pipeline's key is the caller's mistake (`INVALID_ARGUMENT`).
fn key_error(place: &Place, source: BrokerError) -> JobError {
    if let BrokerError::Kms(kms) = &source
        && matches!(kms.kind, KmsErrorKind::InvalidCiphertext)
    {
        return JobError::Invalid(FieldError::new(
            format!("{}.key", place.api),
            format!("KMS cannot decrypt it with the pipeline's key under the Elastic Transcoder context ({kms})"),
        ));
    }
    if let BrokerError::KeyMd5Mismatch { .. } = &source {
        return JobError::Invalid(FieldError::new(
            format!("{}.key_md5", place.api),
            "does not match the MD5 of the key KMS unwrapped",
        ));
    }
    JobError::Key { path: place.api.clone(), source }
}

/// A caller-named key must be the pipeline's: its ARN or its key id.
fn check_named_key(named: &KmsKeyId, pipeline_arn: &str) -> Result<(), JobError> {
    let named = named.as_str();
    let key_id = pipeline_arn.rsplit_once("key/").map(|(_, id)| id);
    if named == pipeline_arn || Some(named) == key_id {
        return Ok(());
    }
    Err(JobError::Precondition(format!(
        "kms_key_id {named} is not the pipeline's KMS key {pipeline_arn}: Elastic Transcoder decrypts keys only with \
         the pipeline's key; leave kms_key_id empty or name that key"
    )))
}

fn decode_md5(text: &str) -> [u8; 16] {
    decode_base64(text, "key_md5").ok().and_then(|d| <[u8; 16]>::try_from(d.as_slice()).ok()).unwrap_or_default()
}

fn decode_wrapped(text: &str) -> WrappedKey {
    WrappedKey::new(decode_base64(text, "key").unwrap_or_default())
}

/// Validates a job against the ET model and decides each block's task:
/// everything `submit` does before the policy, the pipeline and KMS, and
/// pure. Also the entry point of the fuzz targets ([`crate::fuzzing`]).
///
/// # Errors
/// [`JobError::Invalid`] naming the first bad field.
pub(crate) fn check_and_plan(
    job: &mut model::CreateJob,
    content_keys: &mut BTreeMap<usize, DataKey>,
) -> Result<Vec<Planned>, JobError> {
    validate::check_structure(job)?;
    plan_tasks(job, content_keys)
}

/// Checks every block and decides its task, before any KMS call.
fn plan_tasks(
    job: &mut model::CreateJob,
    content_keys: &mut BTreeMap<usize, DataKey>,
) -> Result<Vec<Planned>, JobError> {
    let mut planned = Vec::new();
    plan::visit_blocks(job, &mut |place, _object, block| {
        let task = match block {
            Block::Supplied(enc) => encryption_task(&place, enc, false)?,
            Block::Written(enc) => encryption_task(&place, enc, true)?,
            Block::Hls(hls) => {
                if validate::check_hls(&place, hls)? {
                    Some(Task::Generate { mode: EncryptionMode::AesCbcPkcs7, bits: KeyBits::Aes128 })
                } else {
                    Some(Task::Verify {
                        wrapped: decode_wrapped(&hls.key),
                        key_md5: decode_md5(&hls.key_md5),
                        need: Some(KeyBits::Aes128),
                    })
                }
            }
            Block::PlayReady { index, drm } => {
                let content_key = content_keys.remove(&index);
                validate::check_play_ready(&place, drm, content_key.is_some())?;
                Some(match content_key {
                    Some(key) => Task::WrapContentKey(key),
                    None => Task::Verify {
                        wrapped: decode_wrapped(&drm.key),
                        key_md5: decode_md5(&drm.key_md5),
                        need: None,
                    },
                })
            }
        };
        planned.push(Planned { place, task });
        Ok::<(), FieldError>(())
    })?;
    Ok(planned)
}

/// The task of an `Encryption` element; `written` is true for files ET
/// writes, whose keys the broker may make.
fn encryption_task(place: &Place, enc: &model::Encryption, written: bool) -> Result<Option<Task>, FieldError> {
    let (mode, kind) = validate::check_encryption(place, enc, written)?;
    Ok(match kind {
        BlockKind::ServerSide => None,
        BlockKind::Generate(bits) => Some(Task::Generate { mode, bits }),
        BlockKind::Caller => {
            Some(Task::Verify { wrapped: decode_wrapped(&enc.key), key_md5: decode_md5(&enc.key_md5), need: None })
        }
    })
}

/// Writes the outcomes into the job, in the order they were planned, and
/// lists the protected files.
fn fill_in(job: &mut model::CreateJob, outcomes: Vec<Option<Outcome>>) -> Result<Vec<ProtectedFile>, JobError> {
    let mut outcomes = outcomes.into_iter();
    let mut files = Vec::new();
    plan::visit_blocks(job, &mut |place, object, block| {
        let Some(outcome) = outcomes.next().flatten() else {
            return Ok::<(), JobError>(());
        };
        let (issued_by_broker, fingerprint, key_bits) = match &outcome {
            Outcome::Made { fingerprint, bits, .. } => (true, fingerprint.clone(), bits.bits()),
            Outcome::Verified { fingerprint, bits } => (false, fingerprint.clone(), bits.bits()),
        };
        let encryption = match block {
            Block::Supplied(enc) | Block::Written(enc) => {
                if let Outcome::Made { key, key_md5, iv, .. } = outcome {
                    enc.key = key;
                    enc.key_md5 = key_md5;
                    enc.initialization_vector = iv.unwrap_or_default();
                }
                EncryptionText {
                    mode: enc.mode.clone(),
                    key: enc.key.clone(),
                    key_md5: enc.key_md5.clone(),
                    initialization_vector: enc.initialization_vector.clone(),
                }
            }
            Block::Hls(hls) => {
                if let Outcome::Made { key, key_md5, iv, .. } = outcome {
                    hls.method = "aes-128".to_owned();
                    hls.key = key;
                    hls.key_md5 = key_md5;
                    hls.initialization_vector = iv.unwrap_or_default();
                }
                EncryptionText {
                    mode: "aes-128".to_owned(),
                    key: hls.key.clone(),
                    key_md5: hls.key_md5.clone(),
                    initialization_vector: hls.initialization_vector.clone(),
                }
            }
            Block::PlayReady { drm, .. } => {
                if let Outcome::Made { key, key_md5, .. } = outcome {
                    drm.key = key;
                    drm.key_md5 = key_md5;
                }
                EncryptionText {
                    mode: drm.format.clone(),
                    key: drm.key.clone(),
                    key_md5: drm.key_md5.clone(),
                    initialization_vector: drm.initialization_vector.clone(),
                }
            }
        };
        files.push(ProtectedFile {
            path: place.json,
            object_key: object.to_owned(),
            encryption,
            issued_by_broker,
            key_bits,
            fingerprint,
        });
        Ok(())
    })?;
    Ok(files)
}
