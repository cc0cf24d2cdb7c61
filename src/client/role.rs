//! `mediaconvert check-role` and `mediaconvert connect-role`: the broker's
//! MediaConvert job role check (`CheckMediaConvertRole`,
//! `ConnectMediaConvertRole`) printed for a person, or as JSON. Their flags
//! live here, beside the commands.
//!
//! Owns the printed form. Must never judge a role itself (the broker, which
//! holds the AWS credentials, does), and never change anything: a
//! connect-role without `--apply` asks the broker for the plan only.

use clap::Args;

use crate::client::args::ClientArgs;
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::client::pipeline::{changes_text, connect_json, failures, print_json, requirements_json, requirements_text};
use crate::edge::pb;

/// `keybroker mediaconvert check-role`.
#[derive(Debug, Args)]
pub struct CheckRoleArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job role's ARN (default: the server's mediaconvert.role_arn).
    #[arg(long, value_name = "ARN", default_value = "", hide_default_value = true)]
    pub role: String,
    /// The KMS key ARN (default: the server's mediaconvert.output_kms_key_arn,
    /// else kms.default_key_id).
    #[arg(long, value_name = "ARN", default_value = "", hide_default_value = true)]
    pub kms_key: String,
    /// A bucket jobs read from, checked for its region.
    #[arg(long, value_name = "BUCKET", default_value = "", hide_default_value = true)]
    pub input_bucket: String,
    /// A bucket jobs write to, checked for its region.
    #[arg(long, value_name = "BUCKET", default_value = "", hide_default_value = true)]
    pub output_bucket: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keybroker mediaconvert connect-role`.
#[derive(Debug, Args)]
pub struct ConnectRoleArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The job role's ARN (default: the server's mediaconvert.role_arn).
    #[arg(long, value_name = "ARN", default_value = "", hide_default_value = true)]
    pub role: String,
    /// The KMS key ARN (default: the server's, as for check-role).
    #[arg(long, value_name = "ARN", default_value = "", hide_default_value = true)]
    pub kms_key: String,
    /// Make the grant; without it nothing changes.
    #[arg(long)]
    pub apply: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keybroker mediaconvert check-role`.
///
/// # Errors
/// [`CliError`]: the call failed, or the check found a requirement not met.
pub async fn check_role(args: CheckRoleArgs) -> Result<(), CliError> {
    let mut client = connect(&args.client).await?;
    let request = pb::CheckMediaConvertRoleRequest {
        role_arn: args.role,
        kms_key_arn: args.kms_key,
        input_bucket: args.input_bucket,
        output_bucket: args.output_bucket,
    };
    let check = client.check_media_convert_role(request).await?.into_inner();
    if args.json {
        print_json(&check_json(&check))?;
    } else {
        print!("{}", check_text(&check));
    }
    verdict(&check)
}

/// `keybroker mediaconvert connect-role`.
///
/// # Errors
/// [`CliError`]: the call failed, or the check after `--apply` found a
/// requirement not met.
pub async fn connect_role(args: ConnectRoleArgs) -> Result<(), CliError> {
    let mut client = connect(&args.client).await?;
    let request =
        pb::ConnectMediaConvertRoleRequest { role_arn: args.role, kms_key_arn: args.kms_key, apply: args.apply };
    let answer = client.connect_media_convert_role(request).await?.into_inner();
    let check = answer.check.clone().unwrap_or_default();
    if args.json {
        print_json(&connect_json(answer.applied, &answer.changes, check_json(&check)))?;
    } else {
        print!("{}", connect_text(&answer));
    }
    if answer.applied { verdict(&check) } else { Ok(()) }
}

/// Exit 1 when a requirement failed; unknowns are printed, not fatal.
fn verdict(check: &pb::CheckMediaConvertRoleResponse) -> Result<(), CliError> {
    let failed = failures(&check.requirements);
    if failed == 0 { Ok(()) } else { Err(CliError::RoleNotReady { role_arn: check.role_arn.clone(), failed }) }
}

/// The check as a person reads it: one line per requirement, its fix
/// below it.
pub fn check_text(check: &pb::CheckMediaConvertRoleResponse) -> String {
    let none = |s: &str| if s.is_empty() { "(none)".to_owned() } else { s.to_owned() };
    let mut out = format!(
        "MediaConvert role {} (from {})\n  kms key: {}\n  region:  {}\n  buckets: {} (input), {} (output)\n",
        check.role_arn,
        check.source,
        none(&check.kms_key_arn),
        none(&check.region),
        none(&check.input_bucket),
        none(&check.output_bucket),
    );
    out.push_str(&requirements_text(&check.requirements, check.ready));
    out
}

fn connect_text(answer: &pb::ConnectMediaConvertRoleResponse) -> String {
    changes_text(answer.applied, &answer.changes) + &check_text(&answer.check.clone().unwrap_or_default())
}

fn check_json(check: &pb::CheckMediaConvertRoleResponse) -> serde_json::Value {
    let requirements = requirements_json(&check.requirements);
    serde_json::json!({
        "Role": check.role_arn,
        "Source": check.source,
        "KmsKeyArn": check.kms_key_arn,
        "Region": check.region,
        "InputBucket": check.input_bucket,
        "OutputBucket": check.output_bucket,
        "Ready": check.ready,
        "Requirements": requirements,
    })
}
