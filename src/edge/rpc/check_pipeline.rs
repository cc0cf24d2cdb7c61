//! `CheckPipeline`: a pipeline's KMS set-up checked requirement by
//! requirement ([`crate::jobs::et::preflight`]); changes nothing. Also maps
//! a preflight report to its protobuf form, which `ConnectPipeline` shares.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::et::preflight::{Outcome, Preflight, Report};
use crate::jobs::preflight::Requirement;

/// Answers one `CheckPipeline` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    preflight: &Preflight,
    request: Request<pb::CheckPipelineRequest>,
) -> Result<Response<pb::CheckPipelineResponse>, Status> {
    gate.call(Rpc::CheckPipeline, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        notes.pipeline(&req.pipeline_id);
        let report = preflight.check(&req.pipeline_id, &grant).await?;
        if let Some(arn) = &report.pipeline.kms_key_arn {
            notes.kms_key_arn(arn);
        }
        Ok(report_to_proto(report))
    })
    .await
}

/// The protobuf form of a report.
pub fn report_to_proto(report: Report) -> pb::CheckPipelineResponse {
    let ready = report.ready();
    pb::CheckPipelineResponse {
        pipeline_id: report.pipeline.id,
        source: report.source.to_owned(),
        kms_key_arn: report.pipeline.kms_key_arn.unwrap_or_default(),
        role: report.pipeline.role,
        region: report.pipeline.region.unwrap_or_default(),
        requirements: requirements_to_proto(report.requirements),
        ready,
    }
}

/// The protobuf form of a preflight's requirements (a pipeline's or a
/// MediaConvert role's).
pub fn requirements_to_proto(requirements: Vec<Requirement>) -> Vec<pb::PipelineRequirement> {
    requirements
        .into_iter()
        .map(|r| pb::PipelineRequirement {
            name: r.name.to_owned(),
            outcome: match r.outcome {
                Outcome::Pass => pb::CheckOutcome::Pass,
                Outcome::Fail => pb::CheckOutcome::Fail,
                Outcome::Unknown => pb::CheckOutcome::Unknown,
            } as i32,
            detail: r.detail,
            fix: r.fix,
        })
        .collect()
}
