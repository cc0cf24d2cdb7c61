//! Startup, layers and shutdown of the gRPC server.
//!
//! [`run`] takes a bound listener, so tests bind `127.0.0.1:0`. It serves the
//! broker, the standard `grpc.health.v1` service and server reflection (v1
//! and v1alpha, the health service's descriptors included). When `shutdown`
//! resolves, health goes NOT_SERVING, the listener closes, and in-flight
//! calls get `shutdown_grace_secs` to finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::api::Api;
use crate::broker::{Broker, BrokerSettings};
use crate::config::{Config, ConfigError, KmsBackend};
use crate::fingerprint::Fingerprinter;
use crate::kms::{AwsKms, Kms, KmsKeyId, LocalKeyring};
use crate::pb;
use crate::pb::key_broker_server::KeyBrokerServer;
use crate::transcoder::pipeline::Pipelines;
use crate::transcoder::{Transcoder, TranscoderSettings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local keyring could not be opened.
    #[error(transparent)]
    Keyring(#[from] crate::kms::local::KeyringError),
    /// Reflection descriptors could not be loaded.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The OS random generator failed.
    #[error("random number generator: {0}")]
    Random(String),
    /// The server task died.
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The KMS backend the configuration names.
///
/// # Errors
/// [`ServerError::Keyring`] when the local master key is unusable.
pub async fn build_kms(config: &Config) -> Result<Arc<dyn Kms>, ServerError> {
    Ok(match config.kms.backend {
        KmsBackend::Local => Arc::new(LocalKeyring::open_or_create(&config.kms.local.master_key_file)?),
        KmsBackend::Aws => Arc::new(AwsKms::new(&crate::cloud::load_sdk_config(&config.kms).await)),
    })
}

/// The Elastic Transcoder side: static pipelines, and an ET client where
/// the configuration lets the broker submit.
pub fn build_transcoder(
    config: &Config,
    broker: Arc<Broker>,
    et: Option<aws_sdk_elastictranscoder::Client>,
) -> Arc<Transcoder> {
    let settings = TranscoderSettings {
        max_concurrent_kms_calls: config.transcoder.max_concurrent_kms_calls,
        job_deadline: Duration::from_millis(config.transcoder.job_deadline_ms),
    };
    let pipelines = Pipelines::new(
        config.transcoder.pipelines.clone(),
        et.clone(),
        Duration::from_secs(config.transcoder.pipeline_cache_ttl_secs),
    );
    Arc::new(Transcoder::new(broker, pipelines, et, settings))
}

/// The custody domain over `kms`, with the configuration's settings.
///
/// # Errors
/// [`ServerError`] when the configuration is invalid.
pub fn build_broker(config: &Config, kms: Arc<dyn Kms>) -> Result<Arc<Broker>, ServerError> {
    config.validate()?;
    let default_key = config
        .kms
        .default_key_id
        .as_deref()
        .map(|id| KmsKeyId::parse(id, "kms.default_key_id"))
        .transpose()
        .map_err(|e| ConfigError::Invalid { key: "kms.default_key_id", rule: e.rule })?;
    let settings = BrokerSettings {
        default_key,
        allow_plaintext_export: config.allow_plaintext_export,
        key_md5: config.kms.key_md5,
        kms_deadline: config.kms.call_timeout(),
    };
    let fingerprints = Fingerprinter::ephemeral().map_err(|e| ServerError::Random(e.to_string()))?;
    Ok(Arc::new(Broker::new(kms, settings, fingerprints)))
}

/// Builds everything from `config` and serves on `listener` until `shutdown`.
///
/// # Errors
/// [`ServerError`] when startup fails or the transport dies.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let sdk = if config.kms.backend == KmsBackend::Aws || config.transcoder.submit {
        Some(crate::cloud::load_sdk_config(&config.kms).await)
    } else {
        None
    };
    let kms: Arc<dyn Kms> = match (&config.kms.backend, &sdk) {
        (KmsBackend::Aws, Some(sdk)) => Arc::new(AwsKms::new(sdk)),
        _ => build_kms(&config).await?,
    };
    let broker = build_broker(&config, kms)?;
    let et = sdk.filter(|_| config.transcoder.submit).map(|sdk| aws_sdk_elastictranscoder::Client::new(&sdk));
    let transcoder = build_transcoder(&config, broker.clone(), et);
    serve(listener, &config, broker, transcoder, shutdown).await
}

/// Serves `broker` on `listener` until `shutdown`, then drains.
///
/// # Errors
/// [`ServerError`] when the transport dies.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<KeyBrokerServer<Api>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let local_addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(KeyBrokerServer::new(Api::new(broker, transcoder)));
    // Accepted connections get TCP_NODELAY: gRPC answers are small writes,
    // and Nagle plus delayed ACKs would add ~40 ms to every call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60)));
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(listen = ?local_addr, dev = config.dev, kms = ?config.kms.backend, "keybroker serving");

    tokio::select! {
        result = &mut server => return Ok(result??),
        () = shutdown => {}
    }
    tracing::info!("shutting down: health NOT_SERVING, no new calls, draining in-flight calls");
    health_reporter.set_not_serving::<KeyBrokerServer<Api>>().await;
    health_reporter.set_service_status("", ServingStatus::NotServing).await;
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result??,
        Err(_) => {
            tracing::warn!(?grace, "in-flight calls did not finish within the grace period; closing them");
            server.abort();
        }
    }
    tracing::info!("keybroker stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
