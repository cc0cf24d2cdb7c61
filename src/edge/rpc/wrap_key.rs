//! `WrapKey`: key material the caller must use, wrapped by KMS under the
//! service's context. The plaintext arrives; only the wrapped key leaves.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::{encryption_to_proto, origin, parse_context, parse_optional_key_id, record_issued};
use crate::custody::broker::{Broker, BrokerError, WrapRequest};
use crate::custody::keys::{DataKey, EncryptionMode, Iv16};
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;

/// Answers one `WrapKey` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    broker: &Broker,
    request: Request<pb::WrapKeyRequest>,
) -> Result<Response<pb::WrapKeyResponse>, Status> {
    gate.call(Rpc::WrapKey, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let iv = if req.initialization_vector.is_empty() {
            None
        } else {
            Some(Iv16::from_slice(&req.initialization_vector, "initialization_vector").map_err(BrokerError::from)?)
        };
        let parsed = WrapRequest {
            key_id: parse_optional_key_id(&req.kms_key_id, "kms_key_id")?,
            mode: EncryptionMode::parse_aes(&req.mode, "mode").map_err(BrokerError::from)?,
            context: parse_context(req.context, "context").map_err(BrokerError::from)?,
            iv,
            key: DataKey::from_vec(req.plaintext_key, "plaintext_key").map_err(BrokerError::from)?,
        };
        let (context, bits) = (parsed.context, parsed.key.bits());
        let issued = broker.wrap_key(parsed, &grant).await?;
        notes.kms_key_arn(&issued.key_arn);
        notes.key(&issued.fingerprint);
        record_issued(broker, &origin(Rpc::WrapKey, &grant, &notes), &issued, context, bits).await?;
        Ok(pb::WrapKeyResponse {
            encryption: Some(encryption_to_proto(&issued.block)),
            kms_key_arn: issued.key_arn,
            key_fingerprint: issued.fingerprint,
        })
    })
    .await
}
