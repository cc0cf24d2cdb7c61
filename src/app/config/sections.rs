//! The configuration's tables, one type each, with their defaults: what
//! each key means and what it is when unset. The loading and the checks
//! that span tables live in the parent module.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::custody::keys::KeyMd5Source;

/// S3 settings for EncryptObject/DecryptObject in S3 mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Path-style addressing (`endpoint/bucket/key`), which S3-compatible
    /// stores such as moto and MinIO need; AWS uses virtual-hosted style.
    pub force_path_style: bool,
    /// Multipart part size in MiB (5 to 5120).
    pub part_size_mib: usize,
    /// Deadline of one S3 request attempt (a part upload included), in ms.
    pub call_timeout_ms: u64,
    /// Longest wait for the next bytes of a source object, in ms.
    pub read_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config { force_path_style: false, part_size_mib: 8, call_timeout_ms: 120_000, read_timeout_ms: 60_000 }
    }
}

/// How the gRPC listener is secured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS with a required client certificate (the default).
    Mutual,
    /// TLS without client certificates: every caller is `anonymous`.
    Server,
    /// No TLS. For loopback and `--dev`; a non-loopback address is refused.
    Plaintext,
}

/// Transport security settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `mutual`, `server` or `plaintext`.
    pub mode: TlsMode,
    /// Server certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Trust bundle for client certificates (PEM CA certificates).
    pub client_ca_file: Option<PathBuf>,
    /// How often to check the files for changes, in seconds (0: SIGHUP only).
    pub reload_poll_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { mode: TlsMode::Mutual, cert_file: None, key_file: None, client_ca_file: None, reload_poll_secs: 10 }
    }
}

/// Policy settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy file. Required outside `--dev` unless `allow_all`.
    pub file: Option<PathBuf>,
    /// No policy file, on purpose: every caller may call every RPC, and
    /// plaintext export follows `allow_plaintext_export`. For trials and
    /// tests, never production; `--dev` implies it when no file is given.
    pub allow_all: bool,
}

/// Audit settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines audit log; unset: no audit log.
    pub file: Option<PathBuf>,
    /// 32+ secret bytes keying key fingerprints, so they stay comparable
    /// across restarts and replicas; unset: a fresh key per process.
    pub fingerprint_key_file: Option<PathBuf>,
    /// The most a group commit is held for records of calls still in the
    /// server, counted from the start of the previous commit, in
    /// microseconds (0: commit at once). See [`crate::audit::GroupCommit`].
    pub group_commit_delay_us: u64,
    /// The KMS key that wraps the chain key (made on first start); unset:
    /// `kms.default_key_id`, or with the local keyring
    /// `alias/keybroker-audit-chain`.
    pub chain_key_id: Option<String>,
    /// Where the KMS-wrapped chain key is kept; unset: beside the log, as
    /// `<file>.chain-key`.
    pub wrapped_chain_key_file: Option<PathBuf>,
    /// Checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Checkpoint when records were written and this many milliseconds
    /// passed since the last checkpoint.
    pub checkpoint_interval_ms: u64,
    /// An append-only file every checkpoint is also written to; unset:
    /// checkpoints go to the server log and the metric only.
    pub checkpoint_path: Option<PathBuf>,
}

/// The chain key's KMS key with the local keyring when none is configured.
const LOCAL_CHAIN_KEY_ID: &str = "alias/keybroker-audit-chain";

impl Default for AuditConfig {
    fn default() -> Self {
        let group = crate::audit::GroupCommit::default();
        let checkpoints = crate::audit::CheckpointSettings::default();
        AuditConfig {
            file: None,
            fingerprint_key_file: None,
            group_commit_delay_us: u64::try_from(group.delay.as_micros()).unwrap_or(u64::MAX),
            chain_key_id: None,
            wrapped_chain_key_file: None,
            checkpoint_every: checkpoints.every,
            checkpoint_interval_ms: u64::try_from(checkpoints.interval.as_millis()).unwrap_or(u64::MAX),
            checkpoint_path: None,
        }
    }
}

impl AuditConfig {
    /// The group-commit settings these keys describe.
    pub fn group_commit(&self) -> crate::audit::GroupCommit {
        crate::audit::GroupCommit { delay: std::time::Duration::from_micros(self.group_commit_delay_us) }
    }

    /// The checkpoint settings these keys describe.
    pub fn checkpoints(&self) -> crate::audit::CheckpointSettings {
        crate::audit::CheckpointSettings {
            every: self.checkpoint_every,
            interval: Duration::from_millis(self.checkpoint_interval_ms),
            path: self.checkpoint_path.clone(),
        }
    }

    /// The KMS key that wraps the chain key under `kms`; `None` when the
    /// configuration names none (AWS KMS without a default key).
    pub fn chain_key_id<'a>(&'a self, kms: &'a KmsConfig) -> Option<&'a str> {
        self.chain_key_id.as_deref().or(kms.default_key_id.as_deref()).or(match kms.backend {
            KmsBackend::Local => Some(LOCAL_CHAIN_KEY_ID),
            KmsBackend::Aws => None,
        })
    }

    /// Where the wrapped chain key is kept; `None` without a log.
    pub fn wrapped_chain_key_path(&self) -> Option<PathBuf> {
        self.wrapped_chain_key_file.clone().or_else(|| {
            self.file.as_ref().map(|log| {
                let mut name = log.as_os_str().to_owned();
                name.push(".chain-key");
                PathBuf::from(name)
            })
        })
    }
}

/// Request limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls in flight at once; more are shed with `RESOURCE_EXHAUSTED`.
    pub max_concurrent_requests: usize,
    /// The most a call may run, in milliseconds; a shorter `grpc-timeout`
    /// from the caller wins.
    pub request_timeout_ms: u64,
    /// The most an object stream (`EncryptObject`, `DecryptObject`) may
    /// run, in milliseconds; a shorter `grpc-timeout` from the caller wins.
    pub stream_timeout_ms: u64,
    /// The largest request message, in bytes; larger ones are refused with
    /// `RESOURCE_EXHAUSTED` before they are read.
    pub max_message_bytes: usize,
    /// Calls in flight at once per caller identity, unless its policy rule
    /// sets `max_concurrent`; more are shed with `RESOURCE_EXHAUSTED`.
    pub max_concurrent_per_identity: usize,
    /// The longest, in milliseconds, a unary call's body and each message
    /// of a stream may take to arrive (separate from the call's deadline).
    pub read_timeout_ms: u64,
    /// Calls (HTTP/2 streams) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Connections open at once; the broker lowers it to fit under its
    /// open-file limit, keeping a tenth of that for its own files.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// The longest a TLS handshake may take, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// The longest a connection may stay open with no call in flight, in
    /// milliseconds, on the gRPC and health ports.
    pub idle_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent_requests: 256,
            request_timeout_ms: 30_000,
            stream_timeout_ms: 3_600_000,
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_per_identity: 64,
            read_timeout_ms: 10_000,
            max_streams_per_connection: 128,
            max_connections: 4096,
            max_connections_per_peer: 512,
            max_handshakes: 128,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
        }
    }
}

impl LimitsConfig {
    /// Checks that every limit is positive.
    ///
    /// # Errors
    /// [`super::ConfigError::Invalid`] naming the first limit that is 0.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        let limits = [
            ("limits.max_concurrent_requests", self.max_concurrent_requests as u64),
            ("limits.request_timeout_ms", self.request_timeout_ms),
            ("limits.stream_timeout_ms", self.stream_timeout_ms),
            ("limits.max_message_bytes", self.max_message_bytes as u64),
            ("limits.max_concurrent_per_identity", self.max_concurrent_per_identity as u64),
            ("limits.read_timeout_ms", self.read_timeout_ms),
            ("limits.max_streams_per_connection", u64::from(self.max_streams_per_connection)),
            ("limits.max_connections", self.max_connections as u64),
            ("limits.max_connections_per_peer", self.max_connections_per_peer as u64),
            ("limits.max_handshakes", self.max_handshakes as u64),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
        ];
        match limits.into_iter().find(|(_, value)| *value == 0) {
            Some((key, _)) => Err(super::ConfigError::Invalid { key, rule: "must be greater than 0".to_owned() }),
            None => Ok(()),
        }
    }
}

/// Process memory hygiene.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Lock the process's pages in memory (mlockall) so keys never reach
    /// swap, where the memory-lock limit allows it.
    pub lock_keys: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { lock_keys: true }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `keybroker=debug,info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, filter: "info".to_owned() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which KMS wraps keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// AWS KMS through aws-sdk-kms.
    Aws,
    /// The embedded keyring (Elastic Transcoder cannot decrypt its keys).
    Local,
}

/// Key wrapping settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    /// `aws` or `local`.
    pub backend: KmsBackend,
    /// The key used when a request names none.
    pub default_key_id: Option<String>,
    /// What `KeyMd5` digests: `plaintext` (default) or `ciphertext`.
    pub key_md5: KeyMd5Source,
    /// The local keyring.
    pub local: LocalKmsConfig,
    /// The SDK settings' old home, before `[aws]`: accepted, moved to
    /// `[aws]` with a notice.
    #[serde(skip_serializing)]
    pub(super) region: Option<String>,
    #[serde(skip_serializing)]
    pub(super) call_timeout_ms: Option<u64>,
    #[serde(skip_serializing)]
    pub(super) attempt_timeout_ms: Option<u64>,
    #[serde(skip_serializing)]
    pub(super) connect_timeout_ms: Option<u64>,
    #[serde(skip_serializing)]
    pub(super) max_attempts: Option<u32>,
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            backend: KmsBackend::Aws,
            default_key_id: None,
            key_md5: KeyMd5Source::Plaintext,
            local: LocalKmsConfig::default(),
            region: None,
            call_timeout_ms: None,
            attempt_timeout_ms: None,
            connect_timeout_ms: None,
            max_attempts: None,
        }
    }
}

/// The AWS SDK settings every AWS client (KMS, S3, Elastic Transcoder)
/// shares: region, deadlines and retries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// The AWS region; unset: the SDK's region chain.
    pub region: Option<String>,
    /// The deadline of one operation, retries included, in milliseconds
    /// (also the deadline of one KMS call).
    pub call_timeout_ms: u64,
    /// The deadline of one attempt, in milliseconds.
    pub attempt_timeout_ms: u64,
    /// The TCP connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Attempts per operation (1 = no retry); retries back off exponentially.
    pub max_attempts: u32,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            call_timeout_ms: 5_000,
            attempt_timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            max_attempts: 3,
        }
    }
}

impl AwsConfig {
    /// The deadline of one operation (one KMS call, retries included).
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// The embedded keyring's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKmsConfig {
    /// The 32-byte master key file, created with mode 0600 if missing.
    pub master_key_file: PathBuf,
}

impl Default for LocalKmsConfig {
    fn default() -> Self {
        LocalKmsConfig { master_key_file: PathBuf::from(".keybroker/master.key") }
    }
}

/// AWS Elemental MediaConvert settings (`SubmitMediaConvertJob`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConvertConfig {
    /// Whether to submit jobs to MediaConvert (endpoint from the shared AWS
    /// settings; `AWS_ENDPOINT_URL_MEDIACONVERT` honoured). Off: only
    /// `validate_only` jobs.
    pub submit: bool,
    /// The KMS key ARN output groups are encrypted under (SSE-KMS).
    pub output_kms_key_arn: Option<String>,
    /// The `Url` of a static key whose request names none: `{token}` (the
    /// request token) and `{group}` (the output group index) are replaced.
    pub key_url_template: Option<String>,
    /// Refuse jobs with an output group that is not SSE-KMS encrypted.
    pub require_encrypted_outputs: bool,
    /// Bind every SSE-KMS encryption context to the job (request token,
    /// caller), whatever the request asks.
    pub bind_job_context: bool,
    /// The IAM role MediaConvert jobs run as: `mediaconvert check-role`'s
    /// default, and checked at start (findings are warnings).
    pub role_arn: Option<String>,
    /// A bucket jobs read inputs from, for the role check's region test.
    pub input_bucket: Option<String>,
    /// A bucket jobs write outputs to, for the role check's region test.
    pub output_bucket: Option<String>,
}

/// Elastic Transcoder settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderConfig {
    /// Pipelines known without asking ET (`[[transcoder.pipelines]]`); used
    /// instead of `ReadPipeline` where given.
    pub pipelines: Vec<crate::jobs::et::pipeline::Pipeline>,
    /// How long a pipeline read from ET is cached, in seconds.
    pub pipeline_cache_ttl_secs: u64,
    /// KMS calls in flight for one job.
    pub max_concurrent_kms_calls: usize,
    /// The deadline of all of one job's KMS calls, in milliseconds.
    pub job_deadline_ms: u64,
    /// Whether to talk to Elastic Transcoder at all (ReadPipeline, CreateJob).
    /// Off: only `validate_only` jobs on static pipelines. Off by default in
    /// `--dev`.
    pub submit: bool,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        TranscoderConfig {
            pipelines: Vec::new(),
            pipeline_cache_ttl_secs: 300,
            max_concurrent_kms_calls: 32,
            job_deadline_ms: 15_000,
            submit: true,
        }
    }
}

/// The key ledger: the durable record of every key the broker hands out
/// or uses (see [`crate::ledger`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Whether keys are recorded. Off, nothing is recorded and nothing
    /// can be looked up or replayed.
    pub enabled: bool,
    /// A shared PostgreSQL ledger (`postgres://user@host/db`), which every
    /// replica behind one Service must share; unset: the embedded SQLite
    /// file [`LedgerConfig::file`].
    pub url: Option<String>,
    /// The embedded SQLite ledger, used when no `url` is set.
    pub file: PathBuf,
    /// How long a call waits for a database connection before it fails
    /// `UNAVAILABLE`, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long `SubmitEncryptedJob` request tokens are kept, in seconds
    /// (a repeat after that is a new request).
    pub token_retention_secs: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            url: None,
            file: PathBuf::from(".keybroker/ledger.sqlite"),
            connect_timeout_ms: 3_000,
            token_retention_secs: 7 * 24 * 3600,
        }
    }
}
