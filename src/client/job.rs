//! `submit-job`: reads ET's CreateJob JSON, has the broker key, validate
//! and (unless `--validate-only`) submit it, and prints the answer as JSON.
//!
//! Owns reading the job spec file and the printed summary. Must never judge
//! the job itself (the broker validates it), and never print a plaintext
//! key.

use std::path::Path;

use crate::client::args::SubmitJobArgs;
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::custody::keys::EncryptionText;
use crate::jobs::et::model::CreateJob;

/// Reads a job spec: ET's CreateJob JSON, with `key_bits` for every key
/// the broker is to make.
///
/// # Errors
/// [`CliError::Io`] for an unreadable file, [`CliError::Input`] naming the
/// file and the JSON problem.
pub fn read_job_spec(path: &Path, key_bits: u32) -> Result<CreateJob, CliError> {
    use crate::jobs::et::plan::{Block, visit_blocks};
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.to_owned(), source })?;
    let mut job: CreateJob =
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

/// `keybroker submit-job`.
pub(super) async fn submit_job(args: SubmitJobArgs) -> Result<(), CliError> {
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
    let text = serde_json::to_string_pretty(&printed).map_err(CliError::Json)?;
    println!("{text}");
    Ok(())
}
