//! `IssueDataKey`: a fresh data key, wrapped by KMS under the service's
//! context; its plaintext only when the caller asked and may export it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::{encryption_to_proto, origin, parse_context, parse_optional_key_id, record_issued};
use crate::custody::broker::{Broker, BrokerError, IssueRequest};
use crate::custody::keys::{EncryptionMode, KeyBits};
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;

/// Answers one `IssueDataKey` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    broker: &Broker,
    request: Request<pb::IssueDataKeyRequest>,
) -> Result<Response<pb::IssueDataKeyResponse>, Status> {
    gate.call(Rpc::IssueDataKey, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let parsed = IssueRequest {
            key_id: parse_optional_key_id(&req.kms_key_id, "kms_key_id")?,
            bits: KeyBits::parse(req.key_bits, "key_bits").map_err(BrokerError::from)?,
            mode: EncryptionMode::parse_aes(&req.mode, "mode").map_err(BrokerError::from)?,
            return_plaintext: req.return_plaintext,
            context: parse_context(req.context, "context").map_err(BrokerError::from)?,
        };
        let (context, bits) = (parsed.context, parsed.bits);
        let issued = broker.issue_data_key(parsed, &grant).await?;
        notes.kms_key_arn(&issued.key_arn);
        notes.key(&issued.fingerprint);
        record_issued(broker, &origin(Rpc::IssueDataKey, &grant, &notes), &issued, context, bits).await?;
        Ok(pb::IssueDataKeyResponse {
            encryption: Some(encryption_to_proto(&issued.block)),
            kms_key_arn: issued.key_arn,
            // Only present when asked and allowed; prost needs an owned copy.
            plaintext_key: issued.plaintext.map(|key| key.expose_secret().to_vec()).unwrap_or_default(),
            key_fingerprint: issued.fingerprint,
        })
    })
    .await
}
