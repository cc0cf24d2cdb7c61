//! `pipeline check` and `pipeline connect`: the broker's pipeline preflight
//! (`CheckPipeline`, `ConnectPipeline`) printed for a person, or as JSON.
//!
//! Owns the printed form. Must never judge a pipeline itself (the broker,
//! which holds the AWS credentials, does), and never change anything: a
//! connect without `--apply` asks the broker for the plan only.

use crate::client::args::PipelineCommand;
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::edge::pb;

/// `keybroker pipeline …`.
///
/// # Errors
/// [`CliError`]: the call failed, or the check found a requirement not met.
pub async fn pipeline_command(command: PipelineCommand) -> Result<(), CliError> {
    match command {
        PipelineCommand::Check { client, pipeline_id, json } => {
            let mut client = connect(&client).await?;
            let check = client.check_pipeline(pb::CheckPipelineRequest { pipeline_id }).await?.into_inner();
            if json {
                print_json(&check_json(&check))?;
            } else {
                print!("{}", check_text(&check));
            }
            verdict(&check)
        }
        PipelineCommand::Connect { client, pipeline_id, kms_key, apply, json } => {
            let mut client = connect(&client).await?;
            let request = pb::ConnectPipelineRequest { pipeline_id, kms_key_arn: kms_key, apply };
            let answer = client.connect_pipeline(request).await?.into_inner();
            let check = answer.check.clone().unwrap_or_default();
            if json {
                print_json(&connect_json(answer.applied, &answer.changes, check_json(&check)))?;
            } else {
                print!("{}", connect_text(&answer));
            }
            if answer.applied { verdict(&check) } else { Ok(()) }
        }
    }
}

pub(crate) fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value).map_err(CliError::Json)?);
    Ok(())
}

/// Exit 1 when a requirement failed; unknowns are printed, not fatal.
fn verdict(check: &pb::CheckPipelineResponse) -> Result<(), CliError> {
    let failed = failures(&check.requirements);
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::PipelineNotReady { pipeline_id: check.pipeline_id.clone(), failed })
    }
}

pub(crate) fn outcome_word(outcome: i32) -> &'static str {
    match pb::CheckOutcome::try_from(outcome) {
        Ok(pb::CheckOutcome::Pass) => "pass",
        Ok(pb::CheckOutcome::Fail) => "fail",
        Ok(pb::CheckOutcome::Unknown) => "unknown",
        _ => "?",
    }
}

/// The check as a person reads it: one line per requirement, its fix
/// below it.
pub fn check_text(check: &pb::CheckPipelineResponse) -> String {
    let none = |s: &str| if s.is_empty() { "(none)".to_owned() } else { s.to_owned() };
    let mut out = format!(
        "pipeline {} (from {})\n  kms key: {}\n  role:    {}\n  region:  {}\n",
        check.pipeline_id,
        check.source,
        none(&check.kms_key_arn),
        none(&check.role),
        none(&check.region)
    );
    out.push_str(&requirements_text(&check.requirements, check.ready));
    out
}

/// Requirements as a person reads them: one line each, its fix below it,
/// then the verdict.
pub(crate) fn requirements_text(requirements: &[pb::PipelineRequirement], ready: bool) -> String {
    // One column wider than the longest name.
    let width = requirements.iter().map(|r| r.name.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for r in requirements {
        out.push_str(&format!("{:<8} {:<width$} {}\n", outcome_word(r.outcome), r.name, r.detail));
        if !r.fix.is_empty() {
            out.push_str(&format!("{:<indent$} fix: {}\n", "", r.fix, indent = width + 9));
        }
    }
    let count = |o: pb::CheckOutcome| requirements.iter().filter(|r| r.outcome == o as i32).count();
    out.push_str(&format!(
        "{}: {} passed, {} failed, {} unknown\n",
        if ready { "ready" } else { "not ready" },
        count(pb::CheckOutcome::Pass),
        count(pb::CheckOutcome::Fail),
        count(pb::CheckOutcome::Unknown)
    ));
    out
}

/// How many requirements failed.
pub(crate) fn failures(requirements: &[pb::PipelineRequirement]) -> usize {
    requirements.iter().filter(|r| r.outcome == pb::CheckOutcome::Fail as i32).count()
}

fn connect_text(answer: &pb::ConnectPipelineResponse) -> String {
    changes_text(answer.applied, &answer.changes) + &check_text(&answer.check.clone().unwrap_or_default())
}

/// A connect's changes, numbered: the plan, or what was done.
pub(crate) fn changes_text(applied: bool, changes: &[pb::PipelineChange]) -> String {
    let mut out = String::from(if applied {
        "changes made:\n"
    } else {
        "plan (nothing changed; run with --apply to make it):\n"
    });
    for (index, change) in changes.iter().enumerate() {
        out.push_str(&format!(
            "{}. {} [{}]: {}\n   {}\n",
            index + 1,
            change.action,
            change.state,
            change.detail,
            change.request_json
        ));
    }
    out.push('\n');
    out
}

fn check_json(check: &pb::CheckPipelineResponse) -> serde_json::Value {
    let requirements = requirements_json(&check.requirements);
    serde_json::json!({
        "PipelineId": check.pipeline_id,
        "Source": check.source,
        "AwsKmsKeyArn": check.kms_key_arn,
        "Role": check.role,
        "Region": check.region,
        "Ready": check.ready,
        "Requirements": requirements,
    })
}

/// Requirements as JSON.
pub(crate) fn requirements_json(requirements: &[pb::PipelineRequirement]) -> Vec<serde_json::Value> {
    requirements
        .iter()
        .map(|r| serde_json::json!({ "Name": r.name, "Outcome": outcome_word(r.outcome), "Detail": r.detail, "Fix": r.fix }))
        .collect()
}

/// A connect's answer as JSON, its check already in JSON.
pub(crate) fn connect_json(
    applied: bool,
    changes: &[pb::PipelineChange],
    check: serde_json::Value,
) -> serde_json::Value {
    let changes: Vec<serde_json::Value> = changes.iter().map(change_json).collect();
    serde_json::json!({ "Applied": applied, "Changes": changes, "Check": check })
}

fn change_json(change: &pb::PipelineChange) -> serde_json::Value {
    let request = serde_json::from_str::<serde_json::Value>(&change.request_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "Action": change.action, "State": change.state, "Detail": change.detail, "Request": request })
}
