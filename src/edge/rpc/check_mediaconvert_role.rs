//! `CheckMediaConvertRole`: a MediaConvert job role's KMS set-up checked
//! requirement by requirement ([`crate::jobs::mediaconvert::role`]);
//! changes nothing. Also maps a role report to its protobuf form, which
//! `ConnectMediaConvertRole` shares.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::check_pipeline::requirements_to_proto;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::mediaconvert::role::{RoleCheck, RoleReport, RoleRequest, parse_role_arn};
use crate::jobs::preflight::change::parse_key_arn;

/// Answers one `CheckMediaConvertRole` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    check: &RoleCheck,
    request: Request<pb::CheckMediaConvertRoleRequest>,
) -> Result<Response<pb::CheckMediaConvertRoleResponse>, Status> {
    gate.call(Rpc::CheckMediaConvertRole, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        if parse_key_arn(&req.kms_key_arn).is_ok() {
            notes.kms_key_arn(&req.kms_key_arn);
        }
        if parse_role_arn(&req.role_arn).is_ok() {
            notes.role_arn(&req.role_arn);
        }
        let request = RoleRequest {
            role_arn: req.role_arn,
            kms_key_arn: req.kms_key_arn,
            input_bucket: req.input_bucket,
            output_bucket: req.output_bucket,
        };
        let report = check.check(&request, &grant).await?;
        notes.kms_key_arn(&report.subject.kms_key_arn);
        notes.role_arn(&report.subject.role_arn);
        Ok(report_to_proto(report))
    })
    .await
}

/// The protobuf form of a report.
pub fn report_to_proto(report: RoleReport) -> pb::CheckMediaConvertRoleResponse {
    let ready = report.ready();
    pb::CheckMediaConvertRoleResponse {
        role_arn: report.subject.role_arn,
        source: report.subject.source.to_owned(),
        kms_key_arn: report.subject.kms_key_arn,
        region: report.region.unwrap_or_default(),
        requirements: requirements_to_proto(report.requirements),
        ready,
        input_bucket: report.subject.input_bucket.unwrap_or_default(),
        output_bucket: report.subject.output_bucket.unwrap_or_default(),
    }
}
