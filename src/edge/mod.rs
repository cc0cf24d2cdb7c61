//! The edge: the gRPC service, from bytes on a connection to domain calls
//! and back.
//!
//! A connection is accepted within the connection limits ([`listen`]) and
//! carries its peer and identity ([`conn`]; TLS from [`tls`] names the
//! caller). A call on it is authorised and placed under the concurrency
//! limits before its body is read ([`admit`]), decoded ([`codec`]), then
//! passes the one call [`gate`] (deadline, audit record, metrics, request
//! id); its [`rpc`] file parses the protobuf into domain types, calls the
//! domain, and maps the answer back; [`status`] maps every domain error to
//! its gRPC status.
//!
//! Must never put plaintext key bytes in a status message or a log line.

pub mod admit;
pub mod codec;
pub mod conn;
pub mod gate;
pub mod listen;
pub mod pb;
pub mod rpc;
pub mod status;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::custody::broker::Broker;
use crate::jobs::et::Transcoder;
use crate::jobs::et::preflight::Preflight;
use crate::jobs::mediaconvert::MediaConvert;
use crate::jobs::mediaconvert::role::{RoleCheck, RoleSettings};
use crate::objects::Objects;
use gate::{Gate, ResponseStream};
use pb::key_broker_server::KeyBroker;

/// The gRPC face of the broker.
#[derive(Clone)]
pub struct Api {
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    gate: Arc<Gate>,
    objects: Arc<Objects>,
    preflight: Arc<Preflight>,
    mediaconvert: Arc<MediaConvert>,
    role_check: Arc<RoleCheck>,
}

impl Api {
    /// Serves `broker` and `transcoder` behind `gate`; object encryption
    /// without S3 mode until [`Api::with_objects`], the pipeline preflight
    /// without AWS until [`Api::with_preflight`], the MediaConvert role
    /// check without AWS or settings until [`Api::with_role_check`].
    pub fn new(broker: Arc<Broker>, transcoder: Arc<Transcoder>, gate: Arc<Gate>) -> Self {
        let objects = Arc::new(Objects::new(broker.clone(), None, Default::default()));
        let preflight = Arc::new(Preflight::new(broker.clone(), transcoder.clone(), None));
        let mediaconvert = Arc::new(MediaConvert::new(broker.clone(), None, Default::default()));
        let role_check = Arc::new(RoleCheck::new(broker.clone(), None, RoleSettings::default()));
        Api { broker, transcoder, gate, objects, preflight, mediaconvert, role_check }
    }

    /// Serves `CheckMediaConvertRole`/`ConnectMediaConvertRole` through
    /// `role_check` (its AWS clients and the configured role and key).
    #[must_use]
    pub fn with_role_check(mut self, role_check: Arc<RoleCheck>) -> Self {
        self.role_check = role_check;
        self
    }

    /// Serves `CheckPipeline`/`ConnectPipeline` through `preflight` (its
    /// AWS clients).
    #[must_use]
    pub fn with_preflight(mut self, preflight: Arc<Preflight>) -> Self {
        self.preflight = preflight;
        self
    }

    /// Serves `SubmitMediaConvertJob` through `mediaconvert` (its client and
    /// settings); without it, MediaConvert jobs are `validate_only`.
    #[must_use]
    pub fn with_mediaconvert(mut self, mediaconvert: Arc<MediaConvert>) -> Self {
        self.mediaconvert = mediaconvert;
        self
    }

    /// Serves `EncryptObject`/`DecryptObject` through `objects` (its S3
    /// client and settings).
    #[must_use]
    pub fn with_objects(mut self, objects: Arc<Objects>) -> Self {
        self.objects = objects;
        self
    }
}

#[tonic::async_trait]
impl KeyBroker for Api {
    async fn issue_data_key(
        &self,
        request: Request<pb::IssueDataKeyRequest>,
    ) -> Result<Response<pb::IssueDataKeyResponse>, Status> {
        rpc::issue_data_key::handle(&self.gate, &self.broker, request).await
    }

    async fn wrap_key(&self, request: Request<pb::WrapKeyRequest>) -> Result<Response<pb::WrapKeyResponse>, Status> {
        rpc::wrap_key::handle(&self.gate, &self.broker, request).await
    }

    async fn unwrap_key(
        &self,
        request: Request<pb::UnwrapKeyRequest>,
    ) -> Result<Response<pb::UnwrapKeyResponse>, Status> {
        rpc::unwrap_key::handle(&self.gate, &self.broker, request).await
    }

    async fn submit_encrypted_job(
        &self,
        request: Request<pb::SubmitEncryptedJobRequest>,
    ) -> Result<Response<pb::SubmitEncryptedJobResponse>, Status> {
        rpc::submit_encrypted_job::handle(&self.gate, &self.transcoder, request).await
    }

    type EncryptObjectStream = ResponseStream<pb::EncryptObjectResponse>;

    async fn encrypt_object(
        &self,
        request: Request<Streaming<pb::EncryptObjectRequest>>,
    ) -> Result<Response<Self::EncryptObjectStream>, Status> {
        rpc::encrypt_object::handle(&self.gate, &self.objects, request).await
    }

    async fn lookup_keys(
        &self,
        request: Request<pb::LookupKeysRequest>,
    ) -> Result<Response<pb::LookupKeysResponse>, Status> {
        rpc::lookup_keys::handle(&self.gate, &self.broker, request).await
    }

    async fn rewrap_keys(
        &self,
        request: Request<pb::RewrapKeysRequest>,
    ) -> Result<Response<pb::RewrapKeysResponse>, Status> {
        rpc::rewrap_keys::handle(&self.gate, &self.broker, request).await
    }

    async fn submit_media_convert_job(
        &self,
        request: Request<pb::SubmitMediaConvertJobRequest>,
    ) -> Result<Response<pb::SubmitMediaConvertJobResponse>, Status> {
        rpc::submit_mediaconvert_job::handle(&self.gate, &self.mediaconvert, request).await
    }

    type DecryptObjectStream = ResponseStream<pb::DecryptObjectResponse>;

    async fn decrypt_object(
        &self,
        request: Request<Streaming<pb::DecryptObjectRequest>>,
    ) -> Result<Response<Self::DecryptObjectStream>, Status> {
        rpc::decrypt_object::handle(&self.gate, &self.objects, request).await
    }

    async fn check_pipeline(
        &self,
        request: Request<pb::CheckPipelineRequest>,
    ) -> Result<Response<pb::CheckPipelineResponse>, Status> {
        rpc::check_pipeline::handle(&self.gate, &self.preflight, request).await
    }

    async fn connect_pipeline(
        &self,
        request: Request<pb::ConnectPipelineRequest>,
    ) -> Result<Response<pb::ConnectPipelineResponse>, Status> {
        rpc::connect_pipeline::handle(&self.gate, &self.preflight, request).await
    }

    async fn check_media_convert_role(
        &self,
        request: Request<pb::CheckMediaConvertRoleRequest>,
    ) -> Result<Response<pb::CheckMediaConvertRoleResponse>, Status> {
        rpc::check_mediaconvert_role::handle(&self.gate, &self.role_check, request).await
    }

    async fn connect_media_convert_role(
        &self,
        request: Request<pb::ConnectMediaConvertRoleRequest>,
    ) -> Result<Response<pb::ConnectMediaConvertRoleResponse>, Status> {
        rpc::connect_mediaconvert_role::handle(&self.gate, &self.role_check, request).await
    }
}
