//! `UnwrapKey`: a wrapped key's plaintext, for callers granted plaintext
//! export (the gate checks it before the request is read).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::bounds;
use super::parse_unwrap;
use crate::custody::broker::{Broker, BrokerError};
use crate::custody::keys::{Iv16, KeyError, decode_base64};
use crate::custody::rpc::Rpc;
use crate::edge::gate::Gate;
use crate::edge::pb;

/// Answers one `UnwrapKey` call.
///
/// # Errors
/// The call's status.
pub async fn handle(
    gate: &Arc<Gate>,
    broker: &Broker,
    request: Request<pb::UnwrapKeyRequest>,
) -> Result<Response<pb::UnwrapKeyResponse>, Status> {
    gate.call(Rpc::UnwrapKey, request, |mut req, grant, notes| async move {
        bounds::check(&mut req, "")?;
        let block =
            req.encryption.ok_or_else(|| KeyError::invalid("encryption", "required")).map_err(BrokerError::from)?;
        let parsed = parse_unwrap(&block, req.context, &req.kms_key_id)?;
        notes.key(&broker.fingerprint(&parsed.wrapped));
        // Read as strictly as the broker writes it: 16 bytes or none.
        let iv = if block.initialization_vector.is_empty() {
            Vec::new()
        } else {
            let field = "encryption.initialization_vector";
            let bytes = decode_base64(&block.initialization_vector, field).map_err(BrokerError::from)?;
            Iv16::from_slice(&bytes, field).map_err(BrokerError::from)?;
            bytes
        };
        let unwrapped = broker.unwrap_key(parsed, &grant).await?;
        notes.kms_key_arn(&unwrapped.key_arn);
        Ok(pb::UnwrapKeyResponse {
            plaintext_key: unwrapped.key.expose_secret().to_vec(),
            kms_key_arn: unwrapped.key_arn,
            initialization_vector: iv,
            key_fingerprint: unwrapped.fingerprint,
        })
    })
    .await
}
