//! A broker under test: the real server on `127.0.0.1:0`, in process, with a
//! generated tonic client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keybroker::app::config::{Config, KmsBackend};
use keybroker::app::server::{Application, Peers};
use keybroker::custody::kms::{AwsKms, Kms, LocalKeyring};
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::moto::Moto;

/// A running broker.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub config: Config,
    /// The custody domain the server runs (its ledger and key pools).
    pub broker: Arc<keybroker::custody::broker::Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keybroker::app::server::ServerError>>>,
    /// Holds the SQLite key ledger of a configuration that names none.
    _ledger_dir: Option<tempfile::TempDir>,
}

/// A configuration for the local keyring in `dir`, plaintext export on.
pub fn local_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.tls.mode = keybroker::app::config::TlsMode::Plaintext;
    config.kms.backend = KmsBackend::Local;
    config.kms.local.master_key_file = dir.join("master.key");
    config.kms.default_key_id = Some("alias/test-default".to_owned());
    config.allow_plaintext_export = true;
    config.policy.allow_all = true;
    config.shutdown_grace_secs = 5;
    config
}

/// A configuration for AWS KMS (moto) with `default_key`, plaintext export on.
pub fn aws_config(default_key: &str) -> Config {
    let mut config = Config::default();
    config.tls.mode = keybroker::app::config::TlsMode::Plaintext;
    config.kms.backend = KmsBackend::Aws;
    config.kms.default_key_id = Some(default_key.to_owned());
    config.aws.call_timeout_ms = 3_000;
    config.aws.attempt_timeout_ms = 1_000;
    config.aws.max_attempts = 2;
    config.allow_plaintext_export = true;
    config.policy.allow_all = true;
    config.shutdown_grace_secs = 5;
    config
}

/// The local keyring at the master key file `config` names.
pub fn local_keyring(config: &Config) -> Arc<dyn Kms> {
    Arc::new(LocalKeyring::open_or_create(&config.kms.local.master_key_file).unwrap())
}

/// The real AWS backend, with the broker's timeouts and retries, pointed at moto.
pub async fn aws_kms(moto: &Moto, config: &Config) -> Arc<dyn Kms> {
    let sdk = keybroker::app::aws::sdk_config_loader(&config.aws)
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "keybroker-tests",
        ))
        .load()
        .await;
    Arc::new(AwsKms::new(&sdk))
}

impl TestBroker {
    /// A local-keyring broker in `dir` with [`local_config`].
    pub async fn local(dir: &Path) -> TestBroker {
        Self::start(local_config(dir), None).await
    }

    /// An AWS-KMS broker against moto with [`aws_config`].
    pub async fn aws(moto: &Moto, default_key: &str) -> TestBroker {
        let config = aws_config(default_key);
        let kms = aws_kms(moto, &config).await;
        Self::start(config, Some(kms)).await
    }

    /// Starts the server for `config` over `kms`, or over the local keyring
    /// `config` names when `None`.
    pub async fn start(config: Config, kms: Option<Arc<dyn Kms>>) -> TestBroker {
        assert!(kms.is_some() || config.kms.backend == KmsBackend::Local, "pass an AwsKms for the aws backend");
        Self::launch(config, Peers { kms, ..Peers::default() }).await
    }

    /// Starts the server over `kms`, submitting jobs to `et` and reading and
    /// writing objects in `s3` where given.
    pub async fn start_with_peers(
        config: Config,
        kms: Arc<dyn Kms>,
        et: Option<aws_sdk_elastictranscoder::Client>,
        s3: Option<aws_sdk_s3::Client>,
    ) -> TestBroker {
        Self::launch(config, Peers { kms: Some(kms), et, s3, ..Peers::default() }).await
    }

    /// Starts the server over `peers` as given (the missing ones made from
    /// `config`).
    pub async fn start_with(config: Config, peers: Peers) -> TestBroker {
        Self::launch(config, peers).await
    }

    /// Starts the server over `kms`, submitting MediaConvert jobs to
    /// `mediaconvert`, reading and writing objects in `s3` where given.
    pub async fn start_with_mediaconvert(
        config: Config,
        kms: Arc<dyn Kms>,
        mediaconvert: aws_sdk_mediaconvert::Client,
        s3: Option<aws_sdk_s3::Client>,
    ) -> TestBroker {
        Self::launch(config, Peers { kms: Some(kms), s3, mediaconvert: Some(mediaconvert), ..Peers::default() }).await
    }

    /// Builds the [`Application`] `keybroker serve` runs, over `peers`
    /// (the missing ones made from `config`), and serves it on port 0.
    async fn launch(mut config: Config, peers: Peers) -> TestBroker {
        super::logs::capture();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Without an ET endpoint of the suite, the broker talks to no
        // Elastic Transcoder at all.
        config.transcoder.submit &= peers.et.is_some();
        // A ledger left at its default file gets one of its own, not one
        // shared with every other test in the working directory.
        let ledger_dir = (config.ledger.url.is_none()
            && config.ledger.file == keybroker::app::config::LedgerConfig::default().file)
            .then(|| tempfile::tempdir().unwrap());
        if let Some(dir) = &ledger_dir {
            config.ledger.file = dir.path().join("ledger.sqlite");
        }
        let app = Application::build(config.clone(), peers).await.unwrap();
        let broker = app.broker();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.run(listener, async {
                let _ = stop_rx.await;
            })
            .await
        });
        TestBroker { addr, config, broker, stop: Some(stop_tx), task: Some(task), _ledger_dir: ledger_dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    pub async fn client(&self) -> KeyBrokerClient<Channel> {
        KeyBrokerClient::new(self.channel().await)
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for a stop begun with [`TestBroker::begin_stop`].
    pub async fn join(mut self) -> Result<(), keybroker::app::server::ServerError> {
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

/// An IssueDataKey request for `bits` and `mode`, everything else default.
pub fn issue(bits: u32, mode: &str) -> pb::IssueDataKeyRequest {
    pb::IssueDataKeyRequest { key_bits: bits, mode: mode.to_owned(), ..Default::default() }
}
