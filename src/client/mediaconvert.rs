//! `mediaconvert submit` and `migrate et-input`: MediaConvert jobs through
//! the broker, and Elastic Transcoder input keys moved to MediaConvert.
//! Their flags live here, beside the commands.
//!
//! `submit` reads a CreateJob document (what `aws mediaconvert create-job
//! --cli-input-json` takes) and prints the broker's answer; `et-input`
//! reads an ET input `Encryption` block and prints MediaConvert
//! `DecryptionSettings` whose key KMS re-encrypted to the MediaConvert
//! context (RewrapKeys: recorded and audited by the broker). Must never
//! print or ask for plaintext: a `--validate-only` body shows static keys
//! only when the broker allows this caller plaintext export.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::args::ClientArgs;
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::client::keys::read_encryption;
use crate::edge::pb;
use crate::jobs::mediaconvert::inputs::mediaconvert_mode;

/// `keybroker mediaconvert …`.
#[derive(Debug, Subcommand)]
pub enum MediaConvertCommand {
    /// Have the broker key, validate and (unless `--validate-only`) submit a
    /// MediaConvert job written as MediaConvert's CreateJob JSON.
    Submit(SubmitArgs),
    /// Check what MediaConvert needs of a job role and the KMS key the
    /// broker wraps with; prints pass / fail / unknown per requirement with
    /// the fix (exit 1 when one fails).
    CheckRole(crate::client::role::CheckRoleArgs),
    /// Grant a job role Decrypt with the KMS key under the MediaConvert
    /// context (KMS CreateGrant): prints the plan, and with --apply makes
    /// it and checks again.
    ConnectRole(crate::client::role::ConnectRoleArgs),
}

/// `keybroker migrate …`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Turn an Elastic Transcoder input `Encryption` block into MediaConvert
    /// `DecryptionSettings`: the mode mapped, the IV carried, the key
    /// re-encrypted by KMS from the ET to the MediaConvert context (never
    /// unwrapped), recorded and audited by the broker.
    EtInput(EtInputArgs),
}

/// `keybroker mediaconvert submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The CreateJob JSON file (member names: `Role`, `Settings`, ...).
    #[arg(long, value_name = "FILE")]
    pub job: PathBuf,
    /// A recorded key for an input the ledger cannot find by its S3 object:
    /// `INDEX=FINGERPRINT`; repeat for several.
    #[arg(long, value_name = "INDEX=FINGERPRINT")]
    pub input_key: Vec<String>,
    /// Move input keys wrapped under the Elastic Transcoder context (your
    /// policy rule must name RewrapKeys).
    #[arg(long)]
    pub rewrap_et_inputs: bool,
    /// Give every output group SSE-KMS under the server's (or `--kms-key-id`) key.
    #[arg(long)]
    pub encrypt_outputs: bool,
    /// Bind each SSE-KMS encryption context to the job (request token, caller).
    #[arg(long)]
    pub bind_job_context: bool,
    /// Give static-key groups a fresh ConstantInitializationVector.
    #[arg(long)]
    pub constant_iv: bool,
    /// The KMS key ARN for SSE-KMS and static keys (default: the server's).
    #[arg(long, value_name = "ARN", default_value = "")]
    pub kms_key_id: String,
    /// Assemble and validate only; submit nothing.
    #[arg(long)]
    pub validate_only: bool,
    /// An idempotency token: a repeat answers the first job.
    #[arg(long, value_name = "TOKEN", default_value = "")]
    pub request_token: String,
}

/// `keybroker migrate et-input`.
#[derive(Debug, Args)]
pub struct EtInputArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// ET's input `Encryption` JSON (as `issue-key` and `encrypt` print it,
    /// or an object holding it under `Encryption`).
    #[arg(long, value_name = "FILE")]
    pub encryption: PathBuf,
    /// The KMS key that wrapped it, and wraps it again (ReEncrypt keeps the
    /// plaintext inside KMS).
    #[arg(long, value_name = "ID")]
    pub kms_key_id: String,
}

/// Runs a `mediaconvert` subcommand.
///
/// # Errors
/// [`CliError`] with a message for the user.
pub async fn mediaconvert_command(command: MediaConvertCommand) -> Result<(), CliError> {
    match command {
        MediaConvertCommand::Submit(args) => submit(args).await,
        MediaConvertCommand::CheckRole(args) => crate::client::role::check_role(args).await,
        MediaConvertCommand::ConnectRole(args) => crate::client::role::connect_role(args).await,
    }
}

/// Runs a `migrate` subcommand.
///
/// # Errors
/// [`CliError`] with a message for the user.
pub async fn migrate_command(command: MigrateCommand) -> Result<(), CliError> {
    match command {
        MigrateCommand::EtInput(args) => et_input(args).await,
    }
}

fn input_keys(pairs: &[String]) -> Result<Vec<pb::MediaConvertInputKey>, CliError> {
    pairs
        .iter()
        .map(|pair| {
            let (index, fingerprint) = pair
                .split_once('=')
                .and_then(|(i, f)| Some((i.parse::<u32>().ok()?, f)))
                .ok_or_else(|| CliError::Usage(format!("--input-key: {pair:?} is not INDEX=FINGERPRINT")))?;
            Ok(pb::MediaConvertInputKey { input_index: index, key_fingerprint: fingerprint.to_owned() })
        })
        .collect()
}

async fn submit(args: SubmitArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.job).map_err(|source| CliError::Io { path: args.job.clone(), source })?;
    let request = pb::SubmitMediaConvertJobRequest {
        create_job_json: text,
        input_keys: input_keys(&args.input_key)?,
        rewrap_et_inputs: args.rewrap_et_inputs,
        encrypt_outputs: args.encrypt_outputs,
        bind_job_context: args.bind_job_context,
        constant_initialization_vector: args.constant_iv,
        kms_key_id: args.kms_key_id,
        validate_only: args.validate_only,
        request_token: args.request_token,
    };
    let mut client = connect(&args.client).await?;
    let answer = client.submit_media_convert_job(request).await?.into_inner();
    let to_json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let keys: Vec<Value> = answer
        .keys
        .iter()
        .map(|k| {
            json!({"Place": k.place, "KeyFingerprint": k.key_fingerprint, "KmsKeyArn": k.kms_key_arn,
                   "RewrappedFrom": (!k.rewrapped_from.is_empty()).then_some(&k.rewrapped_from)})
        })
        .collect();
    let printed = json!({
        "JobId": (!answer.job_id.is_empty()).then_some(&answer.job_id),
        "Keys": keys,
        "StaticKeysRedacted": answer.static_keys_redacted,
        "CreateJob": to_json(&answer.create_job_json),
        "Job": (!answer.job_json.is_empty()).then(|| to_json(&answer.job_json)),
    });
    println!("{}", serde_json::to_string_pretty(&printed).map_err(CliError::Json)?);
    Ok(())
}

async fn et_input(args: EtInputArgs) -> Result<(), CliError> {
    let block = read_encryption(&args.encryption)?;
    let Some(mode) = mediaconvert_mode(&block.mode) else {
        return Err(CliError::Input(format!(
            "{}: Mode {:?}: MediaConvert decrypts aes-cbc-pkcs7, aes-ctr and aes-gcm files only",
            args.encryption.display(),
            block.mode
        )));
    };
    let iv = block.initialization_vector.clone();
    let request = pb::RewrapKeysRequest {
        recorded: None,
        blocks: vec![block],
        source_context: pb::ServiceContext::ElasticTranscoder as i32,
        source_kms_key_id: args.kms_key_id.clone(),
        destination_kms_key_id: args.kms_key_id,
        destination_context: pb::ServiceContext::Mediaconvert as i32,
    };
    let mut client = connect(&args.client).await?;
    let answer = client.rewrap_keys(request).await?.into_inner();
    let recorded = answer
        .keys
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Input("the broker answered no rewrapped key".to_owned()))?;
    let moved =
        recorded.encryption.ok_or_else(|| CliError::Input("the broker answered no rewrapped key".to_owned()))?;
    let mut settings = json!({
        "DecryptionMode": mode,
        "EncryptedDecryptionKey": moved.key,
        "InitializationVector": iv,
    });
    if let Some(region) = crate::jobs::mediaconvert::inputs::kms_key_region(&recorded.kms_key_arn) {
        settings["KmsKeyRegion"] = json!(region);
    }
    println!("{}", serde_json::to_string_pretty(&settings).map_err(CliError::Json)?);
    Ok(())
}
