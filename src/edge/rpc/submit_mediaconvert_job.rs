//! `SubmitMediaConvertJob`: a MediaConvert CreateJob document (the caller's
//! own JSON) keyed, validated and submitted, or only assembled with
//! `validate_only`. This file parses the request and maps the answer;
//! [`crate::jobs::mediaconvert`] does the work. Must never echo the
//! document: a refusal names the JSON path and the rule.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::parse_optional_key_id;
use crate::custody::field::FieldError;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::mediaconvert::inputs::InputRequests;
use crate::jobs::mediaconvert::outputs::OutputRequests;
use crate::jobs::mediaconvert::{McAnswer, McJobRequest, MediaConvert};
use crate::ledger::RequestToken;

/// The most inputs one request may name keys for (MediaConvert takes at
/// most 150 inputs per job).
const MAX_INPUT_KEYS: usize = 150;

/// Parses the request before anything is looked up or wrapped.
fn parse(req: pb::SubmitMediaConvertJobRequest) -> Result<McJobRequest, Status> {
    let bad = |e: FieldError| Status::invalid_argument(e.to_string());
    if req.create_job_json.trim().is_empty() {
        return Err(bad(FieldError::new("create_job_json", "required: the CreateJob document, JSON")));
    }
    let job: serde_json::Value = serde_json::from_str(&req.create_job_json).map_err(|e| {
        bad(FieldError::new(
            "create_job_json",
            format!("is not JSON (line {}, column {}): {}", e.line(), e.column(), e.classify_name()),
        ))
    })?;
    if req.input_keys.len() > MAX_INPUT_KEYS {
        return Err(bad(FieldError::new("input_keys", format!("at most {MAX_INPUT_KEYS} entries"))));
    }
    let mut fingerprints = BTreeMap::new();
    for (index, key) in req.input_keys.into_iter().enumerate() {
        if key.key_fingerprint.is_empty() {
            return Err(bad(FieldError::new(format!("input_keys[{index}].key_fingerprint"), "required")));
        }
        let input = usize::try_from(key.input_index).unwrap_or(usize::MAX);
        if fingerprints.insert(input, key.key_fingerprint).is_some() {
            return Err(bad(FieldError::new(
                format!("input_keys[{index}].input_index"),
                format!("input {input} is named twice"),
            )));
        }
    }
    Ok(McJobRequest {
        job,
        inputs: InputRequests { fingerprints, rewrap_et_keys: req.rewrap_et_inputs },
        outputs: OutputRequests {
            encrypt_outputs: req.encrypt_outputs,
            bind_job_context: req.bind_job_context,
            constant_iv: req.constant_initialization_vector,
        },
        kms_key_id: parse_optional_key_id(&req.kms_key_id, "kms_key_id")?,
        validate_only: req.validate_only,
        request_token: RequestToken::parse_optional(&req.request_token, "request_token").map_err(bad)?,
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "a syntax error",
            serde_json::error::Category::Data => "a wrong type",
            serde_json::error::Category::Eof => "it ends too soon",
        }
    }
}

/// Answers one `SubmitMediaConvertJob` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    mediaconvert: &MediaConvert,
    request: Request<pb::SubmitMediaConvertJobRequest>,
) -> Result<Response<pb::SubmitMediaConvertJobResponse>, Status> {
    gate.call(Rpc::SubmitMediaConvertJob, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let parsed = parse(req)?;
        let origin = super::origin(Rpc::SubmitMediaConvertJob, &grant, &notes);
        let answer = mediaconvert.submit(parsed, &grant, &origin).await?;
        if let Some(job_id) = &answer.job_id {
            notes.job_id(job_id);
        }
        for key in &answer.keys {
            if let Some(from) = &key.rewrapped_from {
                notes.key(from);
            }
            notes.key(&key.fingerprint);
        }
        if let Some(first) = answer.keys.first() {
            notes.kms_key_arn(&first.kms_key_arn);
        }
        Ok(response(answer))
    })
    .await
}

fn response(answer: McAnswer) -> pb::SubmitMediaConvertJobResponse {
    pb::SubmitMediaConvertJobResponse {
        job_id: answer.job_id.unwrap_or_default(),
        create_job_json: answer.create_job_json,
        job_json: answer.job_json.unwrap_or_default(),
        keys: answer
            .keys
            .into_iter()
            .map(|key| pb::MediaConvertJobKey {
                place: key.place,
                key_fingerprint: key.fingerprint,
                kms_key_arn: key.kms_key_arn,
                rewrapped_from: key.rewrapped_from.unwrap_or_default(),
            })
            .collect(),
        static_keys_redacted: answer.static_keys_redacted,
    }
}
