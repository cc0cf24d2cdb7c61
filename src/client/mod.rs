//! The `keybroker` command line: `serve`, and client subcommands that talk
//! to a running broker and print ET's own JSON.
//!
//! Client subcommands print wrapped keys only; key material a user passes in
//! is read from a file or stdin, never from the command line (where `ps`
//! would show it).

pub mod loadgen;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::app::config::{Config, KmsBackend, LogFormat, TlsMode};
use crate::custody::keys::EncryptionText;
use crate::edge::pb;
use crate::edge::pb::key_broker_client::KeyBrokerClient;
use crate::objects::S3Location;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "keybroker", version, about = "Key-custody broker for encrypted Elastic Transcoder jobs")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Ask a running broker for a fresh wrapped data key; prints ET's
    /// `Encryption` JSON.
    IssueKey(IssueKeyArgs),
    /// Have a running broker wrap key material you must use; prints ET's
    /// `Encryption` JSON.
    WrapKey(WrapKeyArgs),
    /// Have a running broker key, validate and submit an Elastic Transcoder
    /// job written as ET's CreateJob JSON.
    SubmitJob(SubmitJobArgs),
    /// Encrypt a file (or an S3 object) under a fresh key that never leaves
    /// the broker; prints ET's `Encryption` JSON.
    Encrypt(EncryptArgs),
    /// Decrypt a file (or an S3 object) given its ET `Encryption` JSON; the
    /// output appears only once the whole file authenticated.
    Decrypt(DecryptArgs),
    /// Check a broker's health (grpc.health.v1); exit 0 when SERVING.
    Health(HealthArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load a running broker, like redis-benchmark: requests per second,
    /// latency percentiles and errors, beside a bare gRPC baseline.
    Bench(crate::client::loadgen::BenchArgs),
}

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
    #[arg(long, default_value_t = 256)]
    pub key_bits: u32,
    /// KMS key id, ARN or alias (default: the server's).
    #[arg(long, value_name = "ID", default_value = "")]
    pub kms_key_id: String,
    /// The service that will decrypt the key.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub context: ContextArg,
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
    /// Check an audit log's hash chain; report the first edited, deleted,
    /// inserted or reordered record (exit 1 when broken).
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
    },
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
    #[arg(long, default_value_t = 256)]
    pub key_bits: u32,
}

/// `keybroker serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Development mode: local keyring, plaintext gRPC on loopback only.
    #[arg(long)]
    pub dev: bool,
    /// Listen address (default 127.0.0.1:50051).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// KMS backend.
    #[arg(long, value_enum)]
    pub kms: Option<KmsBackend>,
    /// The KMS key used when a request names none.
    #[arg(long, value_name = "ID")]
    pub kms_key_id: Option<String>,
    /// Let plaintext keys leave the broker (return_plaintext, UnwrapKey).
    #[arg(long)]
    pub allow_plaintext_export: bool,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// TLS mode: mutual (default), server, or plaintext (loopback only).
    #[arg(long, value_enum)]
    pub tls_mode: Option<TlsMode>,
    /// Server certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Policy file (TOML): who may do what. Default deny.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Audit log (JSON lines, hash-chained).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Prometheus /metrics listen address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Plaintext health-only gRPC listen address, for probes.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
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
    fn to_proto(self) -> i32 {
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
    #[arg(long, default_value_t = 256)]
    pub key_bits: u32,
    /// aes-cbc-pkcs7, aes-ctr or aes-gcm.
    #[arg(long, default_value = "aes-cbc-pkcs7")]
    pub mode: String,
    /// The service that will decrypt the key.
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

/// A command-line failure, printed on stderr with exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server failed.
    #[error(transparent)]
    Server(#[from] crate::app::server::ServerError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::app::config::ConfigError),
    /// The broker answered with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// The broker could not be reached.
    #[error("cannot reach the broker: {0}")]
    Connect(String),
    /// A local file or input problem.
    #[error("{0}")]
    Input(String),
}

/// Runs the parsed command.
///
/// # Errors
/// [`CliError`] with a message for the user.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::IssueKey(args) => issue_key(args).await,
        Command::WrapKey(args) => wrap_key(args).await,
        Command::SubmitJob(args) => submit_job(args).await,
        Command::Encrypt(args) => interruptible(encrypt_file(args)).await,
        Command::Decrypt(args) => interruptible(decrypt_file(args)).await,
        Command::Health(args) => health(args).await,
        Command::Audit(AuditCommand::Verify { files, after }) => audit_verify(&files, after.as_deref()),
        Command::Bench(args) => crate::client::loadgen::bench_command(args).await,
    }
}

/// The configuration `serve` would run with: file, environment, then flags.
///
/// # Errors
/// [`CliError::Config`].
pub fn serve_config(args: &ServeArgs) -> Result<Config, CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(kms) = args.kms {
        config.kms.backend = kms;
    }
    if let Some(id) = &args.kms_key_id {
        config.kms.default_key_id = Some(id.clone());
    }
    if args.allow_plaintext_export {
        config.allow_plaintext_export = true;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    if let Some(mode) = args.tls_mode {
        config.tls.mode = mode;
    }
    if let Some(path) = &args.tls_cert {
        config.tls.cert_file = Some(path.clone());
    }
    if let Some(path) = &args.tls_key {
        config.tls.key_file = Some(path.clone());
    }
    if let Some(path) = &args.client_ca {
        config.tls.client_ca_file = Some(path.clone());
    }
    if let Some(path) = &args.policy {
        config.policy.file = Some(path.clone());
    }
    if let Some(path) = &args.audit_log {
        config.audit.file = Some(path.clone());
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics_listen = Some(addr);
    }
    if let Some(addr) = args.health_listen {
        config.health_listen = Some(addr);
    }
    if args.dev || config.dev {
        config.apply_dev();
        if let Some(kms) = args.kms {
            config.kms.backend = kms;
        }
    }
    config.validate()?;
    Ok(config)
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let config = serve_config(&args)?;
    crate::app::telemetry::init(config.log.format, &config.log.filter);
    crate::app::hygiene::harden(config.memory.lock_keys);
    if let Some(addr) = config.metrics_listen {
        crate::app::metrics::install(addr).map_err(|e| CliError::Input(format!("metrics on {addr}: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CliError::Input(format!("cannot listen on {}: {e}", config.listen)))?;
    crate::app::server::run(listener, config, crate::app::server::shutdown_signal()).await?;
    Ok(())
}

/// Connects to the broker: plaintext for `http://` and bare `host:port`,
/// TLS for `https://` or whenever a CA certificate is given.
///
/// # Errors
/// [`CliError::Connect`] or [`CliError::Input`] for unreadable PEM files.
pub async fn channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let tls = args.ca_cert.is_some() || args.addr.starts_with("https://");
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else if tls {
        format!("https://{}", args.addr)
    } else {
        format!("http://{}", args.addr)
    };
    // Object streams move 1 MiB chunks: let the broker answer in 1 MiB
    // frames within windows that hold a few of them.
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| CliError::Connect(e.to_string()))?
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 20);
    if tls {
        let read = |path: &Path| std::fs::read(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())));
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &args.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &args.tls_server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| CliError::Connect(crate::app::aws::error_chain(&e)))?;
    }
    endpoint.connect().await.map_err(|e| CliError::Connect(crate::app::aws::error_chain(&e)))
}

/// A broker client over [`channel`].
///
/// # Errors
/// As [`channel`].
pub async fn connect(args: &ClientArgs) -> Result<KeyBrokerClient<Channel>, CliError> {
    Ok(KeyBrokerClient::new(channel(args).await?))
}

fn print_encryption(block: Option<pb::Encryption>) -> Result<(), CliError> {
    let block = block.ok_or_else(|| CliError::Input("the broker answered no encryption block".to_owned()))?;
    let text = EncryptionText {
        mode: block.mode,
        key: block.key,
        key_md5: block.key_md5,
        initialization_vector: block.initialization_vector,
    };
    let json = serde_json::to_string_pretty(&text).map_err(|e| CliError::Input(e.to_string()))?;
    println!("{json}");
    Ok(())
}

async fn issue_key(args: IssueKeyArgs) -> Result<(), CliError> {
    let mut client = connect(&args.client).await?;
    let response = client
        .issue_data_key(pb::IssueDataKeyRequest {
            kms_key_id: args.kms_key_id,
            key_bits: args.key_bits,
            mode: args.mode,
            return_plaintext: false,
            context: args.context.to_proto(),
        })
        .await?
        .into_inner();
    eprintln!("kms_key_arn: {}", response.kms_key_arn);
    print_encryption(response.encryption)
}

/// Reads key material from a file (or `-` for stdin) in `encoding`.
fn read_key_material(path: &Path, encoding: KeyEncoding) -> Result<zeroize::Zeroizing<Vec<u8>>, CliError> {
    let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(128));
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut raw).map_err(|e| CliError::Input(format!("stdin: {e}")))?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    }
    let text = || std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    let decoded = match encoding {
        KeyEncoding::Raw => return Ok(raw),
        KeyEncoding::Hex => hex::decode(text()).ok(),
        KeyEncoding::Base64 => crate::custody::keys::decode_base64(text(), "key").ok(),
    };
    decoded
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| CliError::Input(format!("{}: not valid {encoding:?} key material", path.display())))
}

async fn wrap_key(args: WrapKeyArgs) -> Result<(), CliError> {
    let key = read_key_material(&args.key_file, args.key_encoding)?;
    let iv = match &args.iv_hex {
        Some(text) => hex::decode(text).map_err(|_| CliError::Input("--iv-hex: must be hex".to_owned()))?,
        None => Vec::new(),
    };
    let mut client = connect(&args.client).await?;
    let response = client
        .wrap_key(pb::WrapKeyRequest {
            kms_key_id: args.kms_key_id,
            plaintext_key: key.to_vec(),
            mode: args.mode,
            context: args.context.to_proto(),
            initialization_vector: iv,
        })
        .await?
        .into_inner();
    eprintln!("kms_key_arn: {}", response.kms_key_arn);
    print_encryption(response.encryption)
}

/// Reads a job spec: ET's CreateJob JSON, with `key_bits` for every key
/// the broker is to make.
///
/// # Errors
/// [`CliError::Input`] naming the file and the JSON problem.
pub fn read_job_spec(path: &Path, key_bits: u32) -> Result<crate::jobs::et::model::CreateJob, CliError> {
    use crate::jobs::et::plan::{Block, visit_blocks};
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let mut job: crate::jobs::et::model::CreateJob =
        serde_json::from_str(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let _ = visit_blocks(&mut job, &mut |_, _, block| {
        if let Block::Written(enc) = block
            && enc.key.is_empty()
        {
            enc.key_bits = key_bits;
        }
        Ok::<(), ()>(())
    });
    Ok(job)
}

async fn submit_job(args: SubmitJobArgs) -> Result<(), CliError> {
    let job = read_job_spec(&args.spec, args.key_bits)?;
    let request = crate::edge::rpc::job::job_request_to_proto(&job, args.validate_only);
    let mut client = connect(&args.client).await?;
    let response = client.submit_encrypted_job(request).await?.into_inner();
    let to_json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null);
    let printed = if args.validate_only {
        to_json(&response.create_job_request_json)
    } else {
        let files: Vec<serde_json::Value> = response
            .protected_files
            .iter()
            .map(|f| {
                let enc = f.encryption.clone().unwrap_or_default();
                serde_json::json!({
                    "Path": f.path,
                    "ObjectKey": f.object_key,
                    "IssuedByBroker": f.issued_by_broker,
                    "KeyFingerprint": f.key_fingerprint,
                    "Encryption": EncryptionText {
                        mode: enc.mode,
                        key: enc.key,
                        key_md5: enc.key_md5,
                        initialization_vector: enc.initialization_vector,
                    },
                })
            })
            .collect();
        serde_json::json!({
            "JobId": response.job_id,
            "KmsKeyArn": response.kms_key_arn,
            "ProtectedFiles": files,
            "Job": to_json(&response.job_json),
        })
    };
    let text = serde_json::to_string_pretty(&printed).map_err(|e| CliError::Input(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn health(args: HealthArgs) -> Result<(), CliError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let check = async {
        let mut client = HealthClient::new(channel(&args.client).await?);
        let answer = client.check(HealthCheckRequest { service: args.service.clone() }).await?.into_inner();
        Ok::<_, CliError>(answer.status)
    };
    let status = tokio::time::timeout(Duration::from_secs(args.timeout_secs), check)
        .await
        .map_err(|_| CliError::Connect(format!("no answer within {} s", args.timeout_secs)))??;
    let name = ServingStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
    println!("{name}");
    if status == ServingStatus::Serving as i32 { Ok(()) } else { Err(CliError::Input(format!("not serving: {name}"))) }
}

fn audit_verify(files: &[PathBuf], after: Option<&str>) -> Result<(), CliError> {
    let report = crate::audit::verify_files(files, after);
    for file in &report.files {
        let name = file.path.display();
        match &file.seqs {
            None => println!("{name}: empty"),
            Some(seqs) => println!("{name}: ok, records seq {} to {}", seqs.start(), seqs.end()),
        }
    }
    if let Some(fault) = report.fault {
        return Err(CliError::Input(fault.to_string()));
    }
    match report.last_hash {
        Some(last_hash) => println!("ok: {} records, chain intact; last hash {last_hash}", report.records),
        None => println!("ok: no records"),
    }
    Ok(())
}

/// Where `encrypt` and `decrypt` read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Local files, streamed through the broker.
    Files {
        /// `--in`.
        input: PathBuf,
        /// `--out`.
        output: PathBuf,
    },
    /// S3 objects the broker reads and writes itself.
    S3 {
        /// `--in`.
        source: S3Location,
        /// `--out`.
        destination: S3Location,
    },
}

/// Reads `--in` and `--out`: both files or both `s3://` URLs.
///
/// # Errors
/// [`CliError::Input`] for a malformed S3 URL, a mix of file and S3, or
/// the same file twice.
pub fn route(input: &str, output: &str) -> Result<Route, CliError> {
    let url = |text: &str, flag: &str, parsed: Result<S3Location, crate::custody::keys::KeyError>| {
        parsed.map_err(|e| CliError::Input(format!("{flag} {text}: not a usable s3://BUCKET/KEY URL ({e})")))
    };
    match (S3Location::from_url(input), S3Location::from_url(output)) {
        (None, None) => {
            let (input, output) = (PathBuf::from(input), PathBuf::from(output));
            let same =
                input == output || matches!((input.canonicalize(), output.canonicalize()), (Ok(a), Ok(b)) if a == b);
            if same {
                return Err(CliError::Input(format!("--out must differ from --in ({})", input.display())));
            }
            Ok(Route::Files { input, output })
        }
        (Some(source), Some(destination)) => {
            Ok(Route::S3 { source: url(input, "--in", source)?, destination: url(output, "--out", destination)? })
        }
        _ => Err(CliError::Input(format!(
            "--in {input} and --out {output}: both must be local files or both s3:// URLs \
             (with S3 the broker reads and writes the objects itself; it does not mix S3 and local files)"
        ))),
    }
}

fn s3_proto(location: &S3Location) -> pb::S3Location {
    pb::S3Location { bucket: location.bucket().to_owned(), key: location.key().to_owned() }
}

/// Runs a long client command until done or Ctrl-C; dropping it on Ctrl-C
/// cancels the call and removes its temporary output.
async fn interruptible(work: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(CliError::Input("interrupted; no output was written".to_owned())),
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise, so
/// scripts and logs get none.
fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(len) => indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr())
            .with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
        None => {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        }
    };
    bar.set_message(what.to_owned());
    bar
}

/// A file written beside its destination and renamed into place only when
/// [`TempOutput::persist`] is called; removed when dropped otherwise (an
/// error, a broken stream, Ctrl-C).
struct TempOutput {
    path: PathBuf,
    destination: PathBuf,
    file: Option<tokio::fs::File>,
}

impl TempOutput {
    async fn create(destination: &Path) -> Result<Self, CliError> {
        let name = destination
            .file_name()
            .ok_or_else(|| CliError::Input(format!("--out {}: names no file", destination.display())))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".keybroker-{}.part", uuid::Uuid::new_v4().simple()));
        let path = destination.with_file_name(temp_name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        Ok(TempOutput { path, destination: destination.to_owned(), file: Some(file) })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        use tokio::io::AsyncWriteExt as _;
        let file = self.file.as_mut().ok_or_else(|| CliError::Input("the output is already closed".to_owned()))?;
        file.write_all(bytes).await.map_err(|e| CliError::Input(format!("{}: {e}", self.path.display())))
    }

    /// Flushes to disk and renames into place.
    async fn persist(mut self) -> Result<(), CliError> {
        fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
            move |e| CliError::Input(format!("{}: {e}", path.display()))
        }
        if let Some(file) = self.file.take() {
            file.sync_all().await.map_err(io(&self.path))?;
        }
        tokio::fs::rename(&self.path, &self.destination).await.map_err(io(&self.destination))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The chunk size the CLI reads and sends.
const CLI_CHUNK: usize = 1 << 20;

/// A request stream: the start message, then the file in chunks. A read
/// error does not end the stream (the broker would take a short file as
/// whole); it is reported through the returned receiver, and the caller
/// then cancels the call.
fn file_requests<M: Send + 'static>(
    start: M,
    mut file: tokio::fs::File,
    path: PathBuf,
    bar: indicatif::ProgressBar,
    chunk: fn(Vec<u8>) -> M,
) -> (ReceiverStream<M>, tokio::sync::mpsc::Receiver<CliError>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (failed_tx, failed_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        if tx.send(start).await.is_err() {
            return;
        }
        loop {
            let mut buf = Vec::with_capacity(CLI_CHUNK);
            match (&mut file).take(CLI_CHUNK as u64).read_to_end(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    bar.inc(n as u64);
                    if tx.send(chunk(buf)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = failed_tx.send(CliError::Input(format!("{}: {e}", path.display()))).await;
                    // Keep the stream open until the call is dropped.
                    tx.closed().await;
                    return;
                }
            }
        }
    });
    (ReceiverStream::new(rx), failed_rx)
}

async fn open_input(path: &Path) -> Result<(tokio::fs::File, u64), CliError> {
    let io = |e: std::io::Error| CliError::Input(format!("{}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    Ok((file, len))
}

/// Waits for the status that must follow the `result` message: plaintext
/// and ciphertext are good only when the stream then ends OK.
async fn expect_end<T>(responses: &mut tonic::Streaming<T>) -> Result<(), CliError> {
    match responses.message().await? {
        None => Ok(()),
        Some(_) => Err(CliError::Input("the broker sent more after its result; output discarded".to_owned())),
    }
}

fn no_result() -> CliError {
    CliError::Input("the broker ended the stream without a result; output discarded".to_owned())
}

async fn encrypt_file(args: EncryptArgs) -> Result<(), CliError> {
    use pb::encrypt_object_request::Message as Req;
    use pb::encrypt_object_response::Message as Resp;
    let route = route(&args.input, &args.output)?;
    let mut start = pb::EncryptObjectStart {
        mode: args.mode,
        key_bits: args.key_bits,
        kms_key_id: args.kms_key_id,
        context: args.context.to_proto(),
        source: None,
        destination: None,
    };
    let result = match route {
        Route::S3 { source, destination } => {
            start.source = Some(s3_proto(&source));
            start.destination = Some(s3_proto(&destination));
            let mut client = connect(&args.client).await?;
            let bar = progress(None, &format!("encrypting {source} -> {destination}"));
            let request = pb::EncryptObjectRequest { message: Some(Req::Start(start)) };
            let mut responses = client.encrypt_object(futures::stream::iter([request])).await?.into_inner();
            let result = match responses.message().await?.and_then(|m| m.message) {
                Some(Resp::Result(result)) => result,
                Some(Resp::Chunk(_)) => return Err(CliError::Input("the broker sent data in S3 mode".to_owned())),
                None => return Err(no_result()),
            };
            expect_end(&mut responses).await?;
            bar.finish_and_clear();
            result
        }
        Route::Files { input, output } => {
            let (file, len) = open_input(&input).await?;
            let mut out = TempOutput::create(&output).await?;
            let mut client = connect(&args.client).await?;
            let bar = progress(Some(len), &format!("encrypting {}", input.display()));
            let start = pb::EncryptObjectRequest { message: Some(Req::Start(start)) };
            let chunk = |bytes| pb::EncryptObjectRequest { message: Some(Req::Chunk(bytes)) };
            let (requests, mut read_failed) = file_requests(start, file, input, bar.clone(), chunk);
            let mut responses = client.encrypt_object(requests).await?.into_inner();
            let result = loop {
                let message = tokio::select! {
                    message = responses.message() => message?,
                    Some(err) = read_failed.recv() => return Err(err),
                };
                match message.and_then(|m| m.message) {
                    Some(Resp::Chunk(bytes)) => out.write(&bytes).await?,
                    Some(Resp::Result(result)) => break result,
                    None => return Err(no_result()),
                }
            };
            expect_end(&mut responses).await?;
            out.persist().await?;
            bar.finish_and_clear();
            result
        }
    };
    eprintln!("kms_key_arn: {}", result.kms_key_arn);
    eprintln!("plaintext_bytes: {}, ciphertext_bytes: {}", result.plaintext_bytes, result.ciphertext_bytes);
    print_encryption(result.encryption)
}

/// Reads ET's `Encryption` JSON: the block itself, or an object holding it
/// under `Encryption`.
///
/// # Errors
/// [`CliError::Input`] naming the file and the JSON problem.
pub fn read_encryption(path: &Path) -> Result<pb::Encryption, CliError> {
    let bad = |e: &dyn std::fmt::Display| CliError::Input(format!("--encryption {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
    if let Some(inner) = value.get_mut("Encryption") {
        value = inner.take();
    }
    let block: EncryptionText = serde_json::from_value(value).map_err(|e| bad(&e))?;
    if block.key.is_empty() {
        return Err(bad(&"no Key: expected ET's Encryption JSON as issue-key and encrypt print it"));
    }
    Ok(pb::Encryption {
        mode: block.mode,
        key: block.key,
        key_md5: block.key_md5,
        initialization_vector: block.initialization_vector,
    })
}

async fn decrypt_file(args: DecryptArgs) -> Result<(), CliError> {
    use pb::decrypt_object_request::Message as Req;
    use pb::decrypt_object_response::Message as Resp;
    let route = route(&args.input, &args.output)?;
    let mut start = pb::DecryptObjectStart {
        encryption: Some(read_encryption(&args.encryption)?),
        context: args.context.to_proto(),
        source: None,
        destination: None,
    };
    let result = match route {
        Route::S3 { source, destination } => {
            start.source = Some(s3_proto(&source));
            start.destination = Some(s3_proto(&destination));
            let mut client = connect(&args.client).await?;
            let bar = progress(None, &format!("decrypting {source} -> {destination}"));
            let request = pb::DecryptObjectRequest { message: Some(Req::Start(start)) };
            let mut responses = client.decrypt_object(futures::stream::iter([request])).await?.into_inner();
            let result = match responses.message().await?.and_then(|m| m.message) {
                Some(Resp::Result(result)) => result,
                Some(Resp::Chunk(_)) => return Err(CliError::Input("the broker sent data in S3 mode".to_owned())),
                None => return Err(no_result()),
            };
            expect_end(&mut responses).await?;
            bar.finish_and_clear();
            result
        }
        Route::Files { input, output } => {
            let (file, len) = open_input(&input).await?;
            let mut out = TempOutput::create(&output).await?;
            let mut client = connect(&args.client).await?;
            let bar = progress(Some(len), &format!("decrypting {}", input.display()));
            let start = pb::DecryptObjectRequest { message: Some(Req::Start(start)) };
            let chunk = |bytes| pb::DecryptObjectRequest { message: Some(Req::Chunk(bytes)) };
            let (requests, mut read_failed) = file_requests(start, file, input, bar.clone(), chunk);
            let mut responses = client.decrypt_object(requests).await?.into_inner();
            // Everything written before the result is provisional: it stays
            // in the temporary file, which is removed unless persisted.
            let result = loop {
                let message = tokio::select! {
                    message = responses.message() => message?,
                    Some(err) = read_failed.recv() => return Err(err),
                };
                match message.and_then(|m| m.message) {
                    Some(Resp::Chunk(bytes)) => out.write(&bytes).await?,
                    Some(Resp::Result(result)) => break result,
                    None => return Err(no_result()),
                }
            };
            expect_end(&mut responses).await?;
            out.persist().await?;
            bar.finish_and_clear();
            result
        }
    };
    eprintln!("plaintext_bytes: {}", result.plaintext_bytes);
    Ok(())
}
