//! Server configuration: a TOML file, then `KEYBROKER_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Owns defaults and the checks that make a configuration safe to start with.
//! It holds no secrets (the local master key lives in its own file), so it may
//! be logged.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod pool;
mod sections;

pub use pool::{ExtraPool, PoolConfig};

pub use sections::{
    AuditConfig, AwsConfig, KmsBackend, KmsConfig, LedgerConfig, LimitsConfig, LocalKmsConfig, LogConfig, LogFormat,
    MediaConvertConfig, MemoryConfig, PolicyConfig, S3Config, TlsConfig, TlsMode, TranscoderConfig,
};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable did not parse.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value broke a rule.
    #[error("configuration: {key}: {rule}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

/// Everything `keybroker serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// Development mode: the local keyring, plaintext gRPC, loopback only.
    pub dev: bool,
    /// Whether plaintext keys may leave the broker (`return_plaintext`,
    /// `UnwrapKey`, `DecryptObject`). Off by default.
    pub allow_plaintext_export: bool,
    /// How long in-flight calls may run after SIGTERM/SIGINT, in seconds.
    pub shutdown_grace_secs: u64,
    /// Logging.
    pub log: LogConfig,
    /// The AWS SDK settings every AWS client shares.
    pub aws: AwsConfig,
    /// Key wrapping.
    pub kms: KmsConfig,
    /// Elastic Transcoder job assembly and submission.
    pub transcoder: TranscoderConfig,
    /// MediaConvert job assembly and submission.
    pub mediaconvert: MediaConvertConfig,
    /// A plaintext listener serving only `grpc.health.v1` (no key RPCs), for
    /// probes that cannot present a client certificate.
    pub health_listen: Option<SocketAddr>,
    /// Prometheus exposition (`/metrics`) listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Transport security.
    pub tls: TlsConfig,
    /// Who may do what.
    pub policy: PolicyConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Process memory hygiene.
    pub memory: MemoryConfig,
    /// S3 mode of EncryptObject/DecryptObject.
    pub s3: S3Config,
    /// The key ledger.
    pub ledger: LedgerConfig,
    /// Keys wrapped ahead of demand.
    pub pool: PoolConfig,
    /// What loading noticed that the operator should hear about (renamed
    /// keys), logged once telemetry is up. Not configuration.
    #[serde(skip)]
    pub notices: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            dev: false,
            allow_plaintext_export: false,
            shutdown_grace_secs: 10,
            log: LogConfig::default(),
            aws: AwsConfig::default(),
            kms: KmsConfig::default(),
            transcoder: TranscoderConfig::default(),
            mediaconvert: MediaConvertConfig::default(),
            health_listen: None,
            metrics_listen: None,
            tls: TlsConfig::default(),
            policy: PolicyConfig::default(),
            audit: AuditConfig::default(),
            limits: LimitsConfig::default(),
            memory: MemoryConfig::default(),
            s3: S3Config::default(),
            ledger: LedgerConfig::default(),
            pool: PoolConfig::default(),
            notices: Vec::new(),
        }
    }
}

/// The pipeline `--dev` knows when the configuration names none: wrapped by
/// the dev key of the local keyring, so `validate_only` jobs work offline.
pub fn dev_pipeline() -> crate::jobs::et::pipeline::Pipeline {
    crate::jobs::et::pipeline::Pipeline {
        id: DEV_PIPELINE_ID.to_owned(),
        kms_key_arn: Some(format!("{}{DEV_DEFAULT_KEY_ID}", crate::custody::kms::local::LOCAL_ARN_PREFIX)),
        role: "arn:aws:iam::000000000000:role/keybroker-dev".to_owned(),
        region: Some("local".to_owned()),
        ..Default::default()
    }
}

/// The id of [`dev_pipeline`].
pub const DEV_PIPELINE_ID: &str = "0000000000000-keydev";

/// Whether a `KEYBROKER_*` variable (prefix stripped, any case, nesting
/// written `__` or already split to `.`) names a key of the configuration
/// (one of `top_level`); other variables, such as the clients'
/// `KEYBROKER_ADDR`, are not configuration.
fn is_configuration_key(top_level: &[String], key: &str) -> bool {
    top_level.iter().any(|top| {
        key.eq_ignore_ascii_case(top)
            || (key.len() > top.len() + 2
                && key[..top.len()].eq_ignore_ascii_case(top)
                && (key[top.len()..].starts_with("__") || key[top.len()..].starts_with('.')))
    })
}

/// The configuration's top-level keys, read off the struct itself.
fn top_level_keys() -> Vec<String> {
    match figment::value::Value::serialize(Config::default()) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// The longest group-commit delay the configuration accepts: 100 ms.
const MAX_GROUP_COMMIT_DELAY_US: u64 = 100_000;

/// The key id `--dev` uses when none is configured.
pub const DEV_DEFAULT_KEY_ID: &str = "alias/keybroker-dev";

impl Config {
    /// Loads defaults, then `file` (if any), then `KEYBROKER_*` variables
    /// (nested keys joined by `__`, e.g. `KEYBROKER_KMS__BACKEND=local`).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the bad key or file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, Serialized::defaults(figment::value::Dict::new()))
    }

    /// Loads defaults, then `file` (if any), then `KEYBROKER_*` variables,
    /// then `flags` (the command line's values, by configuration key), in
    /// one figment chain. When any of them sets `dev`, the development
    /// profile ([`Config::apply_dev`]) lies between the environment and
    /// the flags, so a flag still wins over it.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the bad key or file; [`ConfigError::Invalid`]
    /// for a missing file or an SDK setting given under both its old and
    /// its new name.
    pub fn load_with(file: Option<&Path>, flags: impl figment::Provider) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    rule: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let top_level = top_level_keys();
        figment = figment.merge(
            Env::prefixed("KEYBROKER_").split("__").filter(move |key| is_configuration_key(&top_level, key.as_str())),
        );
        let flags = Figment::from(flags);
        let parse = |e| ConfigError::Parse(Box::new(e));
        if figment.clone().merge(flags.clone()).extract_inner::<bool>("dev").unwrap_or(false) {
            let mut dev: Config = figment.extract().map_err(parse)?;
            dev.apply_dev();
            figment = figment.merge(Serialized::defaults(dev));
        }
        let mut config: Config = figment.merge(flags).extract().map_err(parse)?;
        let Config { kms, aws, notices, .. } = &mut config;
        move_sdk_settings(kms, aws, notices)?;
        Ok(config)
    }

    /// Applies `--dev`: the local keyring, a default key, loopback only.
    pub fn apply_dev(&mut self) {
        self.dev = true;
        self.kms.backend = KmsBackend::Local;
        if self.kms.default_key_id.is_none() {
            self.kms.default_key_id = Some(DEV_DEFAULT_KEY_ID.to_owned());
        }
        self.transcoder.submit = false;
        self.mediaconvert.submit = false;
        self.tls.mode = TlsMode::Plaintext;
        self.pool.enabled.get_or_insert(true);
        if self.transcoder.pipelines.is_empty() {
            self.transcoder.pipelines.push(dev_pipeline());
        }
    }

    /// Checks the rules no single field can check alone.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dev && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "listen",
                rule: format!(
                    "--dev serves plaintext gRPC and listens on loopback only; {} is not a loopback address",
                    self.listen
                ),
            });
        }
        match self.tls.mode {
            TlsMode::Plaintext => {
                if !self.listen.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        key: "tls.mode",
                        rule: format!(
                            "plaintext gRPC is served on loopback only; {} is not a loopback address: configure \
                             tls.cert_file, tls.key_file and tls.client_ca_file",
                            self.listen
                        ),
                    });
                }
            }
            TlsMode::Mutual | TlsMode::Server => {
                if self.tls.cert_file.is_none() || self.tls.key_file.is_none() {
                    return Err(ConfigError::Invalid {
                        key: "tls.cert_file",
                        rule: "TLS needs tls.cert_file and tls.key_file (--tls-cert, --tls-key); for a loopback-only \
                               server without TLS set tls.mode = \"plaintext\""
                            .to_owned(),
                    });
                }
                if self.tls.mode == TlsMode::Mutual && self.tls.client_ca_file.is_none() {
                    return Err(ConfigError::Invalid {
                        key: "tls.client_ca_file",
                        rule: "mutual TLS needs a trust bundle for client certificates (--client-ca)".to_owned(),
                    });
                }
            }
        }
        self.limits.validate()?;
        self.pool.validate()?;
        match (&self.policy.file, self.policy.allow_all) {
            (None, false) if !self.dev => {
                return Err(ConfigError::Invalid {
                    key: "policy.file",
                    rule: "keybroker denies by default and needs a policy: give one (--policy FILE), or set \
                           policy.allow_all = true to let every caller call every RPC (not for production)"
                        .to_owned(),
                });
            }
            (Some(_), true) => {
                return Err(ConfigError::Invalid {
                    key: "policy.allow_all",
                    rule: "cannot be set with policy.file: the file decides".to_owned(),
                });
            }
            _ => {}
        }
        if !(5..=5120).contains(&self.s3.part_size_mib) {
            return Err(ConfigError::Invalid { key: "s3.part_size_mib", rule: "must be 5 to 5120".to_owned() });
        }
        if self.audit.group_commit_delay_us > MAX_GROUP_COMMIT_DELAY_US {
            return Err(ConfigError::Invalid {
                key: "audit.group_commit_delay_us",
                rule: format!("must be at most {MAX_GROUP_COMMIT_DELAY_US} (every audited call may wait this long)"),
            });
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_every",
                rule: "checkpoint_every and checkpoint_interval_ms must be greater than 0".to_owned(),
            });
        }
        if self.audit.file.is_some() && self.audit.chain_key_id(&self.kms).is_none() {
            return Err(ConfigError::Invalid {
                key: "audit.chain_key_id",
                rule: "must be set (or kms.default_key_id): a KMS key wraps the audit chain key".to_owned(),
            });
        }
        if self.aws.max_attempts == 0 {
            return Err(ConfigError::Invalid { key: "aws.max_attempts", rule: "must be at least 1".to_owned() });
        }
        if self.aws.call_timeout_ms == 0 || self.aws.attempt_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "aws.call_timeout_ms",
                rule: "timeouts must be greater than 0".to_owned(),
            });
        }
        if self.transcoder.max_concurrent_kms_calls == 0 || self.transcoder.job_deadline_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "transcoder.max_concurrent_kms_calls",
                rule: "max_concurrent_kms_calls and job_deadline_ms must be greater than 0".to_owned(),
            });
        }
        if let Some(arn) = &self.mediaconvert.output_kms_key_arn
            && !crate::jobs::mediaconvert::validate::is_kms_key_arn(arn)
        {
            return Err(ConfigError::Invalid {
                key: "mediaconvert.output_kms_key_arn",
                rule: "must be a KMS key ARN (MediaConvert takes no alias here)".to_owned(),
            });
        }
        if let Some(role) = &self.mediaconvert.role_arn
            && !crate::jobs::mediaconvert::validate::is_role_arn(role)
        {
            return Err(ConfigError::Invalid {
                key: "mediaconvert.role_arn",
                rule: "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)".to_owned(),
            });
        }
        for pipeline in &self.transcoder.pipelines {
            if !crate::jobs::et::validate::is_pipeline_id(&pipeline.id) {
                return Err(ConfigError::Invalid {
                    key: "transcoder.pipelines",
                    rule: format!(r"id {:?} must match ^\d{{13}}-\w{{6}}$", pipeline.id),
                });
            }
        }
        if let Some(id) = &self.kms.default_key_id {
            crate::custody::kms::KmsKeyId::parse(id, "kms.default_key_id")
                .map_err(|e| ConfigError::Invalid { key: "kms.default_key_id", rule: e.rule })?;
        }
        Ok(())
    }
}

/// Moves SDK settings written under `[kms]` (their home before `[aws]`)
/// to `aws`, noting each; a key set in both places is refused.
fn move_sdk_settings(kms: &mut KmsConfig, aws: &mut AwsConfig, notices: &mut Vec<String>) -> Result<(), ConfigError> {
    fn take<T: PartialEq>(
        old: &mut Option<T>,
        new: &mut T,
        default: T,
        key: &'static str,
        notices: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let Some(value) = old.take() else {
            return Ok(());
        };
        if *new != default {
            return Err(ConfigError::Invalid {
                key,
                rule: format!("set in both [kms] and [aws]; keep only aws.{}", &key["kms.".len()..]),
            });
        }
        *new = value;
        notices.push(format!("{key} is now aws.{}; the old name still works", &key["kms.".len()..]));
        Ok(())
    }
    let defaults = AwsConfig::default();
    take(&mut kms.region.take().map(Some), &mut aws.region, defaults.region, "kms.region", notices)?;
    take(&mut kms.call_timeout_ms, &mut aws.call_timeout_ms, defaults.call_timeout_ms, "kms.call_timeout_ms", notices)?;
    take(
        &mut kms.attempt_timeout_ms,
        &mut aws.attempt_timeout_ms,
        defaults.attempt_timeout_ms,
        "kms.attempt_timeout_ms",
        notices,
    )?;
    take(
        &mut kms.connect_timeout_ms,
        &mut aws.connect_timeout_ms,
        defaults.connect_timeout_ms,
        "kms.connect_timeout_ms",
        notices,
    )?;
    take(&mut kms.max_attempts, &mut aws.max_attempts, defaults.max_attempts, "kms.max_attempts", notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keybroker.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        config.validate().unwrap();
        assert_eq!(config.kms.backend, KmsBackend::Aws);
    }

    #[test]
    fn outside_dev_a_policy_is_required_unless_allow_all_says_otherwise() {
        let mut config = Config { policy: PolicyConfig { file: None, allow_all: true }, ..Config::default() };
        config.tls.mode = TlsMode::Plaintext;
        config.validate().unwrap();
        config.policy.allow_all = false;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("policy.file") && err.contains("--policy FILE"), "{err}");
        config.policy.file = Some(std::path::PathBuf::from("policy.toml"));
        config.validate().unwrap();
        config.policy.allow_all = true;
        assert!(config.validate().unwrap_err().to_string().contains("policy.allow_all"));
        // --dev needs neither.
        let mut dev = Config::default();
        dev.apply_dev();
        dev.validate().unwrap();
    }

    #[test]
    fn dev_refuses_a_non_loopback_listen_address() {
        let mut config = Config { listen: "0.0.0.0:50051".parse().unwrap(), ..Config::default() };
        config.apply_dev();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn top_level_keys_match_the_struct() {
        let value = serde_json::to_value(Config::default()).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        let mut known = top_level_keys();
        keys.sort();
        known.sort();
        assert_eq!(keys, known);
    }

    #[test]
    fn only_configuration_variables_are_read() {
        let top = top_level_keys();
        assert!(is_configuration_key(&top, "kms__default_key_id"));
        assert!(is_configuration_key(&top, "LISTEN"));
        assert!(is_configuration_key(&top, "KMS.DEFAULT_KEY_ID"));
        assert!(is_configuration_key(&top, "aws__region"));
        assert!(!is_configuration_key(&top, "addr"));
        assert!(!is_configuration_key(&top, "test_moto_url"));
        assert!(!is_configuration_key(&top, "kmsx__a"));
    }

    #[test]
    fn sdk_settings_under_their_old_kms_names_move_to_aws_with_a_notice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kms]\nregion = \"eu-west-1\"\nmax_attempts = 5\n[aws]\ncall_timeout_ms = 900\n")
            .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.aws.max_attempts, 5);
        assert_eq!(config.aws.call_timeout_ms, 900);
        assert_eq!(config.notices.len(), 2, "{:?}", config.notices);
        assert!(config.notices[0].contains("kms.region is now aws.region"), "{:?}", config.notices);

        std::fs::write(&path, "[kms]\nregion = \"eu-west-1\"\n[aws]\nregion = \"us-east-1\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("kms.region: set in both [kms] and [aws]"), "{err}");
    }

    #[test]
    fn flags_lie_over_the_file_and_over_the_dev_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\ndev = true\n[kms]\nbackend = \"aws\"\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.kms.backend, KmsBackend::Local, "dev in the file chooses the local keyring");
        assert_eq!(config.tls.mode, TlsMode::Plaintext);
        assert_eq!(config.kms.default_key_id.as_deref(), Some(DEV_DEFAULT_KEY_ID));

        let flags = Serialized::defaults(serde_json::json!({"listen": "127.0.0.1:7001", "kms": {"backend": "aws"}}));
        let config = Config::load_with(Some(&path), flags).unwrap();
        assert_eq!(config.kms.backend, KmsBackend::Aws, "--kms wins over --dev");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 7001)));
        assert!(config.dev);
    }

    #[test]
    fn dev_keeps_key_pools_unless_the_configuration_says_otherwise() {
        assert!(!Config::default().pool.is_enabled());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "dev = true\n").unwrap();
        assert!(Config::load(Some(&path)).unwrap().pool.is_enabled());
        std::fs::write(&path, "dev = true\n[pool]\nenabled = false\n").unwrap();
        assert!(!Config::load(Some(&path)).unwrap().pool.is_enabled());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_adress = 3\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
    }
}
