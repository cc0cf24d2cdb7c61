//! The clap argument types of every subcommand but `bench` (whose flags
//! live beside the load generator), and the small value enums they share.
//!
//! Owns flag names, defaults and help text. Must never do any work: no I/O,
//! no network; and key material is never a flag (where `ps` would show it),
//! only a file or stdin.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::app::config::{KmsBackend, LogFormat, TlsMode};
use crate::edge::pb;

/// `keybroker health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service to check; empty: the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// `keybroker encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The plaintext: a file, or `s3://BUCKET/KEY` (then `--out` must be an
    /// S3 URL too, and the broker reads and writes S3 itself).
    #[arg(long = "in", value_name = "FILE|s3://BUCKET/KEY")]
    pub input: String,
    /// Where the ciphertext goes: a file (written to a temporary file beside
    /// it and renamed into place at the end), or `s3://BUCKET/KEY`.
    #[arg(long = "out", value_name = "FILE|s3://BUCKET/KEY")]
    pub output: String,
    /// aes-cbc-pkcs7, aes-ctr or aes-gcm.
    #[arg(long)]
    pub mode: String,
    /// 128, 192 or 256.
    #[arg(long, default_value_t = 256, value_parser = key_bits)]
    pub key_bits: u32,
    /// KMS key id, ARN or alias (default: the server's).
    #[arg(long, value_name = "ID", default_value = "")]
    pub kms_key_id: String,
    /// The service that will decrypt the key.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
    /// S3 mode: an idempotency token (1 to 64 printable ASCII characters);
    /// a repeat with it answers the first call's result, uploading nothing.
    #[arg(long, value_name = "TOKEN", default_value = "")]
    pub request_token: String,
}

/// `keybroker decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The ciphertext: a file, or `s3://BUCKET/KEY` (then `--out` must be an
    /// S3 URL too).
    #[arg(long = "in", value_name = "FILE|s3://BUCKET/KEY")]
    pub input: String,
    /// Where the plaintext goes: a file that appears only after the broker
    /// ended the stream with its result (a failed GCM tag leaves none), or
    /// `s3://BUCKET/KEY`.
    #[arg(long = "out", value_name = "FILE|s3://BUCKET/KEY")]
    pub output: String,
    /// ET's `Encryption` JSON, as `issue-key` and `encrypt` print it.
    #[arg(long, value_name = "FILE")]
    pub encryption: PathBuf,
    /// The service context the key was wrapped under.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
}

/// `keybroker audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's keyed chain; report the first edited, forged,
    /// deleted, inserted or reordered record, and with `--checkpoint` a cut
    /// tail (exit 1 when broken, or when records are unkeyed legacy ones).
    Verify {
        /// The audit log; several files are checked as one chain, oldest
        /// first (rotated files, then the current one).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The last hash of the file before the first one given (anchored
        /// elsewhere): the first file must continue from it. Without it,
        /// the first file must start the chain (seq 0).
        #[arg(long, value_name = "HASH")]
        after: Option<String>,
        /// A checkpoint the chain must reach: the checkpoint file (or a
        /// server log), whose last checkpoint is used, or a `kbcp1.…` token.
        #[arg(long, value_name = "FILE|TOKEN")]
        checkpoint: Option<String>,
        /// Accept legacy records (plain SHA-256, written before the chain
        /// was keyed) ahead of the keyed ones, reporting them as unkeyed.
        #[arg(long)]
        allow_legacy: bool,
        #[command(flatten)]
        key: ChainKeyArgs,
    },
    /// Unwrap the chain key through KMS and write it to a new file (mode
    /// 0600), for `audit verify --key-file` on a machine without KMS access.
    ExportKey {
        /// The file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        kms: ChainKmsArgs,
    },
}

/// Where `keybroker audit` gets the chain key: a key file, or KMS.
#[derive(Debug, Args)]
pub struct ChainKeyArgs {
    /// The chain key itself, as `audit export-key` wrote it (32 bytes,
    /// mode 0600); without it, the key is unwrapped through KMS.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub kms: ChainKmsArgs,
}

/// How `keybroker audit` reaches KMS: the configuration `serve` runs with
/// (its file, `KEYBROKER_*` variables, these flags).
#[derive(Debug, Args)]
pub struct ChainKmsArgs {
    /// The TOML configuration the broker runs with.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// KMS backend.
    #[arg(long, value_enum)]
    pub kms: Option<KmsBackend>,
    /// The KMS-wrapped chain key (default: `audit.wrapped_chain_key_file`,
    /// or `<audit.file>.chain-key`).
    #[arg(long, value_name = "FILE")]
    pub wrapped_key: Option<PathBuf>,
}

impl ChainKmsArgs {
    /// The flags given, by configuration key, laid over the file and the
    /// environment.
    pub fn overrides(&self) -> figment::providers::Serialized<serde_json::Value> {
        let mut flags = serde_json::json!({
            "kms": { "backend": self.kms },
            "audit": { "wrapped_chain_key_file": self.wrapped_key },
        });
        drop_unset(&mut flags);
        figment::providers::Serialized::defaults(flags)
    }
}

/// `keybroker submit-job`.
#[derive(Debug, Args)]
pub struct SubmitJobArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job: ET's CreateJob request JSON (`aws elastictranscoder create-job
    /// --cli-input-json` form). An AES `Encryption`, `ThumbnailEncryption` or
    /// `HlsContentProtection` without `Key` asks the broker for a fresh key.
    #[arg(long, value_name = "FILE")]
    pub spec: PathBuf,
    /// Assemble and validate, print the CreateJob body, submit nothing.
    #[arg(long)]
    pub validate_only: bool,
    /// Length of the keys the broker makes: 128, 192 or 256.
    #[arg(long, default_value_t = 256, value_parser = key_bits)]
    pub key_bits: u32,
}

/// `keybroker pipeline …`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Check what Elastic Transcoder needs of a pipeline and its KMS key;
    /// prints pass / fail / unknown per requirement with the fix (exit 1
    /// when one fails).
    Check {
        #[command(flatten)]
        client: ClientArgs,
        /// The pipeline id.
        #[arg(value_name = "PIPELINE_ID")]
        pipeline_id: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a KMS key on a pipeline (ET UpdatePipeline) and grant the
    /// pipeline's role Decrypt under the ET context (KMS CreateGrant):
    /// prints the plan, and with --apply makes it and checks again.
    Connect {
        #[command(flatten)]
        client: ClientArgs,
        /// The pipeline id.
        #[arg(value_name = "PIPELINE_ID")]
        pipeline_id: String,
        /// The KMS key ARN to connect (arn:aws:kms:REGION:ACCOUNT:key/ID).
        #[arg(long, value_name = "ARN")]
        kms_key: String,
        /// Make the changes; without it nothing changes.
        #[arg(long)]
        apply: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `keybroker serve`.
// Each flag's help names the variable that sets the same configuration key,
// and the default. The variables are read by the configuration loader (file,
// then environment, then flags), not by clap (`env`), so `--dev`'s profile
// stays between the environment and the flags.
#[derive(Debug, Args)]
#[command(after_help = "Every configuration key has a variable: KEYBROKER_ and the key path in upper case, \
nested keys joined by __ (kms.backend: KEYBROKER_KMS__BACKEND). A flag wins over the variable, the \
variable over the file (--config). RUST_LOG wins over log.filter.")]
pub struct ServeArgs {
    /// TOML configuration file (keys and defaults: deploy/keybroker.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Development mode: local keyring, plaintext gRPC on loopback only, no job submission
    /// [env: KEYBROKER_DEV] [default: false].
    #[arg(long)]
    pub dev: bool,
    /// gRPC listen address [env: KEYBROKER_LISTEN] [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// KMS backend [env: KEYBROKER_KMS__BACKEND] [default: aws; local with --dev].
    #[arg(long, value_enum)]
    pub kms: Option<KmsBackend>,
    /// The KMS key used when a request names none [env: KEYBROKER_KMS__DEFAULT_KEY_ID]
    /// [default: none; alias/keybroker-dev with --dev].
    #[arg(long, value_name = "ID")]
    pub kms_key_id: Option<String>,
    /// Let plaintext keys leave the broker (return_plaintext, UnwrapKey, DecryptObject)
    /// [env: KEYBROKER_ALLOW_PLAINTEXT_EXPORT] [default: false].
    #[arg(long)]
    pub allow_plaintext_export: bool,
    /// Log format [env: KEYBROKER_LOG__FORMAT] [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// TLS mode: mutual, server, or plaintext (loopback only) [env: KEYBROKER_TLS__MODE]
    /// [default: mutual; plaintext with --dev].
    #[arg(long, value_enum)]
    pub tls_mode: Option<TlsMode>,
    /// Server certificate chain, PEM [env: KEYBROKER_TLS__CERT_FILE].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key, PEM [env: KEYBROKER_TLS__KEY_FILE].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates that client certificates must chain to, PEM [env: KEYBROKER_TLS__CLIENT_CA_FILE].
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Policy file (TOML): who may do what; default deny [env: KEYBROKER_POLICY__FILE]
    /// [default: none, required outside --dev unless policy.allow_all].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Audit log, JSON lines with a keyed chain [env: KEYBROKER_AUDIT__FILE] [default: none].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Prometheus /metrics listen address [env: KEYBROKER_METRICS_LISTEN] [default: none].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Plaintext health-only gRPC listen address, for probes [env: KEYBROKER_HEALTH_LISTEN] [default: none].
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
}

impl ServeArgs {
    /// The flags given, by configuration key, as a figment provider laid
    /// over the file and the environment; a flag not given sets nothing.
    pub fn overrides(&self) -> figment::providers::Serialized<serde_json::Value> {
        let mut flags = serde_json::json!({
            "dev": self.dev.then_some(true),
            "listen": self.listen,
            "allow_plaintext_export": self.allow_plaintext_export.then_some(true),
            "kms": { "backend": self.kms, "default_key_id": self.kms_key_id },
            "log": { "format": self.log_format },
            "tls": {
                "mode": self.tls_mode,
                "cert_file": self.tls_cert,
                "key_file": self.tls_key,
                "client_ca_file": self.client_ca,
            },
            "policy": { "file": self.policy },
            "audit": { "file": self.audit_log },
            "metrics_listen": self.metrics_listen,
            "health_listen": self.health_listen,
        });
        drop_unset(&mut flags);
        figment::providers::Serialized::defaults(flags)
    }
}

/// Removes the flags not given (`null`) and the tables left empty.
fn drop_unset(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.values_mut().for_each(drop_unset);
        map.retain(|_, v| !v.is_null() && v.as_object().is_none_or(|table| !table.is_empty()));
    }
}

/// Which service will decrypt the key.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ContextArg {
    /// Elastic Transcoder.
    ElasticTranscoder,
    /// AWS Elemental MediaConvert.
    Mediaconvert,
}

impl ContextArg {
    pub(super) fn to_proto(self) -> i32 {
        match self {
            ContextArg::ElasticTranscoder => pb::ServiceContext::ElasticTranscoder as i32,
            ContextArg::Mediaconvert => pb::ServiceContext::Mediaconvert as i32,
        }
    }
}

/// Where the broker is, and how to prove who we are.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The broker's address: `host:port`, `http://…`, or `https://…` for TLS.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "KEYBROKER_ADDR")]
    pub addr: String,
    /// CA certificate(s) to verify the broker with (PEM); implies TLS.
    #[arg(long, value_name = "FILE", env = "KEYBROKER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM).
    #[arg(long, value_name = "FILE", env = "KEYBROKER_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Client private key for mutual TLS (PEM).
    #[arg(long, value_name = "FILE", env = "KEYBROKER_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The name the broker's certificate must carry (default: the host in --addr).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

/// `keybroker issue-key`.
#[derive(Debug, Args)]
pub struct IssueKeyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// KMS key id, ARN or alias (default: the server's).
    #[arg(long, value_name = "ID", default_value = "")]
    pub kms_key_id: String,
    /// 128, 192 or 256.
    #[arg(long, default_value_t = 256, value_parser = key_bits)]
    pub key_bits: u32,
    /// aes-cbc-pkcs7, aes-ctr or aes-gcm.
    #[arg(long, default_value = "aes-cbc-pkcs7")]
    pub mode: String,
    /// The service that will decrypt the key.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
    /// Also take the plaintext key (the broker must allow plaintext export)
    /// and write it as hex to this new file, mode 0600; an existing file is
    /// never overwritten.
    #[arg(long, value_name = "FILE")]
    pub plaintext_out: Option<PathBuf>,
}

/// `keybroker unwrap-key`.
#[derive(Debug, Args)]
pub struct UnwrapKeyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// ET's `Encryption` JSON, as `issue-key` and `encrypt` print it (or an
    /// object holding it under `Encryption`).
    #[arg(long, value_name = "FILE")]
    pub encryption: PathBuf,
    /// Write the key to this new file, mode 0600 (never overwritten), and
    /// print the IV as hex on stdout. Without it the key goes to stdout,
    /// which must not be a terminal unless --force-terminal.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the key on stdout even when it is a terminal.
    #[arg(long, conflicts_with = "out")]
    pub force_terminal: bool,
    /// How the key is written: `hex` (for `openssl enc -K`), `base64` or `raw` bytes.
    #[arg(long, value_enum, default_value = "hex")]
    pub key_encoding: KeyEncoding,
    /// The KMS key that must have wrapped it (id, ARN or alias; default: any).
    #[arg(long, value_name = "ID", default_value = "")]
    pub kms_key_id: String,
    /// The service context the key was wrapped under.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
}

/// How a key file is written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyEncoding {
    /// Hex digits (surrounding whitespace ignored).
    Hex,
    /// Standard base64 (surrounding whitespace ignored).
    Base64,
    /// The bytes themselves.
    Raw,
}

/// `keybroker wrap-key`.
#[derive(Debug, Args)]
pub struct WrapKeyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// File holding the key (16, 24 or 32 bytes). `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// How the key file is written: `hex` (as `openssl rand -hex 32` writes), `base64` or `raw` bytes.
    #[arg(long, value_enum, default_value = "hex")]
    pub key_encoding: KeyEncoding,
    /// The 16-byte IV the data is encrypted with, as hex (default: a fresh one).
    #[arg(long, value_name = "HEX")]
    pub iv_hex: Option<String>,
    /// KMS key id, ARN or alias (default: the server's).
    #[arg(long, value_name = "ID", default_value = "")]
    pub kms_key_id: String,
    /// aes-cbc-pkcs7, aes-ctr or aes-gcm.
    #[arg(long, default_value = "aes-cbc-pkcs7")]
    pub mode: String,
    /// The service that will decrypt the key.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
}

/// `--key-bits`: 128, 192 or 256, refused here before any call.
fn key_bits(text: &str) -> Result<u32, String> {
    match text.parse() {
        Ok(bits @ (128 | 192 | 256)) => Ok(bits),
        _ => Err(format!("must be 128, 192 or 256, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::client::Cli;

    #[test]
    fn key_lengths_are_checked_before_any_call() {
        for command in ["issue-key", "submit-job"] {
            let mut argv = vec!["keybroker", command, "--key-bits", "64"];
            if command == "submit-job" {
                argv.extend(["--spec", "job.json"]);
            }
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains("must be 128, 192 or 256, got \"64\""), "{command}: {err}");
        }
        assert!(Cli::try_parse_from(["keybroker", "issue-key", "--key-bits", "192"]).is_ok());
    }
}
