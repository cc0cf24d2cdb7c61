//! `keys lookup` and `keys rewrap`: the key ledger's records of a job, an S3
//! object, a key or a request token, and keys moved to another KMS key or
//! service context. Their flags live here, beside the commands.
//!
//! Prints what the broker answers as JSON, wrapped keys only (the ledger
//! never holds anything else). Must never print or ask for plaintext.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::args::{ClientArgs, ContextArg};
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::client::keys::read_encryption;
use crate::edge::pb;
use crate::objects::S3Location;

/// `keybroker keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print what the key ledger recorded for a job, an S3 object, a key
    /// fingerprint or one of your request tokens: each key's ET
    /// `Encryption` block (wrapped) and where it is used.
    Lookup(LookupArgs),
    /// Have KMS re-encrypt recorded keys (or `--encryption` blocks) to
    /// another KMS key and/or service context (ReEncrypt: the plaintext
    /// never enters the broker); prints the new blocks as recorded.
    Rewrap(RewrapArgs),
}

/// Which recorded keys: exactly one of the four.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct SelectArgs {
    /// An Elastic Transcoder job id.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// An S3 object the broker wrote.
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub object: Option<String>,
    /// A key fingerprint (`hmac-sha256:…`), as answered and audited.
    #[arg(long, value_name = "FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// One of your own request tokens.
    #[arg(long, value_name = "TOKEN")]
    pub request_token: Option<String>,
}

impl SelectArgs {
    /// The selector, if one was given.
    fn request(&self) -> Result<Option<pb::LookupKeysRequest>, CliError> {
        let object = match &self.object {
            None => None,
            Some(url) => {
                let location = S3Location::from_url(url)
                    .ok_or_else(|| CliError::Usage(format!("--object: {url:?} is not an s3://BUCKET/KEY URL")))?
                    .map_err(|e| CliError::Usage(format!("--object: {e}")))?;
                Some(pb::S3Location { bucket: location.bucket().to_owned(), key: location.key().to_owned() })
            }
        };
        let request = pb::LookupKeysRequest {
            job_id: self.job_id.clone().unwrap_or_default(),
            object,
            key_fingerprint: self.fingerprint.clone().unwrap_or_default(),
            request_token: self.request_token.clone().unwrap_or_default(),
        };
        Ok(Some(request).filter(|r| *r != pb::LookupKeysRequest::default()))
    }
}

/// `keybroker keys lookup`.
#[derive(Debug, Args)]
pub struct LookupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `keybroker keys rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Instead of recorded keys: ET `Encryption` JSON files (as `issue-key`
    /// prints them) whose keys to move; repeat for several.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["job_id", "object", "fingerprint", "request_token"])]
    pub encryption: Vec<PathBuf>,
    /// The context the `--encryption` blocks are wrapped under.
    #[arg(long, value_enum, default_value = "elastic-transcoder")]
    pub from_context: ContextArg,
    /// The KMS key that wrapped the `--encryption` blocks (checked by KMS).
    #[arg(long, value_name = "ID", default_value = "")]
    pub from_kms_key_id: String,
    /// The service context to move the keys to.
    #[arg(long, value_enum)]
    pub to_context: ContextArg,
    /// The KMS key to move the keys to (default: each key's own).
    #[arg(long, value_name = "ID", default_value = "")]
    pub to_kms_key_id: String,
}

/// Runs a `keys` subcommand.
///
/// # Errors
/// [`CliError`] with a message for the user.
pub async fn keys_command(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Lookup(args) => lookup(args).await,
        KeysCommand::Rewrap(args) => rewrap(args).await,
    }
}

const SELECT_ONE: &str = "name the keys: --job-id, --object, --fingerprint or --request-token";

async fn lookup(args: LookupArgs) -> Result<(), CliError> {
    let request = args.select.request()?.ok_or_else(|| CliError::Usage(SELECT_ONE.to_owned()))?;
    let mut client = connect(&args.client).await?;
    let answer = client.lookup_keys(request).await?.into_inner();
    if answer.truncated {
        eprintln!("more keys are recorded than the 1000 shown");
    }
    print_keys(answer.keys)
}

async fn rewrap(args: RewrapArgs) -> Result<(), CliError> {
    let recorded = args.select.request()?;
    let blocks = args.encryption.iter().map(|path| read_encryption(path)).collect::<Result<Vec<_>, _>>()?;
    if recorded.is_none() && blocks.is_empty() {
        return Err(CliError::Usage(format!("{SELECT_ONE}, or give --encryption FILE")));
    }
    let request = pb::RewrapKeysRequest {
        recorded,
        blocks,
        source_context: args.from_context.to_proto(),
        source_kms_key_id: args.from_kms_key_id,
        destination_kms_key_id: args.to_kms_key_id,
        destination_context: args.to_context.to_proto(),
    };
    let mut client = connect(&args.client).await?;
    let answer = client.rewrap_keys(request).await?.into_inner();
    print_keys(answer.keys)
}

/// The service a context enum value names (as the API reads it: 0 and
/// unknown values are Elastic Transcoder).
fn context_name(value: i32) -> &'static str {
    crate::edge::rpc::parse_context(value, "context").unwrap_or_default().entry().1
}

/// One recorded key as the CLI prints it: ET's `Encryption` block and the
/// record's facts, empty ones left out.
fn key_json(key: pb::RecordedKey) -> Value {
    let block = key.encryption.unwrap_or_default();
    let mut out = json!({
        "Encryption": {
            "Mode": block.mode,
            "Key": block.key,
            "KeyMd5": block.key_md5,
            "InitializationVector": block.initialization_vector,
        },
        "KmsKeyArn": key.kms_key_arn,
        "Context": context_name(key.context),
        "KeyFingerprint": key.key_fingerprint,
        "RecordedBy": {"Identity": key.identity, "Rpc": key.rpc, "RequestId": key.request_id},
        "RecordedAtMs": key.recorded_at_ms,
    });
    let mut put = |name: &str, value: Value| {
        out[name] = value;
    };
    if key.key_bits != 0 {
        put("KeyBits", json!(key.key_bits));
    }
    if !key.job_place.is_empty() {
        put("Job", json!({"Id": key.job_id, "Place": key.job_place}));
    }
    if let Some(object) = key.object {
        put(
            "Object",
            json!({
                "Url": format!("s3://{}/{}", object.bucket, object.key),
                "VersionId": key.object_version_id,
                "ETag": key.object_etag,
            }),
        );
    }
    if !key.rewrapped_from.is_empty() {
        put("RewrappedFrom", json!(key.rewrapped_from));
    }
    out
}

fn print_keys(keys: Vec<pb::RecordedKey>) -> Result<(), CliError> {
    let keys: Vec<Value> = keys.into_iter().map(key_json).collect();
    println!("{}", serde_json::to_string_pretty(&keys).map_err(CliError::Json)?);
    Ok(())
}
