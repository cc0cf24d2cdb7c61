//! Idempotent `SubmitEncryptedJob`: a request token makes a repeat answer
//! the first answer, with no new KMS call and no second job.
//!
//! Owns ET's side of the token's claim (the loop is `jobs::ticket`'s,
//! shared with MediaConvert): the resolution of a PENDING submission whose outcome is unknown (its job found at Elastic
//! Transcoder by the token in `UserMetadata`, `ListJobsByPipeline`), and
//! the CreateJob POST that never lets a lost answer become a second job
//! (no blind SDK retry: a failed attempt is looked up before the next).
//! Must never POST a planned job while another call may still be posting
//! it (a claim's lease), or answer a token with another request's job.

use std::time::Duration;

use aws_sdk_elastictranscoder::types::Job;
use sha2::Digest as _;

use super::assembled::AssembledJob;
use super::error::JobError;
use super::error::{EtError, EtErrorKind, map_et_error, no_submission};
use super::{model, request};
use crate::jobs::ticket::FindPlanned;
pub(super) use crate::jobs::ticket::{Start, Ticket};
use crate::ledger::{Ledger, METADATA_KEY, RequestToken, SubmissionState, TokenAnswer};

/// The most ListJobsByPipeline pages searched for a token's job.
const MAX_PAGES: usize = 20;

/// The most CreateJob attempts of one submission.
const CREATE_ATTEMPTS: u32 = 3;

/// Checks the request may carry a token and makes its ticket (the hash of
/// the request as the caller sent it).
///
/// # Errors
/// [`JobError::Invalid`] naming the field.
pub(super) fn new_ticket(
    identity: &str,
    token: RequestToken,
    job: &model::CreateJob,
    kms_key_id: Option<&str>,
    validate_only: bool,
    has_content_keys: bool,
) -> Result<Ticket, JobError> {
    let refuse = |field: &str, rule: &str| Err(JobError::Invalid(crate::custody::field::FieldError::new(field, rule)));
    if validate_only {
        return refuse("request_token", "not with validate_only, which submits nothing to repeat");
    }
    if has_content_keys {
        return refuse(
            "request_token",
            "not with playlists[].play_ready_drm.content_key (a repeat could not be compared without keeping \
             the plaintext); pass the wrapped key instead",
        );
    }
    if job.user_metadata.contains_key(METADATA_KEY) {
        return refuse("user_metadata", "keybroker-request-token is the broker's key for request_token");
    }
    if job.user_metadata.len() >= super::validate::MAX_USER_METADATA {
        return refuse("user_metadata", "at most 9 pairs with request_token (the token takes the tenth)");
    }
    let body = serde_json::to_vec(job)?;
    Ok(Ticket::new(identity, token, |hash| {
        hash.update(&body);
        hash.update([0]);
        hash.update(kms_key_id.unwrap_or_default().as_bytes());
    }))
}

/// A ticket's planned jobs, as Elastic Transcoder has them in a pipeline.
struct PlannedJobs<'a> {
    tokens: &'a Tokens<'a>,
    ticket: &'a Ticket,
    pipeline_id: &'a str,
}

impl FindPlanned<AssembledJob> for PlannedJobs<'_> {
    type Error = JobError;

    async fn find(&self, planned: &mut AssembledJob, entry: &str) -> Result<bool, JobError> {
        let Some(job) = self.tokens.find_job(self.pipeline_id, self.ticket.marker()).await? else {
            return Ok(false);
        };
        self.tokens.mark_submitted(self.ticket, planned, &job, entry).await;
        Ok(true)
    }
}

/// The ledger and Elastic Transcoder, as a tokened submission uses them.
pub(super) struct Tokens<'a> {
    /// Where tokens are claimed and answers kept.
    pub(super) ledger: &'a Ledger,
    /// Elastic Transcoder, where configured.
    pub(super) et: Option<&'a aws_sdk_elastictranscoder::Client>,
    /// How long a claim is owned.
    pub(super) lease: Duration,
    /// The longest wait for another call's submission.
    pub(super) wait: Duration,
}

/// The Elastic Transcoder client, where one is configured.
///
/// # Errors
/// [`JobError::Et`] (`UNAVAILABLE`) when none is.
pub(super) fn et_client(
    et: Option<&aws_sdk_elastictranscoder::Client>,
) -> Result<&aws_sdk_elastictranscoder::Client, JobError> {
    et.ok_or_else(no_submission)
}

impl Tokens<'_> {
    /// Claims `ticket` through the shared claim loop; a planned job is
    /// looked up in `pipeline_id` by the ticket's marker. While another
    /// call holds the token, waits (at most the job deadline) for its
    /// answer or for its lease to run out.
    ///
    /// # Errors
    /// `ALREADY_EXISTS` for another request under the token
    /// ([`JobError::TokenReused`]), [`JobError::TokenInFlight`] when the
    /// first call is still at it, a ledger or ET failure.
    pub(super) async fn claim(&self, ticket: &Ticket, pipeline_id: &str) -> Result<Start<AssembledJob>, JobError> {
        let planned_jobs = PlannedJobs { tokens: self, ticket, pipeline_id };
        crate::jobs::ticket::claim(self.ledger, ticket, self.lease, self.wait, &planned_jobs).await
    }

    /// Records the planned answer (PENDING) before the job is POSTed.
    pub(super) async fn mark_planned(
        &self,
        ticket: &Ticket,
        planned: &AssembledJob,
        entry: &str,
    ) -> Result<(), JobError> {
        let json = serde_json::to_string(planned)?;
        let answer = TokenAnswer { state: SubmissionState::Pending, answer_json: &json, job_id: None, entry_id: entry };
        Ok(self.ledger.set_token_answer(ticket.key(), &answer).await?)
    }

    /// Fills ET's job into `planned` and records it SUBMITTED. A failure is
    /// logged, not answered: the job exists, and a repeat finds it by its
    /// token.
    pub(super) async fn mark_submitted(&self, ticket: &Ticket, planned: &mut AssembledJob, job: &Job, entry: &str) {
        let job_id = job.id().unwrap_or_default().to_owned();
        planned.job_id = Some(job_id.clone());
        planned.job_json = Some(super::answer::job_to_json(job).to_string());
        let ledger = self.ledger;
        let recorded = async {
            ledger.attach_job(entry, &job_id).await?;
            let json =
                serde_json::to_string(&*planned).map_err(|e| crate::ledger::LedgerError::Corrupt(e.to_string()))?;
            let answer = TokenAnswer {
                state: SubmissionState::Submitted,
                answer_json: &json,
                job_id: Some(&job_id),
                entry_id: entry,
            };
            ledger.set_token_answer(ticket.key(), &answer).await
        };
        if let Err(e) = recorded.await {
            tracing::error!(job_id = %job_id, error = %e, "key ledger: submitted job not recorded; a repeat resolves it at ET");
        }
    }

    /// POSTs `job` (which carries the ticket's marker) once: an attempt
    /// whose outcome is unknown is looked up at ET by the marker before
    /// the next, so a lost answer never becomes a second job.
    ///
    /// # Errors
    /// [`JobError::Et`] when ET refuses or stays unreachable.
    pub(super) async fn create_job_once(&self, job: &model::CreateJob, marker: &str) -> Result<Job, JobError> {
        let client = et_client(self.et)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let override_retries = aws_sdk_elastictranscoder::config::Builder::default()
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
            let sent =
                request::create_job_request(client, job).customize().config_override(override_retries).send().await;
            let failure = match sent {
                Ok(answer) => {
                    return answer.job().cloned().ok_or_else(|| {
                        EtError::new("CreateJob", EtErrorKind::Internal, "no Job in the answer").into()
                    });
                }
                Err(e) => map_et_error("CreateJob", &e),
            };
            if failure.kind != EtErrorKind::Unavailable {
                return Err(failure.into());
            }
            if let Some(found) = self.find_job(&job.pipeline_id, marker).await? {
                tracing::info!(attempt, "CreateJob answer lost; found the job by its request token");
                return Ok(found);
            }
            if attempt >= CREATE_ATTEMPTS {
                return Err(failure.into());
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }

    /// POSTs a planned job again after taking over its token, and records it.
    pub(super) async fn resubmit(
        &self,
        ticket: &Ticket,
        mut planned: AssembledJob,
        entry: &str,
    ) -> Result<AssembledJob, JobError> {
        let job: model::CreateJob = serde_json::from_str(&planned.request_json)?;
        let created = self.create_job_once(&job, ticket.marker()).await?;
        self.mark_submitted(ticket, &mut planned, &created, entry).await;
        Ok(planned)
    }

    /// The job of `pipeline_id` whose `UserMetadata` carries `marker`,
    /// newest first, searching at most [`MAX_PAGES`] pages.
    async fn find_job(&self, pipeline_id: &str, marker: &str) -> Result<Option<Job>, JobError> {
        let client = et_client(self.et)?;
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = client
                .list_jobs_by_pipeline()
                .pipeline_id(pipeline_id)
                .ascending("false")
                .set_page_token(page_token.take())
                .send()
                .await
                .map_err(|e| map_et_error("ListJobsByPipeline", &e))?;
            let found = page
                .jobs()
                .iter()
                .find(|job| job.user_metadata().and_then(|m| m.get(METADATA_KEY)).is_some_and(|v| v == marker));
            if let Some(job) = found {
                return Ok(Some(job.clone()));
            }
            match page.next_page_token() {
                Some(next) => page_token = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(None)
    }
}
