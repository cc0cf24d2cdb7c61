//! The MediaConvert job role check through real gRPC calls:
//! `CheckMediaConvertRole` judges a role created in moto's IAM against
//! moto's KMS (key policy, grants, DescribeKey), S3 (bucket regions) and
//! STS; `ConnectMediaConvertRole` plans, and with `apply` makes, the KMS
//! grant, checked by reading KMS back directly.

use aws_sdk_kms::types::{GrantConstraints, GrantOperation};
use keybroker::app::config::Config;
use keybroker::app::server::Peers;
use keybroker::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::moto::Moto;
use crate::support::preflight::{BROKER_USER, allow, bucket, key, kms_in, s3};

const MEDIACONVERT: &str = "mediaconvert.amazonaws.com";
const ELASTIC_TRANSCODER: &str = "elastictranscoder.amazonaws.com";

/// Creates an IAM role MediaConvert may assume, in moto's IAM; answers its
/// ARN as IAM reports it.
fn iam_role(moto: &Moto, stem: &str) -> String {
    let name = format!("{stem}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let script = r#"
import json, sys, boto3
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"Service": "mediaconvert.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
role = boto3.client("iam", region_name="us-east-1").create_role(RoleName=sys.argv[1], AssumeRolePolicyDocument=json.dumps(trust))
print(role["Role"]["Arn"])
"#;
    let out = std::process::Command::new(crate::support::tools::python())
        .args(["-c", script, &name])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "IAM CreateRole: {}", String::from_utf8_lossy(&out.stderr));
    let arn = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(arn, format!("arn:aws:iam::123456789012:role/{name}"));
    arn
}

/// The broker may wrap and unwrap with the key.
fn broker_statement() -> Value {
    allow(BROKER_USER, &["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"])
}

/// What the MediaConvert guide asks of the role for SSE-KMS outputs.
fn outputs_statement(role: &str) -> Value {
    allow(role, &["kms:GenerateDataKey", "kms:Encrypt"])
}

/// A key whose policy lets `role` decrypt and encrypt outputs, and the
/// broker use it.
async fn good_key(moto: &Moto, role: &str) -> String {
    let statements = vec![allow(role, &["kms:Decrypt"]), outputs_statement(role), broker_statement()];
    key(moto, "us-east-1", Some(statements)).await
}

/// A grant of Decrypt to `role` on `arn`, constrained to `service`'s context.
async fn grant(moto: &Moto, arn: &str, role: &str, service: &str) {
    let constraints = GrantConstraints::builder().encryption_context_subset("service", service).build();
    kms_in(moto, "us-east-1")
        .create_grant()
        .key_id(arn)
        .grantee_principal(role)
        .operations(GrantOperation::Decrypt)
        .constraints(constraints)
        .send()
        .await
        .unwrap();
}

async fn grants(moto: &Moto, arn: &str) -> Vec<aws_sdk_kms::types::GrantListEntry> {
    kms_in(moto, "us-east-1").list_grants().key_id(arn).send().await.unwrap().grants().to_vec()
}

/// A broker on moto's KMS with the check's KMS, S3 and STS clients (its
/// region, MediaConvert's, is the SDK's: us-east-1), its configuration
/// changed by `adjust` first.
async fn broker_with(moto: &Moto, adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let default_key = moto.create_key().await;
    let mut config = aws_config(&default_key);
    adjust(&mut config);
    let kms = aws_kms(moto, &config).await;
    let sdk = moto.sdk_config();
    let peers = Peers { kms: Some(kms), et: None, s3: Some(s3(moto)), aws: Some(sdk), mediaconvert: None };
    TestBroker::start_with(config, peers).await
}

/// The outcome, detail and fix of requirement `name`.
fn requirement<'a>(check: &'a pb::CheckMediaConvertRoleResponse, name: &str) -> (&'static str, &'a str, &'a str) {
    crate::support::preflight::requirement(&check.requirements, name)
}

fn request(role: &str, arn: &str) -> pb::CheckMediaConvertRoleRequest {
    pb::CheckMediaConvertRoleRequest { role_arn: role.into(), kms_key_arn: arn.into(), ..Default::default() }
}

async fn check(broker: &TestBroker, request: pb::CheckMediaConvertRoleRequest) -> pb::CheckMediaConvertRoleResponse {
    broker.client().await.check_media_convert_role(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_key_policy_names_passes_every_requirement() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-ready");
    let arn = good_key(moto, &role).await;
    let (input, output) = (bucket(moto, "us-east-1").await, bucket(moto, "us-east-1").await);
    let broker = broker_with(moto, |_| {}).await;

    let answer = check(
        &broker,
        pb::CheckMediaConvertRoleRequest {
            input_bucket: input.clone(),
            output_bucket: output.clone(),
            ..request(&role, &arn)
        },
    )
    .await;
    let names: Vec<&str> = answer.requirements.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "customer-managed-key",
            "one-region",
            "key-usable",
            "role-may-decrypt",
            "role-may-encrypt-outputs",
            "broker-may-encrypt",
            "probe"
        ]
    );
    for r in &answer.requirements {
        assert_eq!(requirement(&answer, &r.name).0, "pass", "{}: {} (fix: {})", r.name, r.detail, r.fix);
        assert!(r.fix.is_empty(), "a pass has no fix: {}", r.fix);
    }
    assert!(answer.ready);
    assert_eq!(
        (answer.source.as_str(), answer.role_arn.as_str(), answer.kms_key_arn.as_str(), answer.region.as_str()),
        ("request", role.as_str(), arn.as_str(), "us-east-1")
    );
    let (_, regions, _) = requirement(&answer, "one-region");
    assert!(regions.contains(&format!("the output bucket {output}: us-east-1")), "{regions}");
    assert!(regions.contains("MediaConvert: us-east-1"), "{regions}");
    let (_, probe, _) = requirement(&answer, "probe");
    assert!(probe.contains("under the MediaConvert context"), "{probe}");
    // Checking changed nothing.
    assert!(grants(moto, &arn).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_is_found_by_its_requirement() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-misfit");
    let broker = broker_with(moto, |_| {}).await;

    // The key policy knows the broker and the outputs, not the role's Decrypt.
    let stranger = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    let c = check(&broker, request(&role, &stranger)).await;
    let (outcome, detail, fix) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "fail", "{detail}");
    assert!(detail.contains(&role), "{detail}");
    assert!(
        fix.starts_with(&format!("keybroker mediaconvert connect-role --role {role} --kms-key ARN --apply")),
        "{fix}"
    );
    assert_eq!(requirement(&c, "role-may-encrypt-outputs").0, "pass");
    assert!(!c.ready);

    // A grant under the MediaConvert context lets it decrypt...
    let granted = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    grant(moto, &granted, &role, MEDIACONVERT).await;
    let c = check(&broker, request(&role, &granted)).await;
    let (outcome, detail, _) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "pass", "{detail}");
    assert!(detail.starts_with("grant ") && detail.ends_with("under the MediaConvert context"), "{detail}");
    assert!(c.ready, "{c:?}");

    // ...one under the Elastic Transcoder context does not.
    let et_only = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    grant(moto, &et_only, &role, ELASTIC_TRANSCODER).await;
    let c = check(&broker, request(&role, &et_only)).await;
    let (outcome, detail, _) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "fail", "an ET grant must not pass for MediaConvert: {detail}");

    // A disabled key.
    let disabled = good_key(moto, &role).await;
    kms_in(moto, "us-east-1").disable_key().key_id(disabled.rsplit('/').next().unwrap()).send().await.unwrap();
    let c = check(&broker, request(&role, &disabled)).await;
    let (outcome, detail, fix) = requirement(&c, "key-usable");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("its state is Disabled"), "{detail}");
    assert!(fix.contains("enable-key"), "{fix}");

    // A key of another region than MediaConvert's.
    let far = key(moto, "eu-west-1", Some(vec![allow(&role, &["kms:*"]), broker_statement()])).await;
    let c = check(&broker, request(&role, &far)).await;
    let (outcome, detail, _) = requirement(&c, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("MediaConvert: us-east-1") && detail.contains("the KMS key: eu-west-1"), "{detail}");
    assert_eq!(requirement(&c, "key-usable").0, "pass", "described in its own region");

    // An output bucket of another region.
    let good = good_key(moto, &role).await;
    let far_bucket = bucket(moto, "eu-west-1").await;
    let c =
        check(&broker, pb::CheckMediaConvertRoleRequest { output_bucket: far_bucket.clone(), ..request(&role, &good) })
            .await;
    let (outcome, detail, _) = requirement(&c, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains(&format!("the output bucket {far_bucket}: eu-west-1")), "{detail}");

    // The account root with IAM delegation: unknown, never a pass.
    let delegated = key(moto, "us-east-1", Some(vec![allow("arn:aws:iam::123456789012:root", &["kms:*"])])).await;
    let c = check(&broker, request(&role, &delegated)).await;
    let (outcome, detail, _) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "unknown");
    assert!(detail.contains("IAM policies"), "{detail}");
    assert!(!c.ready, "unknown is not ready");

    // Outputs: Decrypt alone is not enough; a statement bound to an
    // encryption context cannot be matched to S3's calls.
    let bound = json!({
        "Sid": "s3-only", "Effect": "Allow", "Principal": { "AWS": role }, "Action": ["kms:GenerateDataKey", "kms:Encrypt"],
        "Resource": "*",
        "Condition": { "StringEquals": { "kms:EncryptionContext:aws:s3:arn": format!("arn:aws:s3:::{far_bucket}") } }
    });
    let decrypt_only = key(moto, "us-east-1", Some(vec![allow(&role, &["kms:Decrypt"]), broker_statement()])).await;
    let c = check(&broker, request(&role, &decrypt_only)).await;
    let (outcome, detail, fix) = requirement(&c, "role-may-encrypt-outputs");
    assert_eq!(outcome, "fail", "{detail}");
    assert!(detail.contains("kms:GenerateDataKey"), "{detail}");
    assert!(fix.contains("kms:GenerateDataKey and kms:Encrypt"), "{fix}");
    assert_eq!(requirement(&c, "role-may-decrypt").0, "pass");
    let conditioned =
        key(moto, "us-east-1", Some(vec![allow(&role, &["kms:Decrypt"]), bound, broker_statement()])).await;
    let c = check(&broker, request(&role, &conditioned)).await;
    let (outcome, detail, _) = requirement(&c, "role-may-encrypt-outputs");
    assert_eq!(outcome, "unknown", "{detail}");
    assert!(detail.contains("\"s3-only\""), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_fields_are_refused_by_name() {
    let moto = Moto::shared();
    let broker = broker_with(moto, |_| {}).await;
    let mut client = broker.client().await;
    let arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";

    let err = client.check_media_convert_role(pb::CheckMediaConvertRoleRequest::default()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "role_arn: required: no mediaconvert.role_arn is configured")
    );
    let err = client.check_media_convert_role(request("MediaConvert_Default_Role", arn)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("role_arn: must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got "),
        "{}",
        err.message()
    );
    let role = "arn:aws:iam::123456789012:role/mc";
    let err = client.check_media_convert_role(request(role, "alias/media")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("kms_key_arn: must be a KMS key ARN"), "{}", err.message());
    let bad_bucket = pb::CheckMediaConvertRoleRequest { input_bucket: "No_Such Bucket".into(), ..request(role, arn) };
    let err = client.check_media_convert_role(bad_bucket).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("input_bucket: must be an S3 bucket name"), "{}", err.message());

    // A key KMS does not know: the check answers, and connect refuses.
    let c = check(&broker, request(role, arn)).await;
    let (outcome, detail, _) = requirement(&c, "key-usable");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("does not exist"), "{detail}");
    let connect = pb::ConnectMediaConvertRoleRequest { role_arn: role.into(), kms_key_arn: arn.into(), apply: true };
    let err = client.connect_media_convert_role(connect).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_role_plans_without_apply_and_with_it_grants_decrypt_under_the_mediaconvert_context() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-connect");
    // The broker and the outputs are set; the role may not yet decrypt.
    let arn = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    let broker = broker_with(moto, |_| {}).await;
    let mut client = broker.client().await;
    let connect =
        |apply| pb::ConnectMediaConvertRoleRequest { role_arn: role.clone(), kms_key_arn: arn.clone(), apply };

    let plan = client.connect_media_convert_role(connect(false)).await.unwrap().into_inner();
    assert!(!plan.applied);
    let states: Vec<(&str, &str)> = plan.changes.iter().map(|c| (c.action.as_str(), c.state.as_str())).collect();
    assert_eq!(states, [("CreateGrant", "planned")]);
    let planned: Value = serde_json::from_str(&plan.changes[0].request_json).unwrap();
    assert_eq!(planned["Constraints"], json!({ "EncryptionContextSubset": { "service": MEDIACONVERT } }));
    assert_eq!(planned["GranteePrincipal"], role.as_str());
    assert_eq!(planned["Operations"], json!(["Decrypt"]));
    let before = plan.check.unwrap();
    assert_eq!(requirement(&before, "role-may-decrypt").0, "fail");
    // Without apply, nothing changed.
    assert!(grants(moto, &arn).await.is_empty());

    let done = client.connect_media_convert_role(connect(true)).await.unwrap().into_inner();
    assert!(done.applied);
    assert_eq!(done.changes[0].state, "done");
    let made = grants(moto, &arn).await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].grantee_principal(), Some(role.as_str()));
    assert_eq!(made[0].operations(), [GrantOperation::Decrypt]);
    let subset = made[0].constraints().unwrap().encryption_context_subset().unwrap();
    assert_eq!(subset.len(), 1);
    assert_eq!(subset.get("service").map(String::as_str), Some(MEDIACONVERT));
    // And the check that followed passes, through the grant.
    let after = done.check.unwrap();
    for r in &after.requirements {
        assert_eq!(requirement(&after, &r.name).0, "pass", "{}: {}", r.name, r.detail);
    }
    assert!(after.ready);
    assert!(requirement(&after, "role-may-decrypt").1.starts_with("grant "), "{:?}", after);
    assert!(check(&broker, request(&role, &arn)).await.ready);

    // Again: nothing left to do, nothing done twice.
    let again = client.connect_media_convert_role(connect(true)).await.unwrap().into_inner();
    assert_eq!(again.changes[0].state, "already done");
    assert_eq!(grants(moto, &arn).await.len(), 1);
}

/// A broker whose policy file is `rules`, auditing to `audit`.
async fn broker_under(moto: &Moto, dir: &std::path::Path, rules: &str) -> TestBroker {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, rules).unwrap();
    let audit = dir.join("audit.jsonl");
    broker_with(moto, |config| {
        config.policy.allow_all = false;
        config.policy.file = Some(policy);
        config.audit.file = Some(audit);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_role_is_granted_only_by_name_held_to_the_rules_keys_and_audited() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-policy");
    let (arn, other) = (good_key(moto, &role).await, good_key(moto, &role).await);
    let connect = |arn: &str| pb::ConnectMediaConvertRoleRequest {
        role_arn: role.clone(),
        kms_key_arn: arn.to_owned(),
        apply: true,
    };

    // "*" grants the check, but not the connection, which changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_under(moto, dir.path(), "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"*\"]\n").await;
    assert!(check(&broker, request(&role, &arn)).await.ready);
    let err = broker.client().await.connect_media_convert_role(connect(&arn)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("name \"ConnectMediaConvertRole\""), "{}", err.message());
    assert!(grants(moto, &arn).await.is_empty(), "a refused connect made a grant");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let calls: Vec<(&str, &str)> =
        records.iter().filter_map(|r| Some((r["rpc"].as_str()?, r["code"].as_str()?))).collect();
    assert_eq!(calls, [("CheckMediaConvertRole", "Ok"), ("ConnectMediaConvertRole", "PermissionDenied")]);
    assert_eq!(records[0]["kms_key_arn"], arn.as_str());
    assert_eq!(records[0]["role_arn"], role.as_str(), "the role checked");

    // A rule that names it connects with its own keys only.
    let dir = tempfile::tempdir().unwrap();
    let rule =
        format!("[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"ConnectMediaConvertRole\"]\nkms_keys = [\"{arn}\"]\n");
    let broker = broker_under(moto, dir.path(), &rule).await;
    let mut client = broker.client().await;
    let err = client.connect_media_convert_role(connect(&other)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(&format!("may not use KMS key {other}")), "{}", err.message());
    assert!(grants(moto, &other).await.is_empty());
    let done = client.connect_media_convert_role(connect(&arn)).await.unwrap().into_inner();
    assert!(done.applied && done.check.unwrap().ready);
    assert_eq!(grants(moto, &arn).await.len(), 1);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!((last["rpc"].as_str(), last["code"].as_str()), (Some("ConnectMediaConvertRole"), Some("Ok")));
    assert_eq!(last["kms_key_arn"], arn.as_str());
    assert_eq!(last["role_arn"], role.as_str(), "the role the key was granted to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_role_is_checked_at_start_as_warnings_and_is_the_default() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-config");
    // The role may not decrypt with the configured key.
    let arn = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    let output = bucket(moto, "us-east-1").await;
    let broker = broker_with(moto, |config| {
        config.mediaconvert.role_arn = Some(role.clone());
        config.mediaconvert.output_kms_key_arn = Some(arn.clone());
        config.mediaconvert.output_bucket = Some(output.clone());
    })
    .await;

    let warned = |logs: &str| {
        logs.lines().any(|l| {
            l.contains("WARN")
                && l.contains("MediaConvert role check")
                && l.contains(&role)
                && l.contains("role-may-decrypt")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !warned(&crate::support::logs::text()) {
        assert!(std::time::Instant::now() < deadline, "no start-up MediaConvert role warning for {role}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The server serves all the same; an empty request is the configuration's.
    let answer = check(&broker, pb::CheckMediaConvertRoleRequest::default()).await;
    assert_eq!(
        (answer.source.as_str(), answer.role_arn.as_str(), answer.kms_key_arn.as_str(), answer.output_bucket.as_str()),
        ("configuration", role.as_str(), arn.as_str(), output.as_str())
    );
    assert_eq!(requirement(&answer, "role-may-decrypt").0, "fail");
    assert_eq!(requirement(&answer, "probe").0, "pass");
}

/// `kms.default_key_id` is often an alias: the check and the grant are
/// about the key it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_key_named_by_alias_is_checked_and_connected_as_its_key() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-alias");
    let arn = key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])).await;
    let alias = format!("alias/mc-{}", uuid::Uuid::new_v4().simple());
    moto.create_alias(&alias, &arn).await;
    let broker = broker_with(moto, |config| {
        config.kms.default_key_id = Some(alias.clone());
        config.mediaconvert.role_arn = Some(role.clone());
    })
    .await;

    let before = check(&broker, pb::CheckMediaConvertRoleRequest::default()).await;
    assert_eq!(before.kms_key_arn, arn, "the alias is checked as the key it names");
    assert_eq!(requirement(&before, "customer-managed-key").0, "pass");
    assert_eq!(requirement(&before, "role-may-decrypt").0, "fail");
    let apply = pb::ConnectMediaConvertRoleRequest { apply: true, ..Default::default() };
    let done = broker.client().await.connect_media_convert_role(apply).await.unwrap().into_inner();
    assert_eq!(done.changes[0].state, "done");
    let made = grants(moto, &arn).await;
    assert_eq!(made.len(), 1, "the grant is on the key the alias names");
    assert_eq!(made[0].grantee_principal(), Some(role.as_str()));
    assert!(done.check.unwrap().ready);
}

/// A configuration naming a malformed role is refused at start, by key.
#[test]
fn a_malformed_configured_role_is_refused() {
    let mut config = aws_config("arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000");
    config.mediaconvert.role_arn = Some("MediaConvert_Default_Role".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("mediaconvert.role_arn"), "{err}");
}

/// The CLI as a user runs it, against `keybroker serve` on moto with the
/// role in its configuration file: the start-up warning, `mediaconvert
/// check-role`'s report and exit status, and `connect-role` without and
/// with `--apply`.
#[test]
fn the_cli_checks_and_connects_a_mediaconvert_role() {
    use crate::support::process::serve;
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let role = iam_role(moto, "mc-cli");
    let arn = runtime.block_on(key(moto, "us-east-1", Some(vec![outputs_statement(&role), broker_statement()])));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keybroker.toml");
    let mediaconvert = format!("[mediaconvert]\nrole_arn = \"{role}\"\n");
    std::fs::write(&config, crate::support::preflight::serve_config(&arn, &mediaconvert)).unwrap();
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()], &moto.env());

    let out = server.cli(&["mediaconvert", "check-role"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed requirement exits 1:\n{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "MediaConvert role {role} (from configuration)\n  kms key: {arn}\n  region:  us-east-1\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nfail     role-may-decrypt          neither the key policy nor a grant lets"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("fix: keybroker mediaconvert connect-role --role {role}")), "{stdout}");
    assert!(stdout.contains("\npass     probe "), "{stdout}");
    assert!(stdout.ends_with("not ready: 6 passed, 1 failed, 0 unknown\n"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("MediaConvert role {role}: 1 requirement(s) not met")), "{stderr}");
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("MediaConvert role check") && l.contains(&role) && l.contains("role-may-decrypt"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !warned(&server.log_text()) {
        assert!(std::time::Instant::now() < deadline, "no start-up warning: {}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let out = server.cli(&["mediaconvert", "connect-role"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("plan (nothing changed; run with --apply to make it):\n"), "{stdout}");
    assert!(stdout.contains("1. CreateGrant [planned]"), "{stdout}");
    assert!(runtime.block_on(grants(moto, &arn)).is_empty(), "a plan made a grant");

    let out = server.cli(&["mediaconvert", "connect-role", "--role", &role, "--kms-key", &arn, "--apply", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["Applied"], true);
    assert_eq!(answer["Changes"][0]["State"], "done");
    assert_eq!(answer["Check"]["Ready"], true, "{answer:#}");
    assert_eq!(runtime.block_on(grants(moto, &arn)).len(), 1);

    let out = server.cli(&["mediaconvert", "check-role", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> =
        answer["Requirements"].as_array().unwrap().iter().map(|r| r["Outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["pass"; 7]);

    let out = server.cli(&["mediaconvert", "check-role", "--role", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(r#"role_arn: must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got "nope""#),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_key_appears_in_no_answer_audit_record_or_log() {
    let moto = Moto::shared();
    let role = iam_role(moto, "mc-probe");
    let arn = good_key(moto, &role).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let default_key = moto.create_key().await;
    let mut config = aws_config(&default_key);
    config.audit.file = Some(audit.clone());
    let (kms, wrapped) = crate::support::kms::recording(aws_kms(moto, &config).await);
    let sdk = moto.sdk_config();
    let peers = Peers { kms: Some(kms), et: None, s3: Some(s3(moto)), aws: Some(sdk), mediaconvert: None };
    let broker = TestBroker::start_with(config, peers).await;

    let before = wrapped.lock().unwrap().len();
    let answer = check(&broker, request(&role, &arn)).await;
    assert_eq!(requirement(&answer, "probe").0, "pass");
    let connect = pb::ConnectMediaConvertRoleRequest { role_arn: role.clone(), kms_key_arn: arn.clone(), apply: false };
    let plan = broker.client().await.connect_media_convert_role(connect).await.unwrap().into_inner();
    let probes: Vec<Vec<u8>> = wrapped.lock().unwrap()[before..].to_vec();
    crate::support::preflight::assert_probes_nowhere(&probes, &format!("{answer:?}{plan:?}"), &audit);
}
