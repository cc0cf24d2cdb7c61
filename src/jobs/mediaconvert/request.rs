//! A MediaConvert job request and its answer, in domain terms: what the
//! edge parses into and what the token's stored answer holds. Must never
//! hold a static key: answers carry redacted documents only (a
//! `validate_only` answer to a caller allowed plaintext export aside).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::inputs::InputRequests;
use super::outputs::OutputRequests;
use crate::custody::kms::KmsKeyId;
use crate::ledger::RequestToken;

/// A `SubmitMediaConvertJob` request in domain terms.
#[derive(Debug, Default)]
pub struct McJobRequest {
    /// The CreateJob document, member names.
    pub job: Value,
    /// What the inputs ask.
    pub inputs: InputRequests,
    /// What the outputs ask.
    pub outputs: OutputRequests,
    /// The KMS key for static keys and SSE-KMS, where the caller names one.
    pub kms_key_id: Option<KmsKeyId>,
    /// Assemble and validate only; submit nothing.
    pub validate_only: bool,
    /// The caller's idempotency token.
    pub request_token: Option<RequestToken>,
}

/// One key of a job, as the answer names it (never its bytes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobKey {
    /// Its place in the document.
    pub place: String,
    /// Its audit fingerprint.
    pub fingerprint: String,
    /// The KMS key that wraps it.
    pub kms_key_arn: String,
    /// The fingerprint of the Elastic Transcoder key it was rewrapped from.
    pub rewrapped_from: Option<String>,
}

/// A job assembled (and submitted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct McAnswer {
    /// MediaConvert's job id, once submitted.
    pub job_id: Option<String>,
    /// The CreateJob document, member names; static keys redacted unless
    /// this is a `validate_only` answer to a caller allowed plaintext export.
    pub create_job_json: String,
    /// MediaConvert's job, member names, static keys redacted.
    pub job_json: Option<String>,
    /// Every key the job uses.
    pub keys: Vec<JobKey>,
    /// Whether static keys were redacted from `create_job_json`.
    pub static_keys_redacted: bool,
}
