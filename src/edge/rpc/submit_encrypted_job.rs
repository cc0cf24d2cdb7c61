//! `SubmitEncryptedJob`: an Elastic Transcoder job keyed, validated and
//! submitted (or only assembled, with `validate_only`). The request's
//! mapping to the domain job lives in [`super::job`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::job::job_request_from_proto;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::et::{AssembledJob, Transcoder};

/// Answers one `SubmitEncryptedJob` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    transcoder: &Transcoder,
    request: Request<pb::SubmitEncryptedJobRequest>,
) -> Result<Response<pb::SubmitEncryptedJobResponse>, Status> {
    gate.call(Rpc::SubmitEncryptedJob, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        notes.pipeline(&req.pipeline_id);
        let parsed = job_request_from_proto(req)?;
        let origin = super::origin(Rpc::SubmitEncryptedJob, &grant, &notes);
        let assembled = transcoder.submit(parsed, &grant, &origin).await?;
        notes.kms_key_arn(&assembled.kms_key_arn);
        if let Some(job_id) = &assembled.job_id {
            notes.job_id(job_id);
        }
        for file in &assembled.protected_files {
            notes.key(&file.fingerprint);
        }
        Ok(job_response(assembled))
    })
    .await
}

fn job_response(assembled: AssembledJob) -> pb::SubmitEncryptedJobResponse {
    pb::SubmitEncryptedJobResponse {
        job_id: assembled.job_id.unwrap_or_default(),
        create_job_request_json: assembled.request_json,
        job_json: assembled.job_json.unwrap_or_default(),
        protected_files: assembled
            .protected_files
            .into_iter()
            .map(|file| pb::ProtectedFile {
                path: file.path,
                object_key: file.object_key,
                encryption: Some(pb::Encryption {
                    mode: file.encryption.mode,
                    key: file.encryption.key,
                    key_md5: file.encryption.key_md5,
                    initialization_vector: file.encryption.initialization_vector,
                }),
                issued_by_broker: file.issued_by_broker,
                key_fingerprint: file.fingerprint,
            })
            .collect(),
        kms_key_arn: assembled.kms_key_arn,
    }
}
