//! Startup, layers and shutdown of the gRPC server.
//!
//! [`Application::build`] makes everything the configuration describes;
//! [`Application::run`] takes a bound listener, so tests bind `127.0.0.1:0`. It serves the
//! broker, the standard `grpc.health.v1` service and server reflection (v1
//! and v1alpha, the health service's descriptors included). When `shutdown`
//! resolves, health goes NOT_SERVING, the listener closes, and in-flight
//! calls get `shutdown_grace_secs` to finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::app::config::TlsMode;
use crate::app::config::{Config, ConfigError, KmsBackend};
use crate::audit::{AuditLog, ChainKey};
use crate::custody::broker::{Broker, BrokerSettings};
use crate::custody::fingerprint::Fingerprinter;
use crate::custody::kms::{AwsKms, Kms, KmsKeyId, LocalKeyring};
use crate::custody::policy::PolicyStore;
use crate::custody::pool::{KeyNames, resolve_names};
use crate::edge::Api;
use crate::edge::admit::{AdmitLayer, AdmitLimits};
use crate::edge::gate::Gate;
use crate::edge::listen::{ConnLimits, Plaintext};
use crate::edge::pb;
use crate::edge::pb::key_broker_server::KeyBrokerServer;
use crate::edge::tls::{ReloadableTls, TlsFiles};
use crate::jobs::et::pipeline::Pipelines;
use crate::jobs::et::preflight::{AwsAdmin, Preflight};
use crate::jobs::et::{Transcoder, TranscoderSettings};
use crate::jobs::mediaconvert::role::{RoleCheck, RoleSettings};
use crate::jobs::mediaconvert::{MediaConvert, MediaConvertSettings};
use crate::ledger::Ledger;
use crate::objects::{Objects, ObjectsSettings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local keyring could not be opened.
    #[error(transparent)]
    Keyring(#[from] crate::custody::kms::local::KeyringError),
    /// Reflection descriptors could not be loaded.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The OS random generator failed.
    #[error("random number generator: {0}")]
    Random(getrandom::Error),
    /// The audit fingerprint key file is unreadable or too short.
    #[error("audit.fingerprint_key_file {}: {source}", path.display())]
    FingerprintKey {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server task died.
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] crate::custody::policy::PolicyError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The audit chain key cannot be made or unwrapped.
    #[error(transparent)]
    ChainKey(#[from] crate::audit::ChainKeyError),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    /// A listener could not bind.
    #[error("cannot listen: {0}")]
    Bind(std::io::Error),
    /// The key ledger cannot be opened.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// The peers the broker talks to. Each left `None` is made from the
/// configuration, as `keybroker serve` makes it; tests hand in their own
/// (a KMS pointed at the local AWS server, the ET endpoint of the suite).
#[derive(Default)]
pub struct Peers {
    /// The KMS that wraps keys.
    pub kms: Option<Arc<dyn Kms>>,
    /// Elastic Transcoder, for `ReadPipeline` and `CreateJob`.
    pub et: Option<aws_sdk_elastictranscoder::Client>,
    /// S3, for the S3 mode of the object RPCs.
    pub s3: Option<aws_sdk_s3::Client>,
    /// The AWS configuration the pipeline preflight's KMS and STS clients
    /// are made from (with the `aws` KMS backend only).
    pub aws: Option<aws_config::SdkConfig>,
    /// MediaConvert, for `CreateJob`.
    pub mediaconvert: Option<aws_sdk_mediaconvert::Client>,
}

impl Peers {
    /// Builds the services over these peers, filling in every peer the
    /// configuration needs and the caller did not give: the local keyring or AWS KMS, Elastic Transcoder when the
    /// broker submits, and S3 wherever an AWS configuration is loaded (it
    /// is loaded once, and only when an AWS peer is missing).
    async fn complete(self, config: &Config) -> Result<Services, ServerError> {
        let aws_kms_missing = self.kms.is_none() && config.kms.backend == KmsBackend::Aws;
        let et_missing = self.et.is_none() && config.transcoder.submit;
        let mc_missing = self.mediaconvert.is_none() && config.mediaconvert.submit;
        let sdk = if aws_kms_missing || et_missing || mc_missing {
            Some(match config.kms.backend {
                KmsBackend::Aws => crate::app::aws::load_sdk_config(&config.aws).await,
                KmsBackend::Local => crate::app::aws::load_sdk_config_without_imds_region(&config.aws).await,
            })
        } else {
            None
        };
        let kms: Arc<dyn Kms> = match (self.kms, &sdk) {
            (Some(kms), _) => kms,
            (None, Some(sdk)) if config.kms.backend == KmsBackend::Aws => Arc::new(AwsKms::new(sdk)),
            (None, _) => Arc::new(LocalKeyring::open_or_create(&config.kms.local.master_key_file)?),
        };
        let s3 = self.s3.or_else(|| {
            sdk.as_ref().map(|sdk| crate::objects::s3_client(sdk, &ObjectsSettings::from_config(&config.s3)))
        });
        let et = self
            .et
            .or_else(|| sdk.as_ref().filter(|_| config.transcoder.submit).map(aws_sdk_elastictranscoder::Client::new));
        let admin = self
            .aws
            .or(sdk.clone())
            .filter(|_| config.kms.backend == KmsBackend::Aws)
            .map(|sdk| AwsAdmin::new(&sdk, s3.clone()));
        let mediaconvert = self
            .mediaconvert
            .or_else(|| sdk.as_ref().filter(|_| config.mediaconvert.submit).map(aws_sdk_mediaconvert::Client::new));
        let chain_key = chain_key(config, kms.as_ref()).await?;
        let ledger = open_ledger(config).await?;
        let pool_names = match config.pool_keys()? {
            Some(keys) => resolve_names(kms.as_ref(), &keys, config.aws.call_timeout()).await,
            None => Vec::new(),
        };
        let broker = build_broker(config, kms, ledger, &pool_names)?;
        let role_settings = RoleSettings::from_config(config, mediaconvert.as_ref(), admin.as_ref());
        let mut services = Services::new(config, broker, et, s3, chain_key, admin.clone())?;
        services.role_check = Arc::new(RoleCheck::new(services.broker.clone(), admin, role_settings));
        services.mediaconvert = build_mediaconvert(config, services.broker.clone(), mediaconvert)?;
        Ok(services)
    }
}

/// The audit log's chain key, when there is a log: unwrapped by `kms`
/// from its file, or made and wrapped there on first start.
async fn chain_key(config: &Config, kms: &dyn Kms) -> Result<Option<ChainKey>, ServerError> {
    let (Some(wrapped), Some(key_id)) = (config.audit.wrapped_chain_key_path(), config.audit.chain_key_id(&config.kms))
    else {
        return Ok(None);
    };
    let key_id = KmsKeyId::parse(key_id, "audit.chain_key_id")
        .map_err(|e| ConfigError::Invalid { key: "audit.chain_key_id", rule: e.rule })?;
    Ok(Some(ChainKey::load_or_create(kms, &key_id, &wrapped).await?))
}

/// The whole server, built from a configuration: what `keybroker serve`
/// runs and what the tests start.
pub struct Application {
    config: Config,
    services: Services,
}

impl Application {
    /// Builds everything `config` describes over `peers` (the missing ones
    /// made from the configuration).
    ///
    /// # Errors
    /// [`ServerError`] when the configuration, policy, audit log or a key
    /// file is unusable.
    pub async fn build(config: Config, peers: Peers) -> Result<Self, ServerError> {
        config.validate()?;
        for notice in &config.notices {
            tracing::warn!(%notice, "configuration");
        }
        let services = peers.complete(&config).await?;
        Ok(Application { config, services })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The custody domain it serves, with its key pools (for start-up
    /// checks, benchmarks and tests that watch the pools fill).
    pub fn broker(&self) -> Arc<Broker> {
        self.services.broker.clone()
    }

    /// Serves on `listener` until `shutdown`, then drains.
    ///
    /// # Errors
    /// [`ServerError`] when the TLS material is unusable or the transport dies.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        serve(listener, &self.config, self.services, shutdown).await
    }
}

/// Everything one server serves: the custody domain, Elastic Transcoder
/// jobs, object encryption, and the gate (policy and audit) in front.
#[derive(Clone)]
struct Services {
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    mediaconvert: Arc<MediaConvert>,
    objects: Arc<Objects>,
    preflight: Arc<Preflight>,
    role_check: Arc<RoleCheck>,
    gate: Arc<Gate>,
}

impl Services {
    fn new(
        config: &Config,
        broker: Arc<Broker>,
        et: Option<aws_sdk_elastictranscoder::Client>,
        s3: Option<aws_sdk_s3::Client>,
        chain_key: Option<ChainKey>,
        admin: Option<AwsAdmin>,
    ) -> Result<Self, ServerError> {
        let transcoder = build_transcoder(config, broker.clone(), et);
        let objects_settings = ObjectsSettings {
            // Longer than any stream may run, so a live call keeps its token.
            token_lease: Duration::from_millis(config.limits.stream_timeout_ms) + Duration::from_secs(60),
            ..ObjectsSettings::from_config(&config.s3)
        };
        let objects = Arc::new(Objects::new(broker.clone(), s3, objects_settings));
        let preflight = Arc::new(Preflight::new(broker.clone(), transcoder.clone(), admin));
        let gate = build_gate(config, chain_key)?;
        let mediaconvert = Arc::new(MediaConvert::new(broker.clone(), None, MediaConvertSettings::default()));
        let role_check = Arc::new(RoleCheck::new(broker.clone(), None, RoleSettings::default()));
        Ok(Services { broker, transcoder, mediaconvert, objects, preflight, role_check, gate })
    }
}

/// The Elastic Transcoder side: static pipelines, and an ET client where
/// the configuration lets the broker submit.
fn build_transcoder(
    config: &Config,
    broker: Arc<Broker>,
    et: Option<aws_sdk_elastictranscoder::Client>,
) -> Arc<Transcoder> {
    let settings = TranscoderSettings {
        max_concurrent_kms_calls: config.transcoder.max_concurrent_kms_calls,
        job_deadline: Duration::from_millis(config.transcoder.job_deadline_ms),
        // The keys, then up to three CreateJob attempts and their look-ups.
        token_lease: Duration::from_millis(config.transcoder.job_deadline_ms) + config.aws.call_timeout() * 8,
    };
    let pipelines = Pipelines::new(
        config.transcoder.pipelines.clone(),
        et.clone(),
        Duration::from_secs(config.transcoder.pipeline_cache_ttl_secs),
    );
    Arc::new(Transcoder::new(broker, pipelines, et, settings))
}

/// The MediaConvert side, submitting where the configuration lets it.
fn build_mediaconvert(
    config: &Config,
    broker: Arc<Broker>,
    client: Option<aws_sdk_mediaconvert::Client>,
) -> Result<Arc<MediaConvert>, ServerError> {
    let mc = &config.mediaconvert;
    let output_kms_key = mc
        .output_kms_key_arn
        .as_deref()
        .map(|arn| KmsKeyId::parse(arn, "mediaconvert.output_kms_key_arn"))
        .transpose()
        .map_err(|e| ConfigError::Invalid { key: "mediaconvert.output_kms_key_arn", rule: e.rule })?;
    let settings = MediaConvertSettings {
        output_kms_key,
        key_url_template: mc.key_url_template.clone(),
        require_encrypted_outputs: mc.require_encrypted_outputs,
        always_bind_job_context: mc.bind_job_context,
        token_lease: Duration::from_millis(config.transcoder.job_deadline_ms) + config.aws.call_timeout() * 4,
    };
    Ok(Arc::new(MediaConvert::new(broker, client, settings)))
}

/// The custody domain over `kms`, with the configuration's settings; its
/// pools answer to the names KMS reported for their keys (`pool_names`).
fn build_broker(
    config: &Config,
    kms: Arc<dyn Kms>,
    ledger: Ledger,
    pool_names: &[KeyNames],
) -> Result<Arc<Broker>, ServerError> {
    let default_key = config
        .kms
        .default_key_id
        .as_deref()
        .map(|id| KmsKeyId::parse(id, "kms.default_key_id"))
        .transpose()
        .map_err(|e| ConfigError::Invalid { key: "kms.default_key_id", rule: e.rule })?;
    let settings = BrokerSettings { default_key, key_md5: config.kms.key_md5, kms_deadline: config.aws.call_timeout() };
    let fingerprints = match &config.audit.fingerprint_key_file {
        Some(path) => Fingerprinter::from_file(path)
            .map_err(|source| ServerError::FingerprintKey { path: path.clone(), source })?,
        None => Fingerprinter::ephemeral().map_err(ServerError::Random)?,
    };
    let broker = Broker::new(kms, settings, fingerprints).with_ledger(ledger);
    let Some(pools) = config.pool_keys()? else {
        return Ok(Arc::new(broker));
    };
    Ok(Arc::new(broker.with_named_pool(config.pool.settings(), pools, pool_names)))
}

/// The key ledger the configuration describes: PostgreSQL at
/// `ledger.url`, else the SQLite file `ledger.file`; its migrations run
/// here, and the server refuses to start when it cannot be opened.
async fn open_ledger(config: &Config) -> Result<Ledger, ServerError> {
    let settings = &config.ledger;
    if !settings.enabled {
        tracing::warn!("ledger.enabled = false: keys handed out are not recorded and cannot be looked up");
        return Ok(Ledger::disabled());
    }
    let timeout = Duration::from_millis(settings.connect_timeout_ms);
    let ledger = Ledger::open(settings.url.as_deref(), &settings.file, timeout).await?;
    Ok(ledger.with_token_retention(Duration::from_secs(settings.token_retention_secs)))
}

/// The custody boundary the configuration describes: policy and audit log
/// (chained under `chain_key`).
///
/// The server refuses to start when the policy is invalid (naming the
/// line) or the audit log cannot be opened.
fn build_gate(config: &Config, chain_key: Option<ChainKey>) -> Result<Arc<Gate>, ServerError> {
    let policy = match &config.policy.file {
        Some(path) => {
            let store = PolicyStore::load(path)?;
            let rules = store.current().map_or(0, |p| p.len());
            tracing::info!(path = %path.display(), rules, "policy loaded (default deny)");
            store
        }
        None => {
            if !config.dev {
                tracing::warn!(
                    "policy.allow_all: every caller may call every RPC (plaintext export per allow_plaintext_export); not for production"
                );
            }
            PolicyStore::none()
        }
    };
    let audit = match (&config.audit.file, chain_key) {
        (Some(path), Some(key)) => {
            let group = config.audit.group_commit();
            let checkpoints = config.audit.checkpoints();
            let log = AuditLog::open(path, key, group, checkpoints.clone())?;
            tracing::info!(
                path = %path.display(),
                group_commit_delay = ?group.delay,
                checkpoint_every = checkpoints.every,
                checkpoint_interval = ?checkpoints.interval,
                checkpoint_path = ?checkpoints.path,
                "audit log open, chained under its KMS-wrapped key"
            );
            Some(log)
        }
        (Some(_), None) => {
            return Err(ConfigError::Invalid {
                key: "audit.chain_key_id",
                rule: "no KMS key to wrap the audit chain key".to_owned(),
            }
            .into());
        }
        (None, _) => None,
    };
    Ok(Arc::new(Gate {
        policy,
        audit,
        server_export: config.allow_plaintext_export,
        request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        stream_timeout: Duration::from_millis(config.limits.stream_timeout_ms),
        read_timeout: Duration::from_millis(config.limits.read_timeout_ms),
        max_message_bytes: config.limits.max_message_bytes,
    }))
}

fn tls_files(config: &Config) -> Option<TlsFiles> {
    let (cert, key) = (config.tls.cert_file.clone()?, config.tls.key_file.clone()?);
    match config.tls.mode {
        TlsMode::Plaintext => None,
        TlsMode::Server => Some(TlsFiles { cert, key, client_ca: None, require_client_cert: false }),
        TlsMode::Mutual => {
            Some(TlsFiles { cert, key, client_ca: config.tls.client_ca_file.clone(), require_client_cert: true })
        }
    }
}

/// Serves `services` on `listener` until `shutdown`, then drains.
async fn serve(
    listener: TcpListener,
    config: &Config,
    services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Services { broker, transcoder, mediaconvert, objects, preflight, role_check, gate } = services;
    let tls = tls_files(config).map(ReloadableTls::load).transpose()?;
    crate::app::signals::spawn_reloaders(gate.clone(), tls.clone(), Duration::from_secs(config.tls.reload_poll_secs));

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

    let local_addr = listener.local_addr().map_or_else(|_| config.listen.to_string(), |addr| addr.to_string());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if !config.dev {
        preflight.check_configured_in_background();
        role_check.check_configured_in_background();
    }
    let api = Api::new(broker, transcoder, gate.clone())
        .with_objects(objects)
        .with_preflight(preflight)
        .with_mediaconvert(mediaconvert)
        .with_role_check(role_check);
    let key_broker = KeyBrokerServer::new(api).max_decoding_message_size(config.limits.max_message_bytes);
    let limits = &config.limits;
    let admit = AdmitLayer::new(
        gate.clone(),
        AdmitLimits {
            max_concurrent: limits.max_concurrent_requests,
            max_concurrent_per_identity: limits.max_concurrent_per_identity,
            read_timeout: Duration::from_millis(limits.read_timeout_ms),
            max_message_bytes: limits.max_message_bytes,
        },
    );
    let conn_limits = ConnLimits {
        max_connections: crate::edge::listen::connection_budget(limits.max_connections),
        max_per_peer: limits.max_connections_per_peer,
        max_handshakes: limits.max_handshakes,
        handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
        idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
    };
    let router = Server::builder()
        // Deadlines are the gate's (api::call::deadline_of): it answers
        // DEADLINE_EXCEEDED and audits the call, where tonic's own timeout
        // would drop the call unrecorded with CANCELLED.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Object chunks are up to 1 MiB: accept them in frames that size.
        .max_frame_size(1 << 20)
        .layer(admit.clone())
        .add_service(health_service.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(key_broker);
    // Accepted connections get TCP_NODELAY: gRPC answers are small writes,
    // and Nagle plus delayed ACKs would add ~40 ms to every call.
    let mut server = match tls {
        Some(tls) => {
            let incoming = crate::edge::listen::accept(listener, conn_limits.clone(), tls);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())))
        }
        None => {
            let incoming = crate::edge::listen::accept(listener, conn_limits.clone(), Plaintext);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())))
        }
    };
    if let Some(addr) = config.health_listen {
        let health_listener = TcpListener::bind(addr).await.map_err(ServerError::Bind)?;
        tracing::info!(%addr, "health-only listener (plaintext grpc.health.v1)");
        let incoming = crate::edge::listen::accept(health_listener, conn_limits, Plaintext);
        let health_only = Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .layer(admit)
            .add_service(health_service);
        tokio::spawn(health_only.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())));
    }
    tracing::info!(
        listen = %local_addr,
        dev = config.dev,
        tls = ?config.tls.mode,
        kms = ?config.kms.backend,
        "keybroker serving"
    );

    tokio::select! {
        result = &mut server => return Ok(result??),
        () = shutdown => {}
    }
    tracing::info!("shutting down: health NOT_SERVING, no new calls, draining in-flight calls");
    health_reporter.set_not_serving::<KeyBrokerServer<Api>>().await;
    health_reporter.set_service_status("", ServingStatus::NotServing).await;
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result??,
        Err(_) => {
            tracing::warn!(?grace, "in-flight calls did not finish within the grace period; closing them");
            server.abort();
        }
    }
    if let Some(audit) = &gate.audit {
        audit.checkpoint().await;
    }
    tracing::info!("keybroker stopped");
    Ok(())
}
