//! ConnectPipeline through real gRPC calls: the plan without `apply`, the ET
//! `UpdatePipeline` and the KMS grant with it (read back from both services
//! directly), keys it cannot use refused before any change, and the policy
//! and audit over both preflight RPCs.

use keybroker::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::pipeline_preflight::*;
use crate::support::et::{DEFAULT_ROLE, EtEndpoint, KeyMd5Reading};
use crate::support::moto::Moto;
use crate::support::preflight::{BROKER_USER, allow, key, kms_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_plans_without_apply_and_with_it_updates_the_pipeline_and_grants_the_role() {
    let moto = Moto::shared();
    // The broker may use the key; the pipeline's role is not yet a user.
    let arn = key(moto, "us-east-1", Some(vec![allow(BROKER_USER, &["kms:Encrypt", "kms:Decrypt"])])).await;
    let id = "2000000000020-connct";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, None).await], KeyMd5Reading::Plaintext).await;
    let broker = broker(moto, &et).await;
    let mut client = broker.client().await;
    let kms = kms_in(moto, "us-east-1");
    let grants = async || kms.list_grants().key_id(&arn).send().await.unwrap().grants().to_vec();

    let request = |apply| pb::ConnectPipelineRequest { pipeline_id: id.into(), kms_key_arn: arn.clone(), apply };
    let plan = client.connect_pipeline(request(false)).await.unwrap().into_inner();
    assert!(!plan.applied);
    let states: Vec<(&str, &str)> = plan.changes.iter().map(|c| (c.action.as_str(), c.state.as_str())).collect();
    assert_eq!(states, [("UpdatePipeline", "planned"), ("CreateGrant", "planned")]);
    let grant_request: Value = serde_json::from_str(&plan.changes[1].request_json).unwrap();
    assert_eq!(
        grant_request["Constraints"],
        json!({ "EncryptionContextSubset": { "service": "elastictranscoder.amazonaws.com" } })
    );
    assert_eq!(grant_request["GranteePrincipal"], DEFAULT_ROLE);
    assert!(!plan.check.as_ref().unwrap().ready);
    // Without apply, nothing changed anywhere.
    assert!(et.pipeline_updates().is_empty());
    assert_eq!(et.pipeline(id).unwrap().kms_key_arn, None);
    assert!(grants().await.is_empty());

    let done = client.connect_pipeline(request(true)).await.unwrap().into_inner();
    assert!(done.applied);
    let states: Vec<(&str, &str)> = done.changes.iter().map(|c| (c.action.as_str(), c.state.as_str())).collect();
    assert_eq!(states, [("UpdatePipeline", "done"), ("CreateGrant", "done")]);
    // ET received exactly the model's UpdatePipeline body, and holds the key.
    let updates = et.pipeline_updates();
    assert_eq!(updates, [(id.to_owned(), json!({ "AwsKmsKeyArn": arn }))]);
    assert_eq!(et.pipeline(id).unwrap().kms_key_arn.as_deref(), Some(arn.as_str()));
    // KMS holds the grant: the role, Decrypt, under ET's context only.
    let made = grants().await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].grantee_principal(), Some(DEFAULT_ROLE));
    assert_eq!(made[0].operations(), [aws_sdk_kms::types::GrantOperation::Decrypt]);
    let subset = made[0].constraints().unwrap().encryption_context_subset().unwrap();
    assert_eq!(subset.get("service").map(String::as_str), Some("elastictranscoder.amazonaws.com"));
    // And the check that followed passes.
    let after = done.check.unwrap();
    for r in &after.requirements {
        assert_eq!(requirement(&after, &r.name).0, "pass", "{}: {}", r.name, r.detail);
    }
    assert!(after.ready && after.kms_key_arn == arn);
    assert!(
        requirement(&after, "role-may-decrypt").1.starts_with("grant "),
        "{:?}",
        requirement(&after, "role-may-decrypt")
    );
    assert!(check(&broker, id).await.ready);

    // Again: nothing left to do, nothing done twice.
    let again = client.connect_pipeline(request(true)).await.unwrap().into_inner();
    let states: Vec<&str> = again.changes.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(states, ["already done", "already done"]);
    assert_eq!(et.pipeline_updates().len(), 1);
    assert_eq!(grants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_key_it_cannot_use_before_changing_anything() {
    let moto = Moto::shared();
    let id = "2000000000021-refuse";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, None).await], KeyMd5Reading::Plaintext).await;
    let broker = broker(moto, &et).await;
    let mut client = broker.client().await;

    let disabled = key(moto, "us-east-1", None).await;
    disable(moto, &disabled).await;
    let far = key(moto, "eu-west-1", None).await;
    for (arn, words) in [(disabled.as_str(), "its state is Disabled"), (far.as_str(), "is in eu-west-1")] {
        let request = pb::ConnectPipelineRequest { pipeline_id: id.into(), kms_key_arn: arn.into(), apply: true };
        let err = client.connect_pipeline(request).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(err.message().contains(words), "{}", err.message());
        let region = arn.split(':').nth(3).unwrap();
        let grants = kms_in(moto, region).list_grants().key_id(arn).send().await.unwrap();
        assert!(grants.grants().is_empty(), "a refused connect made a grant");
    }
    assert!(et.pipeline_updates().is_empty());
    assert_eq!(et.pipeline(id).unwrap().kms_key_arn, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_governs_both_rpcs_and_every_call_is_audited() {
    let moto = Moto::shared();
    let arn = good_key(moto).await;
    let id = "2000000000022-policy";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, Some(&arn)).await], KeyMd5Reading::Plaintext).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"CheckPipeline\"]\npipelines = [\"2000000000022-*\"]\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let broker = broker_with(moto, &et, |config| {
        config.policy.allow_all = false;
        config.policy.file = Some(policy.clone());
        config.audit.file = Some(audit.clone());
    })
    .await;
    let mut client = broker.client().await;

    assert!(check(&broker, id).await.ready);
    let err = client
        .check_pipeline(pb::CheckPipelineRequest { pipeline_id: "2000000000023-policy".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let request = pb::ConnectPipelineRequest { pipeline_id: id.into(), kms_key_arn: arn.clone(), apply: false };
    let err = client.connect_pipeline(request).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("ConnectPipeline"), "{}", err.message());

    let records: Vec<Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let calls: Vec<(&str, &str)> =
        records.iter().filter_map(|r| Some((r["rpc"].as_str()?, r["code"].as_str()?))).collect();
    assert_eq!(
        calls,
        [("CheckPipeline", "Ok"), ("CheckPipeline", "PermissionDenied"), ("ConnectPipeline", "PermissionDenied")]
    );
    assert_eq!(records[0]["pipeline"], id);
    assert_eq!(records[0]["kms_key_arn"], arn.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_held_to_the_rules_pipelines_and_kms_keys() {
    let moto = Moto::shared();
    let (arn, other) = (good_key(moto).await, good_key(moto).await);
    let id = "2000000000024-keypol";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, None).await], KeyMd5Reading::Plaintext).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let rule = format!(
        "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"ConnectPipeline\"]\npipelines = [\"{id}\"]\nkms_keys = [\"{arn}\"]\n"
    );
    std::fs::write(&policy, rule).unwrap();
    let broker = broker_with(moto, &et, |config| {
        config.policy.allow_all = false;
        config.policy.file = Some(policy.clone());
    })
    .await;
    let mut client = broker.client().await;
    let request = |id: &str, arn: &str| pb::ConnectPipelineRequest {
        pipeline_id: id.into(),
        kms_key_arn: arn.into(),
        apply: true,
    };

    let err = client.connect_pipeline(request(id, &other)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(&format!("may not use KMS key {other}")), "{}", err.message());
    let err = client.connect_pipeline(request("2000000000025-keypol", &arn)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("may not use pipeline 2000000000025-keypol"), "{}", err.message());
    // Nothing was changed by the refusals; the granted key connects.
    assert!(et.pipeline_updates().is_empty());
    let done = client.connect_pipeline(request(id, &arn)).await.unwrap().into_inner();
    assert!(done.applied && done.check.unwrap().ready);
}
