//! `ConnectMediaConvertRole`: a MediaConvert job role let decrypt with a
//! KMS key under the MediaConvert context
//! ([`crate::jobs::mediaconvert::role::connect`]), or, without `apply`, the
//! plan of it. Granted only by name (the policy's `"*"` leaves it out), held
//! to the caller's KMS keys, and audited like every RPC.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::check_mediaconvert_role::report_to_proto;
use super::connect_pipeline::changes_to_proto;
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;
use crate::jobs::mediaconvert::role::{RoleCheck, RoleRequest, parse_role_arn};
use crate::jobs::preflight::change::parse_key_arn;

/// Answers one `ConnectMediaConvertRole` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    check: &RoleCheck,
    request: Request<pb::ConnectMediaConvertRoleRequest>,
) -> Result<Response<pb::ConnectMediaConvertRoleResponse>, Status> {
    gate.call(Rpc::ConnectMediaConvertRole, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        if parse_key_arn(&req.kms_key_arn).is_ok() {
            // Recorded for refusals too: the key the caller tried to connect.
            notes.kms_key_arn(&req.kms_key_arn);
        }
        if parse_role_arn(&req.role_arn).is_ok() {
            notes.role_arn(&req.role_arn);
        }
        let request = RoleRequest { role_arn: req.role_arn, kms_key_arn: req.kms_key_arn, ..RoleRequest::default() };
        let connection = check.connect(&request, req.apply, &grant).await?;
        notes.kms_key_arn(&connection.report.subject.kms_key_arn);
        notes.role_arn(&connection.report.subject.role_arn);
        Ok(pb::ConnectMediaConvertRoleResponse {
            changes: changes_to_proto(connection.changes),
            applied: connection.applied,
            check: Some(report_to_proto(connection.report)),
        })
    })
    .await
}
