//! `ConnectPipeline`: a KMS key put on a pipeline and its role let decrypt
//! with it ([`crate::jobs::et::preflight::connect`]), or, without `apply`,
//! the plan of it. Policy-governed (the caller's pipelines and KMS keys)
//! and audited like every RPC.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::check_pipeline::report_to_proto;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::et::preflight::Preflight;
use crate::jobs::et::preflight::connect::parse_key_arn;
use crate::jobs::preflight::change::Change;

/// Answers one `ConnectPipeline` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    preflight: &Preflight,
    request: Request<pb::ConnectPipelineRequest>,
) -> Result<Response<pb::ConnectPipelineResponse>, Status> {
    gate.call(Rpc::ConnectPipeline, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        notes.pipeline(&req.pipeline_id);
        if parse_key_arn(&req.kms_key_arn).is_ok() {
            // Recorded for refusals too: the key the caller tried to connect.
            notes.kms_key_arn(&req.kms_key_arn);
        }
        let connection = preflight.connect(&req.pipeline_id, &req.kms_key_arn, req.apply, &grant).await?;
        Ok(pb::ConnectPipelineResponse {
            changes: changes_to_proto(connection.changes),
            applied: connection.applied,
            check: Some(report_to_proto(connection.report)),
        })
    })
    .await
}

/// The protobuf form of a connect's changes (a pipeline's or a MediaConvert
/// role's).
pub fn changes_to_proto(changes: Vec<Change>) -> Vec<pb::PipelineChange> {
    changes
        .into_iter()
        .map(|c| pb::PipelineChange {
            action: c.action.to_owned(),
            detail: c.detail,
            request_json: c.request_json,
            state: c.state.as_str().to_owned(),
        })
        .collect()
}
