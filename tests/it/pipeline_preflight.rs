//! The pipeline preflight through real gRPC calls: `CheckPipeline` reads
//! pipelines from the suite's Elastic Transcoder endpoint (or the
//! configuration's table) and judges each requirement against moto's KMS,
//! S3 and STS. `ConnectPipeline` is in `pipeline_connect`, which shares
//! this module's set-up.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use keybroker::app::config::Config;
use keybroker::app::server::Peers;
use keybroker::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::et::{DEFAULT_ROLE, EtEndpoint, KeyMd5Reading, PipelineFixture};
use crate::support::moto::Moto;
use crate::support::preflight::{BROKER_USER, allow, bucket, key, kms_in, s3};

/// Disables a key (moto's DisableKey takes the key id, not the ARN).
pub(crate) async fn disable(moto: &Moto, arn: &str) {
    let id = arn.rsplit('/').next().unwrap();
    kms_in(moto, "us-east-1").disable_key().key_id(id).send().await.unwrap();
}

/// A key the pipeline's role may decrypt with and the broker encrypt with.
pub(crate) async fn good_key(moto: &Moto) -> String {
    let statements = vec![
        allow(DEFAULT_ROLE, &["kms:Decrypt"]),
        allow(BROKER_USER, &["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]),
    ];
    key(moto, "us-east-1", Some(statements)).await
}

pub(crate) async fn fixture(moto: &Moto, id: &str, key: Option<&str>) -> PipelineFixture {
    let mut pipeline = PipelineFixture::new(id, key);
    pipeline.input_bucket = bucket(moto, "us-east-1").await;
    pipeline.output_bucket = bucket(moto, "us-east-1").await;
    pipeline
}

/// A broker on moto's KMS (with the preflight's KMS, S3 and STS clients)
/// that reads pipelines from `et`.
pub(crate) async fn broker(moto: &Moto, et: &EtEndpoint) -> TestBroker {
    broker_with(moto, et, |_| {}).await
}

/// [`broker`], its configuration changed by `adjust` first.
pub(crate) async fn broker_with(moto: &Moto, et: &EtEndpoint, adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let default_key = moto.create_key().await;
    let mut config = aws_config(&default_key);
    adjust(&mut config);
    let kms = aws_kms(moto, &config).await;
    let sdk = moto.sdk_config();
    let peers =
        Peers { kms: Some(kms), et: Some(et.sdk_client(&sdk)), s3: Some(s3(moto)), aws: Some(sdk), mediaconvert: None };
    TestBroker::start_with(config, peers).await
}

/// The outcome, detail and fix of requirement `name`.
pub(crate) fn requirement<'a>(check: &'a pb::CheckPipelineResponse, name: &str) -> (&'static str, &'a str, &'a str) {
    crate::support::preflight::requirement(&check.requirements, name)
}

pub(crate) async fn check(broker: &TestBroker, id: &str) -> pb::CheckPipelineResponse {
    let mut client = broker.client().await;
    client.check_pipeline(pb::CheckPipelineRequest { pipeline_id: id.into() }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_well_connected_pipeline_passes_every_requirement() {
    let moto = Moto::shared();
    let arn = good_key(moto).await;
    let id = "2000000000001-prefok";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, Some(&arn)).await], KeyMd5Reading::Plaintext).await;
    let broker = broker(moto, &et).await;

    let answer = check(&broker, id).await;
    let names: Vec<&str> = answer.requirements.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["customer-managed-key", "one-region", "key-usable", "role-may-decrypt", "broker-may-encrypt", "probe"]
    );
    for r in &answer.requirements {
        assert_eq!(requirement(&answer, &r.name).0, "pass", "{}: {} (fix: {})", r.name, r.detail, r.fix);
        assert!(r.fix.is_empty(), "a pass has no fix: {}", r.fix);
    }
    assert!(answer.ready);
    assert_eq!(
        (answer.source.as_str(), answer.kms_key_arn.as_str(), answer.role.as_str()),
        ("ReadPipeline", arn.as_str(), DEFAULT_ROLE)
    );
    assert_eq!(answer.region, "us-east-1");
    assert!(
        requirement(&answer, "role-may-decrypt").1.contains("allow-kms:Decrypt"),
        "{:?}",
        requirement(&answer, "role-may-decrypt")
    );
    // Checking changed nothing.
    assert!(et.pipeline_updates().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn each_misconfiguration_is_found_by_its_requirement() {
    let moto = Moto::shared();
    let good = good_key(moto).await;

    // No key at all: ET would use the aws/s3 key.
    let no_key = fixture(moto, "2000000000002-nokeyp", None).await;
    // The AWS-managed default named outright.
    let aws_s3 = fixture(moto, "2000000000003-awss3p", Some("arn:aws:kms:us-east-1:123456789012:alias/aws/s3")).await;
    // A disabled key.
    let disabled_arn = good_key(moto).await;
    disable(moto, &disabled_arn).await;
    let disabled = fixture(moto, "2000000000004-disabl", Some(&disabled_arn)).await;
    // A key of another region.
    let far_arn = key(moto, "eu-west-1", Some(vec![allow(DEFAULT_ROLE, &["kms:Decrypt"])])).await;
    let far_key = fixture(moto, "2000000000005-farkey", Some(&far_arn)).await;
    // An input bucket of another region.
    let mut far_bucket = fixture(moto, "2000000000006-farbkt", Some(&good)).await;
    far_bucket.input_bucket = bucket(moto, "eu-west-1").await;
    // A thumbnail bucket of another region.
    let mut far_thumbs = fixture(moto, "2000000000007-farthm", Some(&good)).await;
    far_thumbs.thumbnail_bucket = Some(bucket(moto, "ap-southeast-2").await);
    // An asymmetric key.
    let rsa = kms_in(moto, "us-east-1")
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap();
    let rsa_arn = rsa.key_metadata().unwrap().arn().unwrap().to_owned();
    let asymmetric = fixture(moto, "2000000000008-asymmk", Some(&rsa_arn)).await;
    // A key whose policy names neither the role nor the broker.
    let stranger_arn =
        key(moto, "us-east-1", Some(vec![allow("arn:aws:iam::123456789012:role/Other", &["kms:*"])])).await;
    let stranger = fixture(moto, "2000000000009-strang", Some(&stranger_arn)).await;
    // The role's account root, with IAM delegation: unknown, never a pass;
    // moto's default policy delegates to the broker's account the same way.
    let root_arn = key(
        moto,
        "us-east-1",
        Some(vec![
            allow("arn:aws:iam::111122223333:root", &["kms:*"]),
            allow("arn:aws:iam::123456789012:root", &["kms:*"]),
        ]),
    )
    .await;
    let delegated = fixture(moto, "2000000000010-delegd", Some(&root_arn)).await;
    // An explicit Deny beats an Allow.
    let deny_arn = key(
        moto,
        "us-east-1",
        Some(vec![
            allow(DEFAULT_ROLE, &["kms:Decrypt"]),
            json!({ "Sid": "nobody", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*" }),
        ]),
    )
    .await;
    let denied = fixture(moto, "2000000000011-denied", Some(&deny_arn)).await;
    // A key ARN KMS does not know.
    let missing = fixture(
        moto,
        "2000000000012-missng",
        Some("arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"),
    )
    .await;

    let pipelines = vec![
        no_key, aws_s3, disabled, far_key, far_bucket, far_thumbs, asymmetric, stranger, delegated, denied, missing,
    ];
    let et = EtEndpoint::spawn(moto.kms(), pipelines, KeyMd5Reading::Plaintext).await;
    let broker = broker(moto, &et).await;

    let c = check(&broker, "2000000000002-nokeyp").await;
    let (outcome, detail, fix) = requirement(&c, "customer-managed-key");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("no AwsKmsKeyArn") && detail.contains("aws/s3"), "{detail}");
    assert_eq!(fix, "keybroker pipeline connect 2000000000002-nokeyp --kms-key ARN --apply");
    assert_eq!(requirement(&c, "probe").0, "fail");
    assert!(!c.ready);

    let c = check(&broker, "2000000000003-awss3p").await;
    let (outcome, detail, _) = requirement(&c, "customer-managed-key");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("AWS-managed"), "{detail}");

    let c = check(&broker, "2000000000004-disabl").await;
    let (outcome, detail, fix) = requirement(&c, "key-usable");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("its state is Disabled"), "{detail}");
    assert!(fix.contains("enable-key"), "{fix}");
    assert_eq!(requirement(&c, "customer-managed-key").0, "pass");

    let c = check(&broker, "2000000000005-farkey").await;
    let (outcome, detail, _) = requirement(&c, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("the KMS key: eu-west-1") && detail.contains("the pipeline: us-east-1"), "{detail}");
    // The key itself is described in its own region.
    assert_eq!(requirement(&c, "key-usable").0, "pass", "{:?}", requirement(&c, "key-usable"));

    let c = check(&broker, "2000000000006-farbkt").await;
    let (outcome, detail, _) = requirement(&c, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("the input bucket kb-preflight-") && detail.contains(": eu-west-1"), "{detail}");

    let c = check(&broker, "2000000000007-farthm").await;
    let (outcome, detail, _) = requirement(&c, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("the thumbnail bucket kb-preflight-") && detail.contains(": ap-southeast-2"), "{detail}");

    let c = check(&broker, "2000000000008-asymmk").await;
    let (outcome, detail, _) = requirement(&c, "key-usable");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("RSA_2048, not SYMMETRIC_DEFAULT"), "{detail}");

    let c = check(&broker, "2000000000009-strang").await;
    let (outcome, detail, fix) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "fail");
    assert!(detail.contains(DEFAULT_ROLE), "{detail}");
    assert!(fix.contains("pipeline connect 2000000000009-strang"), "{fix}");
    assert_eq!(requirement(&c, "broker-may-encrypt").0, "fail");

    let c = check(&broker, "2000000000010-delegd").await;
    let (outcome, detail, _) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "unknown");
    assert!(detail.contains("IAM policies"), "{detail}");
    assert_eq!(requirement(&c, "broker-may-encrypt").0, "unknown");
    assert!(!c.ready, "unknown is not ready");

    let c = check(&broker, "2000000000011-denied").await;
    let (outcome, detail, _) = requirement(&c, "role-may-decrypt");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("\"nobody\" denies"), "{detail}");

    let c = check(&broker, "2000000000012-missng").await;
    let (outcome, detail, _) = requirement(&c, "key-usable");
    assert_eq!(outcome, "fail");
    assert!(detail.contains("does not exist"), "{detail}");
    assert_eq!(requirement(&c, "probe").0, "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_ids_and_unknown_pipelines_are_refused_by_name() {
    let moto = Moto::shared();
    let et = EtEndpoint::spawn(moto.kms(), vec![], KeyMd5Reading::Plaintext).await;
    let broker = broker(moto, &et).await;
    let mut client = broker.client().await;

    let err =
        client.check_pipeline(pb::CheckPipelineRequest { pipeline_id: "not-a-pipeline".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with(r"pipeline_id: must match ^\d{13}-\w{6}$, got "), "{}", err.message());
    let err = client.check_pipeline(pb::CheckPipelineRequest::default()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "pipeline_id: required"));
    let err = client
        .check_pipeline(pb::CheckPipelineRequest { pipeline_id: "2999999999999-nosuch".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());

    let connect = |id: &str, arn: &str| pb::ConnectPipelineRequest {
        pipeline_id: id.into(),
        kms_key_arn: arn.into(),
        apply: true,
    };
    let err = client.connect_pipeline(connect("2999999999999-nosuch", "")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "kms_key_arn: required"));
    let err = client.connect_pipeline(connect("2999999999999-nosuch", "alias/media")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("kms_key_arn: must be a KMS key ARN"), "{}", err.message());
    let arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let err = client.connect_pipeline(connect("2999999999999-nosuch", arn)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert_eq!(et.pipeline_updates().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_configured_pipeline_is_checked_at_start_as_warnings_and_on_demand() {
    let moto = Moto::shared();
    let arn = good_key(moto).await;
    let id = "2000000000030-config";
    let far_bucket = bucket(moto, "eu-west-1").await;
    let table = keybroker::jobs::et::pipeline::Pipeline {
        id: id.into(),
        kms_key_arn: Some(arn.clone()),
        role: DEFAULT_ROLE.into(),
        region: Some("us-east-1".into()),
        input_bucket: Some(far_bucket.clone()),
        output_bucket: Some(bucket(moto, "us-east-1").await),
        thumbnail_bucket: None,
    };
    let default_key = moto.create_key().await;
    let mut config = aws_config(&default_key);
    config.transcoder.pipelines = vec![table];
    let kms = aws_kms(moto, &config).await;
    let sdk = moto.sdk_config();
    // No Elastic Transcoder at all: the table is the only source.
    let peers = Peers { kms: Some(kms), et: None, s3: Some(s3(moto)), aws: Some(sdk), mediaconvert: None };
    let broker = TestBroker::start_with(config, peers).await;

    // At start: a warning naming the pipeline, the requirement and the bucket.
    let warned = |logs: &str| {
        logs.lines().any(|l| {
            l.contains("WARN") && l.contains("pipeline preflight") && l.contains(id) && l.contains(&far_bucket)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !warned(&crate::support::logs::text()) {
        assert!(std::time::Instant::now() < deadline, "no start-up preflight warning for {id}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The server serves all the same.
    let answer = check(&broker, id).await;
    assert_eq!(answer.source, "configuration");
    let (outcome, detail, fix) = requirement(&answer, "one-region");
    assert_eq!(outcome, "fail");
    assert!(detail.contains(&format!("the input bucket {far_bucket}: eu-west-1")), "{detail}");
    assert!(fix.contains("[[transcoder.pipelines]]"), "{fix}");
    assert_eq!(requirement(&answer, "probe").0, "pass");

    // Connect cannot rewrite the table: a different key is refused before
    // any grant is made; the plan says where to set it.
    let other = good_key(moto).await;
    let mut client = broker.client().await;
    let request =
        |arn: &str, apply| pb::ConnectPipelineRequest { pipeline_id: id.into(), kms_key_arn: arn.into(), apply };
    let plan = client.connect_pipeline(request(&other, false)).await.unwrap().into_inner();
    assert!(plan.changes[0].detail.contains("[[transcoder.pipelines]]"), "{}", plan.changes[0].detail);
    let err = client.connect_pipeline(request(&other, true)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let grants = kms_in(moto, "us-east-1").list_grants().key_id(&other).send().await.unwrap();
    assert!(grants.grants().is_empty());
}

/// The CLI as a user runs it, against `keybroker serve` on moto with a
/// pipeline in its configuration file: the start-up warnings, `pipeline
/// check`'s report and exit status, and `pipeline connect` without and with
/// `--apply`.
#[test]
pub(crate) fn the_cli_checks_and_connects_a_pipeline() {
    use crate::support::process::serve;
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = "2000000000040-clirun";
    let (arn, input, output) = runtime.block_on(async {
        // The broker may use the key; the pipeline's role may not, yet.
        let arn = key(moto, "us-east-1", Some(vec![allow(BROKER_USER, &["kms:Encrypt", "kms:Decrypt"])])).await;
        (arn, bucket(moto, "us-east-1").await, bucket(moto, "us-east-1").await)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keybroker.toml");
    let pipeline = format!(
        "[[transcoder.pipelines]]\nid = \"{id}\"\nkms_key_arn = \"{arn}\"\nrole = \"{DEFAULT_ROLE}\"\n\
         region = \"us-east-1\"\ninput_bucket = \"{input}\"\noutput_bucket = \"{output}\"\n"
    );
    std::fs::write(&config, crate::support::preflight::serve_config(&arn, &pipeline)).unwrap();
    let server = serve(dir.path(), &["--config", config.to_str().unwrap()], &moto.env());

    let out = server.cli(&["pipeline", "check", id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed requirement exits 1:\n{stdout}");
    assert!(stdout.starts_with(&format!("pipeline {id} (from configuration)\n  kms key: {arn}\n")), "{stdout}");
    assert!(
        stdout.contains("\npass     customer-managed-key  the pipeline names the customer-managed key"),
        "{stdout}"
    );
    assert!(stdout.contains("\nfail     role-may-decrypt      neither the key policy nor a grant lets"), "{stdout}");
    assert!(stdout.contains(&format!("fix: keybroker pipeline connect {id} --kms-key ARN --apply")), "{stdout}");
    assert!(stdout.contains("\npass     probe "), "{stdout}");
    assert!(stdout.ends_with("not ready: 5 passed, 1 failed, 0 unknown\n"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pipeline {id}: 1 requirement(s) not met")), "{stderr}");
    // The same finding is a warning from the server's start-up check, which
    // runs in the background.
    let warned = |log: &str| {
        log.lines().any(|l| l.contains("pipeline preflight") && l.contains(id) && l.contains("role-may-decrypt"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !warned(&server.log_text()) {
        assert!(std::time::Instant::now() < deadline, "no start-up warning: {}", server.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let grants =
        || runtime.block_on(async { kms_in(moto, "us-east-1").list_grants().key_id(&arn).send().await.unwrap() });
    let out = server.cli(&["pipeline", "connect", id, "--kms-key", &arn]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("plan (nothing changed; run with --apply to make it):\n"), "{stdout}");
    assert!(stdout.contains("1. UpdatePipeline [already done]"), "{stdout}");
    assert!(stdout.contains("2. CreateGrant [planned]"), "{stdout}");
    assert!(grants().grants().is_empty(), "a plan made a grant");

    let out = server.cli(&["pipeline", "connect", id, "--kms-key", &arn, "--apply", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["Applied"], true);
    assert_eq!(answer["Changes"][1]["State"], "done");
    assert_eq!(answer["Check"]["Ready"], true, "{answer:#}");
    assert_eq!(grants().grants().len(), 1);

    let out = server.cli(&["pipeline", "check", id, "--json"]);
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> =
        answer["Requirements"].as_array().unwrap().iter().map(|r| r["Outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["pass"; 6]);

    // A malformed id is refused by name.
    let out = server.cli(&["pipeline", "check", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(r#"pipeline_id: must match ^\d{13}-\w{6}$, got "nope""#), "{stderr}");
}

/// The suite's ET endpoint holds UpdatePipeline to ET's model, so the
/// broker's body is checked as ET checked it: bad members are refused and
/// change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_et_endpoint_holds_update_pipeline_to_the_model() {
    let moto = Moto::shared();
    let id = "2000000000050-etmodl";
    let et = EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(id, None)], KeyMd5Reading::Plaintext).await;
    let client = et.sdk_client(&moto.sdk_config());

    let err = client.update_pipeline().id(id).role("arn:aws:iam::1:role/x").send().await.unwrap_err();
    assert!(err.into_service_error().is_validation_exception());
    let err = client.update_pipeline().id(id).input_bucket("no spaces allowed").send().await.unwrap_err();
    assert!(err.into_service_error().is_validation_exception());
    let err = client.update_pipeline().id(id).aws_kms_key_arn("k".repeat(256)).send().await.unwrap_err();
    assert!(err.into_service_error().is_validation_exception());
    let err = client.update_pipeline().id("2999999999999-nosuch").aws_kms_key_arn("a").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let rejections = et.rejections();
    assert!(rejections[0].starts_with("Role: "), "{rejections:?}");
    assert!(rejections[1].starts_with("InputBucket: "), "{rejections:?}");
    assert!(rejections[2].starts_with("AwsKmsKeyArn: length 256"), "{rejections:?}");
    assert!(et.pipeline_updates().is_empty());
    assert_eq!(et.pipeline(id).unwrap().kms_key_arn, None);

    let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
    let answer = client.update_pipeline().id(id).aws_kms_key_arn(arn).send().await.unwrap();
    assert_eq!(answer.pipeline().unwrap().aws_kms_key_arn(), Some(arn));
    let read = client.read_pipeline().id(id).send().await.unwrap();
    assert_eq!(read.pipeline().unwrap().aws_kms_key_arn(), Some(arn));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_probe_key_appears_in_no_answer_audit_record_or_log() {
    let moto = Moto::shared();
    let arn = good_key(moto).await;
    let id = "2000000000060-probek";
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(moto, id, Some(&arn)).await], KeyMd5Reading::Plaintext).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let default_key = moto.create_key().await;
    let mut config = aws_config(&default_key);
    config.audit.file = Some(audit.clone());
    let (kms, wrapped) = crate::support::kms::recording(aws_kms(moto, &config).await);
    let sdk = moto.sdk_config();
    let peers =
        Peers { kms: Some(kms), et: Some(et.sdk_client(&sdk)), s3: Some(s3(moto)), aws: Some(sdk), mediaconvert: None };
    let broker = TestBroker::start_with(config, peers).await;

    let before = wrapped.lock().unwrap().len();
    let answer = check(&broker, id).await;
    assert_eq!(requirement(&answer, "probe").0, "pass");
    let mut client = broker.client().await;
    let request = pb::ConnectPipelineRequest { pipeline_id: id.into(), kms_key_arn: arn.clone(), apply: false };
    let plan = client.connect_pipeline(request).await.unwrap().into_inner();
    let probes: Vec<Vec<u8>> = wrapped.lock().unwrap()[before..].to_vec();
    crate::support::preflight::assert_probes_nowhere(&probes, &format!("{answer:?}{plan:?}"), &audit);
}
